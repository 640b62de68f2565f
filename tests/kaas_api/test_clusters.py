"""Cluster lifecycle through the API: create, read, scale, node pools, delete, operations, secrets."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import Cluster, Node, NodeRole, Operation, as_utc, utcnow
from kaas_core.security import SecretBox, hash_token
from tests.kaas_api.conftest import SECRET_KEY, RecordingDispatcher, World, cluster_body, statements_during


def test_create_answers_202_with_cluster_and_pending_create_operation(world: World) -> None:
    response = world.call("member", "POST", "/v1/projects/alpha/clusters", cluster_body("c2"))
    assert response.status_code == 202
    body = response.json()
    assert body["cluster"]["phase"] == "provisioning"
    assert body["cluster"]["kubernetes_version"] == "1.30.2"  # the region's default
    assert body["cluster"]["node_cidr"] == "10.0.0.0/24"
    assert body["cluster"]["node_counts"] == {"desired": 2, "observed": 0, "ready": 0}
    assert body["operation"]["kind"] == "create"
    assert body["operation"]["state"] == "pending"
    assert "agent_token" not in response.text


def test_create_stores_an_agent_token_hashed_and_encrypted(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        cluster = session.get(Cluster, world.cluster_id)
        assert cluster is not None
        assert cluster.agent_token_encrypted is not None
        token = SecretBox(SECRET_KEY).decrypt(cluster.agent_token_encrypted)
    assert token.startswith("kaasagent_")
    assert cluster.agent_token_hash == hash_token(token)


def test_create_queues_a_reconcile_on_the_regions_queue(
    world: World, dispatcher: RecordingDispatcher
) -> None:
    response = world.call("member", "POST", "/v1/projects/alpha/clusters", cluster_body("c2"))
    assert response.status_code == 202
    assert dispatcher.sent == [(response.json()["cluster"]["id"], "region.r1")]


def test_get_by_name_and_by_id(world: World) -> None:
    by_name = world.call("viewer", "GET", "/v1/projects/alpha/clusters/c1").json()
    by_id = world.call("viewer", "GET", f"/v1/projects/alpha/clusters/{world.cluster_id}").json()
    assert by_name == by_id
    assert by_name["control_plane"] == {"count": 1, "flavor": "small"}


def test_scaling_bumps_generation_and_records_an_update_that_supersedes_the_create(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    response = world.call(
        "member", "PATCH", "/v1/projects/alpha/clusters/c1", {"node_pools": [{"name": "p1", "count": 4}]}
    )
    assert response.status_code == 202
    body = response.json()
    assert body["cluster"]["generation"] == 2
    assert body["cluster"]["phase"] == "updating"
    assert body["cluster"]["node_pools"][0]["count"] == 4
    assert body["operation"]["kind"] == "update"
    assert body["operation"]["target_generation"] == 2
    first = world.call("viewer", "GET", f"/v1/operations/{world.operation_id}").json()
    assert first["state"] == "failed"
    assert first["error"] == f"superseded by operation {body['operation']['id']}"


def test_finished_operations_are_not_superseded(world: World, session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        operation = session.get(Operation, world.operation_id)
        assert operation is not None
        operation.state = "succeeded"
        session.commit()
    world.call(
        "member", "PATCH", "/v1/projects/alpha/clusters/c1", {"node_pools": [{"name": "p1", "count": 2}]}
    )
    assert world.call("viewer", "GET", f"/v1/operations/{world.operation_id}").json()["state"] == "succeeded"


def test_scaling_an_unknown_pool_is_422_naming_the_item_not_a_404_of_the_cluster(world: World) -> None:
    # the cluster at the URL exists: a 404 would say it does not
    body = {"node_pools": [{"name": "p1", "count": 2}, {"name": "zz", "count": 1}]}
    response = world.call("member", "PATCH", "/v1/projects/alpha/clusters/c1", body)
    assert response.status_code == 422
    assert "zz" in response.json()["message"]
    [problem] = response.json()["detail"]
    assert (problem["field"], problem["type"], problem["allowed"]) == (
        "node_pools[1].name",
        "unknown_node_pool",
        ["p1"],
    )


def test_scaling_names_each_pool_once(world: World) -> None:
    body = {"node_pools": [{"name": "p1", "count": 2}, {"name": "p1", "count": 3}]}
    response = world.call("member", "PATCH", "/v1/projects/alpha/clusters/c1", body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "duplicate"


def test_node_pool_crud(world: World) -> None:
    base = "/v1/projects/alpha/clusters/c1/node-pools"
    created = world.call(
        "member",
        "POST",
        base,
        {
            "name": "gpu",
            "flavor": "large",
            "count": 2,
            "labels": {"example.com/gpu": "yes"},
            "taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}],
        },
    )
    assert created.status_code == 202, created.text
    assert created.json()["node_pool"]["taints"] == [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]
    assert (
        world.call("member", "POST", base, {"name": "gpu", "flavor": "large", "count": 1}).status_code == 409
    )
    assert world.call("member", "PATCH", f"{base}/gpu", {"count": 0}).json()["node_pool"]["count"] == 0
    assert [p["name"] for p in world.call("viewer", "GET", base).json()] == ["gpu", "p1"]
    deleted = world.call("member", "DELETE", f"{base}/gpu")
    assert deleted.status_code == 202
    assert world.call("viewer", "GET", f"{base}/gpu").status_code == 404
    cluster = world.call("viewer", "GET", "/v1/projects/alpha/clusters/c1").json()
    assert cluster["generation"] == 4


def test_delete_marks_deleting_and_blocks_further_changes(
    world: World, dispatcher: RecordingDispatcher
) -> None:
    response = world.call("member", "DELETE", "/v1/projects/alpha/clusters/c1")
    assert response.status_code == 202
    assert response.json()["cluster"]["phase"] == "deleting"
    assert response.json()["operation"]["kind"] == "delete"
    assert dispatcher.sent[-1] == (world.cluster_id, "region.r1")
    patch = world.call(
        "member", "PATCH", "/v1/projects/alpha/clusters/c1", {"node_pools": [{"name": "p1", "count": 2}]}
    )
    assert patch.status_code == 409


def test_nodes_and_operations_lists(world: World, session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        session.add(
            Node(
                cluster_id=world.cluster_id,
                role=NodeRole.CONTROL_PLANE.value,
                name="kaas-x-cp-0",
                flavor="small",
                status="ACTIVE",
                ready=True,
            )
        )
        session.commit()
    nodes = world.call("viewer", "GET", "/v1/projects/alpha/clusters/c1/nodes").json()
    assert [(n["name"], n["role"], n["ready"]) for n in nodes] == [("kaas-x-cp-0", "control-plane", True)]
    cluster = world.call("viewer", "GET", "/v1/projects/alpha/clusters/c1").json()
    assert cluster["node_counts"] == {"desired": 2, "observed": 1, "ready": 1}
    operations = world.call("viewer", "GET", "/v1/projects/alpha/clusters/c1/operations").json()
    assert [op["id"] for op in operations] == [world.operation_id]


def test_the_cluster_list_counts_each_clusters_nodes_in_statements_that_do_not_grow_with_the_list(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    """A project's list gave every cluster a node-count query of its own: 1,000 clusters, 1,000 statements."""

    def list_counting_reads() -> tuple[dict[str, Any], int]:
        response, seen = statements_during(
            session_factory, lambda: world.call("viewer", "GET", "/v1/projects/alpha/clusters")
        )
        assert response.status_code == 200, response.text
        # the reads (the test's savepoints and the token's last_used_at write come and go, and so does
        # the token's look-up: kaas_api.auth.principal_cache answers it after the first call)
        return {c["name"]: c["node_counts"] for c in response.json()}, sum(
            s.startswith("SELECT") and "FROM api_tokens" not in s for s in seen
        )

    _, statements_with_one = list_counting_reads()
    for name in ("c2", "c3", "c4"):
        response = world.call("member", "POST", "/v1/projects/alpha/clusters", cluster_body(name))
        assert response.status_code == 202, response.text
    with session_factory() as session:
        c3 = session.query(Cluster).filter_by(name="c3").one()
        for index, ready in enumerate((True, False, True)):
            session.add(
                Node(
                    cluster_id=c3.id,
                    role=NodeRole.WORKER.value,
                    name=f"w{index}",
                    flavor="small",
                    ready=ready,
                )
            )
        session.add(Node(cluster_id=world.cluster_id, role=NodeRole.WORKER.value, name="w", flavor="small"))
        session.commit()

    counts, statements_with_four = list_counting_reads()
    assert counts == {
        "c1": {"desired": 2, "observed": 1, "ready": 0},
        "c2": {"desired": 2, "observed": 0, "ready": 0},
        "c3": {"desired": 2, "observed": 3, "ready": 2},
        "c4": {"desired": 2, "observed": 0, "ready": 0},
    }
    for name, expected in counts.items():  # the same as each cluster's own GET says
        assert (
            world.call("viewer", "GET", f"/v1/projects/alpha/clusters/{name}").json()["node_counts"]
            == expected
        )
    assert statements_with_four == statements_with_one


def test_region_with_live_cluster_cannot_be_deleted(world: World) -> None:
    response = world.call("admin", "DELETE", "/v1/regions/r1")
    assert response.status_code == 409
    assert "live cluster" in response.json()["message"]


def test_project_with_clusters_cannot_be_deleted(world: World) -> None:
    assert world.call("owner", "DELETE", "/v1/projects/alpha").status_code == 409


def test_last_owner_cannot_leave(world: World) -> None:
    response = world.call("owner", "DELETE", "/v1/projects/alpha/members/owner")
    assert response.status_code == 409
    assert "last owner" in response.json()["message"]


def test_deleted_cluster_name_can_be_reused(world: World, session_factory: sessionmaker[Session]) -> None:
    from kaas_core.db.models import utcnow

    with session_factory() as session:
        cluster = session.get(Cluster, world.cluster_id)
        assert cluster is not None
        cluster.phase, cluster.deleted_at = "deleted", utcnow()
        session.commit()
    assert world.call("member", "POST", "/v1/projects/alpha/clusters", cluster_body("c1")).status_code == 202


def due_and_ticket(session_factory: sessionmaker[Session], cluster_id: str) -> tuple[datetime | None, int]:
    with session_factory() as session:
        cluster = session.get_one(Cluster, cluster_id)
        return as_utc(cluster.next_reconcile_at), cluster.reconcile_ticket


def test_a_created_cluster_is_due_at_once_even_if_its_message_never_leaves(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    """The row alone lets the provider's due-scan find it (the API may die between commit and send)."""
    due, ticket = due_and_ticket(session_factory, world.cluster_id)
    assert due is not None
    assert due <= utcnow()
    assert ticket == 1


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", "/v1/projects/alpha/clusters/c1", {"node_pools": [{"name": "p1", "count": 3}]}),
        ("POST", "/v1/projects/alpha/clusters/c1/node-pools", {"name": "p2", "flavor": "small", "count": 1}),
        ("DELETE", "/v1/projects/alpha/clusters/c1", None),
    ],
)
def test_every_accepted_change_makes_the_cluster_due_now_in_the_same_transaction(
    world: World, session_factory: sessionmaker[Session], method: str, path: str, body: Any
) -> None:
    with session_factory() as session, session.begin():  # as a pass leaves a converged cluster
        cluster = session.get_one(Cluster, world.cluster_id)
        cluster.next_reconcile_at = utcnow() + timedelta(minutes=5)
    _, ticket_before = due_and_ticket(session_factory, world.cluster_id)
    asked = utcnow()
    assert world.call("owner", method, path, body).status_code == 202
    due, ticket = due_and_ticket(session_factory, world.cluster_id)
    assert due is not None
    assert asked <= due <= utcnow()
    assert ticket == ticket_before + 1  # a pass running meanwhile keeps this earlier due time


def test_resuming_a_paused_cluster_makes_it_due(world: World, session_factory: sessionmaker[Session]) -> None:
    assert world.call("admin", "POST", f"/v1/admin/clusters/{world.cluster_id}/pause").status_code == 200
    with session_factory() as session, session.begin():  # the last pass saw it paused: nothing to do
        session.get_one(Cluster, world.cluster_id).next_reconcile_at = None
    asked = utcnow()
    assert world.call("admin", "POST", f"/v1/admin/clusters/{world.cluster_id}/resume").status_code == 200
    due, _ = due_and_ticket(session_factory, world.cluster_id)
    assert due is not None
    assert due >= asked


def test_a_pools_labels_and_taints_beyond_what_fits_a_nodes_user_data_are_refused(world: World) -> None:
    """Nova takes 64 KiB of user-data: the labels' and taints' characters are bounded (8 KiB each)."""
    base = "/v1/projects/alpha/clusters/c1/node-pools"
    big_labels = {f"{'p' * 60}.example.com/{'n' * 40}{i:03d}": "v" * 63 for i in range(50)}  # ~8.9 KiB
    pool = {"name": "big", "flavor": "large", "count": 1}
    response = world.call("member", "POST", base, {**pool, "labels": big_labels})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["type"] == "too_large"
    big_taints = [
        {"key": f"{'q' * 60}.example.com/{'t' * 40}{i:03d}", "value": "v" * 63, "effect": "NoSchedule"}
        for i in range(50)
    ]
    response = world.call("member", "PATCH", f"{base}/p1", {"taints": big_taints})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["type"] == "too_large"
    small = dict(list(big_labels.items())[:40])  # ~7.1 KiB: within the budget
    response = world.call("member", "POST", base, {**pool, "labels": small})
    assert response.status_code == 202, response.text
