"""Upgrades through the API: the pre-flight's refusals (422 with the reason, 409 naming the operation), the
operation and desired versions an accepted upgrade writes, spec changes during an upgrade, node pools'
autoscaling bounds and nodes_to_remove, maintenance windows."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import Cluster, Node, NodePool, NodeRole, Operation, Region
from tests.kaas_api.conftest import HA, VERSIONS, RecordingDispatcher, World, finish_operations, upgrade


def refusal(response: Any) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    problem: dict[str, Any] = response.json()["detail"][0]
    return problem


# --- pre-flight refusals ------------------------------------------------------------------------------


def test_skipping_a_minor_is_refused_with_the_next_minor_named(ha: World) -> None:
    problem = refusal(upgrade(ha, "1.31.0"))
    assert (problem["field"], problem["type"]) == ("kubernetes_version", "version_skew")
    assert "skips a minor" in problem["message"]
    assert "1.30.x" in problem["message"]


def test_a_downgrade_is_refused(ha: World) -> None:
    problem = refusal(upgrade(ha, "1.28.9"))
    assert problem["type"] == "version_skew"
    assert "does not downgrade" in problem["message"]


def test_the_same_version_is_refused(ha: World) -> None:
    assert "already runs" in refusal(upgrade(ha, "1.29.6"))["message"]


def test_a_version_the_region_does_not_offer_is_refused_listing_the_offered(ha: World) -> None:
    problem = refusal(upgrade(ha, "1.30.3"))
    assert (problem["field"], problem["type"]) == ("kubernetes_version", "not_offered")
    assert "1.30.2" in problem["message"]


def test_a_single_control_plane_cluster_is_refused_and_told_why(
    ha: World, session_factory: sessionmaker[Session]
) -> None:
    finish_operations(session_factory)
    response = ha.call("member", "PATCH", "/v1/projects/alpha/clusters/c1", {"kubernetes_version": "1.31.0"})
    problem = refusal(response)
    assert problem["type"] == "single_control_plane"
    assert "without downtime" in problem["message"]
    assert "3 control-plane nodes" in problem["message"]


def test_an_unfinished_operation_answers_409_naming_it(ha: World) -> None:
    scaled = ha.call("member", "PATCH", HA, {"node_pools": [{"name": "p1", "count": 3}]})
    assert scaled.status_code == 202
    pending = scaled.json()["operation"]["id"]
    response = upgrade(ha, "1.30.2")
    assert response.status_code == 409, response.text
    assert pending in response.json()["message"]
    assert response.json()["detail"] == {"operation_id": pending}


def test_a_strategy_with_neither_surge_nor_unavailability_is_refused(ha: World) -> None:
    problem = refusal(upgrade(ha, "1.30.2", max_surge=0, max_unavailable=0))
    assert (problem["field"], problem["type"]) == ("upgrade_strategy", "out_of_range")


@pytest.mark.parametrize(
    "strategy",
    [
        {"max_surge": 11},
        {"max_unavailable": -1},
        {"drain_timeout_seconds": 29},
        {"node_ready_timeout_seconds": 86401},
    ],
)
def test_a_strategy_out_of_bounds_is_refused_by_the_schema(ha: World, strategy: dict[str, int]) -> None:
    problem = refusal(upgrade(ha, "1.30.2", **strategy))
    assert problem["field"].startswith("upgrade_strategy.")


def test_an_upgrade_with_other_changes_is_refused(ha: World) -> None:
    body = {"kubernetes_version": "1.30.2", "node_pools": [{"name": "p1", "count": 3}]}
    assert refusal(ha.call("member", "PATCH", HA, body))["type"] == "conflicting_changes"


def test_a_strategy_without_a_version_is_refused(ha: World) -> None:
    body = {"upgrade_strategy": {"max_surge": 2}, "node_pools": [{"name": "p1", "count": 3}]}
    assert refusal(ha.call("member", "PATCH", HA, body))["type"] == "required_with"


def test_an_empty_patch_is_refused(ha: World) -> None:
    assert refusal(ha.call("member", "PATCH", HA, {}))["type"] == "nothing_to_change"


def test_a_viewer_cannot_upgrade(ha: World) -> None:
    assert ha.call("viewer", "PATCH", HA, {"kubernetes_version": "1.30.2"}).status_code == 403


# --- the happy path -------------------------------------------------------------------------------------


def test_an_upgrade_writes_the_desired_versions_and_an_upgrade_operation_due_now(
    ha: World, session_factory: sessionmaker[Session], dispatcher: RecordingDispatcher
) -> None:
    response = upgrade(ha, "1.30.2", max_surge=2, drain_timeout_seconds=120)
    assert response.status_code == 202, response.text
    body = response.json()
    operation = body["operation"]
    assert (operation["kind"], operation["state"]) == ("upgrade", "pending")
    assert operation["params"] == {
        "from_version": "1.29.6",
        "to_version": "1.30.2",
        "control_plane": True,
        "pools": ["p1", "p2"],
        "pool_versions_before": {"p1": "1.29.6", "p2": "1.29.6"},
        "max_surge": 2,
        "max_unavailable": 0,
        "drain_timeout_seconds": 120,
        "node_ready_timeout_seconds": 600,
    }
    assert body["cluster"]["kubernetes_version"] == "1.30.2"
    assert [p["kubernetes_version"] for p in body["cluster"]["node_pools"]] == ["1.30.2", "1.30.2"]
    assert body["cluster"]["generation"] == 2
    assert operation["target_generation"] == 2
    assert dispatcher.sent[-1] == (body["cluster"]["id"], "region.r1")
    with session_factory() as session:
        cluster = session.get(Cluster, body["cluster"]["id"])
        assert cluster is not None
        assert cluster.next_reconcile_at is not None


def test_a_pool_upgrade_defaults_to_the_clusters_version_and_leaves_the_others(
    ha: World, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        pool = session.scalar(
            select(NodePool).where(NodePool.name == "p2", NodePool.kubernetes_version.is_(None))
        )
        cluster = session.scalar(select(Cluster).where(Cluster.name == "ha"))
        assert pool is not None
        assert cluster is not None
        pool.kubernetes_version = "1.28.9"
        session.commit()
    response = ha.call("member", "POST", f"{HA}/node-pools/p2/upgrade", {})
    assert response.status_code == 202, response.text
    params = response.json()["operation"]["params"]
    assert (params["from_version"], params["to_version"], params["pools"]) == ("1.28.9", "1.29.6", ["p2"])
    assert params["control_plane"] is False
    assert response.json()["node_pool"]["kubernetes_version"] == "1.29.6"
    cluster_view = ha.call("viewer", "GET", HA).json()
    assert cluster_view["kubernetes_version"] == "1.29.6"
    assert {p["name"]: p["kubernetes_version"] for p in cluster_view["node_pools"]} == {
        "p1": "1.29.6",
        "p2": "1.29.6",
    }


def test_a_pool_cannot_be_newer_than_the_control_plane(ha: World) -> None:
    response = ha.call("member", "POST", f"{HA}/node-pools/p1/upgrade", {"kubernetes_version": "1.29.8"})
    problem = refusal(response)
    assert problem["type"] == "version_skew"
    assert "newer than the control plane" in problem["message"]


def test_a_pool_too_far_behind_the_control_plane_is_refused_by_the_kubelet_skew(
    ha: World, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        cluster = session.scalar(select(Cluster).where(Cluster.name == "ha"))
        region = session.scalar(select(Region).where(Region.name == "r1"))
        assert cluster is not None
        assert region is not None
        cluster.kubernetes_version = "1.33.1"
        region.kubernetes_versions = [*VERSIONS, "1.33.1"]
        session.commit()
    response = ha.call("member", "POST", f"{HA}/node-pools/p1/upgrade", {"kubernetes_version": "1.29.8"})
    problem = refusal(response)
    assert problem["type"] == "version_skew"
    assert "minors behind" in problem["message"]


def test_a_pool_upgrade_of_a_pool_the_cluster_has_not_is_404(ha: World) -> None:
    assert ha.call("member", "POST", f"{HA}/node-pools/nope/upgrade", {}).status_code == 404


# --- spec changes while an upgrade is unfinished --------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", HA, {"node_pools": [{"name": "p1", "count": 3}]}),
        ("PATCH", f"{HA}/node-pools/p1", {"count": 3}),
        ("POST", f"{HA}/node-pools", {"name": "p3", "flavor": "small", "count": 1}),
        ("DELETE", f"{HA}/node-pools/p2", None),
        ("POST", f"{HA}/node-pools/p1/upgrade", {}),
        ("PATCH", HA, {"kubernetes_version": "1.30.2"}),
    ],
)
def test_spec_changes_answer_409_naming_the_unfinished_upgrade(
    ha: World, method: str, path: str, body: Any
) -> None:
    upgrade_id = upgrade(ha, "1.30.2").json()["operation"]["id"]
    response = ha.call("member", method, path, body)
    assert response.status_code == 409, response.text
    assert upgrade_id in response.json()["message"]


def test_a_paused_upgrade_still_blocks_spec_changes(
    ha: World, session_factory: sessionmaker[Session]
) -> None:
    upgrade_id = upgrade(ha, "1.30.2").json()["operation"]["id"]
    with session_factory() as session:
        operation = session.get(Operation, upgrade_id)
        assert operation is not None
        operation.state = "paused"
        session.commit()
    response = ha.call("member", "PATCH", f"{HA}/node-pools/p1", {"count": 3})
    assert response.status_code == 409


def test_a_delete_supersedes_an_unfinished_upgrade(ha: World) -> None:
    upgrade_id = upgrade(ha, "1.30.2").json()["operation"]["id"]
    assert ha.call("member", "DELETE", HA).status_code == 202
    superseded = ha.call("viewer", "GET", f"/v1/operations/{upgrade_id}").json()
    assert superseded["state"] == "failed"
    assert "superseded" in superseded["error"]


# --- node pools: autoscaling bounds and nodes_to_remove -------------------------------------------------


def test_a_pool_with_min_and_max_is_created_and_shown(ha: World) -> None:
    body = {"name": "auto", "flavor": "small", "count": 2, "min_count": 1, "max_count": 4}
    response = ha.call("member", "POST", f"{HA}/node-pools", body)
    assert response.status_code == 202, response.text
    pool = response.json()["node_pool"]
    assert (pool["min_count"], pool["max_count"]) == (1, 4)


@pytest.mark.parametrize(
    ("bounds", "rule"),
    [
        ({"min_count": 1}, "required_with"),
        ({"max_count": 4}, "required_with"),
        ({"min_count": 3, "max_count": 4}, "out_of_range"),
        ({"min_count": 0, "max_count": 1}, "out_of_range"),
    ],
)
def test_pool_bounds_come_together_and_hold_the_count(ha: World, bounds: dict[str, int], rule: str) -> None:
    body = {"name": "auto", "flavor": "small", "count": 2, **bounds}
    assert refusal(ha.call("member", "POST", f"{HA}/node-pools", body))["type"] == rule


def test_a_pools_max_count_is_counted_against_the_quota(
    ha: World, session_factory: sessionmaker[Session]
) -> None:
    # the project's default quota is 50 nodes: ha holds 6, c1 2; a pool that may grow to 43 does not fit
    body = {"name": "auto", "flavor": "small", "count": 1, "min_count": 1, "max_count": 43}
    response = ha.call("member", "POST", f"{HA}/node-pools", body)
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "quota_exceeded"
    body["max_count"] = 42
    assert ha.call("member", "POST", f"{HA}/node-pools", body).status_code == 202


def test_patching_one_bound_alone_is_refused(ha: World) -> None:
    assert (
        refusal(ha.call("member", "PATCH", f"{HA}/node-pools/p1", {"max_count": 5}))["type"]
        == "required_with"
    )


def test_patching_both_bounds_to_null_stops_autoscaling(ha: World) -> None:
    set_bounds = ha.call("member", "PATCH", f"{HA}/node-pools/p1", {"min_count": 1, "max_count": 3})
    assert set_bounds.status_code == 202
    assert ha.call("viewer", "GET", f"{HA}/node-pools/p1").json()["max_count"] == 3
    cleared = ha.call("member", "PATCH", f"{HA}/node-pools/p1", {"min_count": None, "max_count": None})
    assert cleared.status_code == 202
    assert ha.call("viewer", "GET", f"{HA}/node-pools/p1").json()["max_count"] is None


def add_nodes(session_factory: sessionmaker[Session], pool_name: str, names: list[str]) -> None:
    with session_factory() as session:
        pool = session.scalar(
            select(NodePool).join(Cluster).where(Cluster.name == "ha", NodePool.name == pool_name)
        )
        assert pool is not None
        for name in names:
            session.add(
                Node(
                    cluster_id=pool.cluster_id,
                    node_pool_id=pool.id,
                    role=NodeRole.WORKER.value,
                    name=name,
                    flavor="small",
                )
            )
        session.commit()


def test_nodes_to_remove_are_stored_with_a_lower_count(
    ha: World, session_factory: sessionmaker[Session]
) -> None:
    add_nodes(session_factory, "p1", ["ha-p1-a", "ha-p1-b"])
    body = {"count": 1, "nodes_to_remove": ["ha-p1-b"]}
    response = ha.call("member", "PATCH", f"{HA}/node-pools/p1", body)
    assert response.status_code == 202, response.text
    assert response.json()["node_pool"]["nodes_to_remove"] == ["ha-p1-b"]


@pytest.mark.parametrize(
    ("body", "rule", "field"),
    [
        ({"nodes_to_remove": ["ha-p1-a"]}, "required_with", "nodes_to_remove"),
        ({"count": 2, "nodes_to_remove": ["ha-p1-a"]}, "required_with", "nodes_to_remove"),
        ({"count": 1, "nodes_to_remove": ["ha-p1-a", "ha-p1-b"]}, "out_of_range", "nodes_to_remove"),
        ({"count": 0, "nodes_to_remove": ["ha-p1-a", "ha-p1-a"]}, "duplicate", "nodes_to_remove"),
        ({"count": 1, "nodes_to_remove": ["ha-p2-a"]}, "unknown_node", "nodes_to_remove[0]"),
        ({"count": 1, "nodes_to_remove": ["nowhere"]}, "unknown_node", "nodes_to_remove[0]"),
    ],
)
def test_nodes_to_remove_must_be_the_pools_nodes_within_the_decrease(
    ha: World, session_factory: sessionmaker[Session], body: dict[str, Any], rule: str, field: str
) -> None:
    add_nodes(session_factory, "p1", ["ha-p1-a", "ha-p1-b"])
    add_nodes(session_factory, "p2", ["ha-p2-a"])
    problem = refusal(ha.call("member", "PATCH", f"{HA}/node-pools/p1", body))
    assert (problem["type"], problem["field"]) == (rule, field)


# --- maintenance windows and the pending upgrade --------------------------------------------------------

WINDOW = {"day": "sun", "start": "02:00", "duration_minutes": 240, "time_zone": "Asia/Tokyo"}


def test_a_maintenance_window_is_stored_without_an_operation_and_its_next_window_shown(
    ha: World, dispatcher: RecordingDispatcher
) -> None:
    sent = len(dispatcher.sent)
    response = ha.call("member", "PATCH", HA, {"maintenance_window": WINDOW})
    assert response.status_code == 202, response.text
    assert response.json()["operation"] is None
    assert len(dispatcher.sent) == sent
    cluster = ha.call("viewer", "GET", HA).json()
    assert cluster["maintenance_window"] == WINDOW
    start, end = cluster["next_maintenance_window"]["start"], cluster["next_maintenance_window"]["end"]
    assert start.endswith("T17:00:00Z")  # Sunday 02:00 JST is Saturday 17:00Z
    assert end.endswith("T21:00:00Z")


def test_a_maintenance_window_is_removed_with_null(ha: World) -> None:
    ha.call("member", "PATCH", HA, {"maintenance_window": WINDOW})
    assert ha.call("member", "PATCH", HA, {"maintenance_window": None}).status_code == 202
    cluster = ha.call("viewer", "GET", HA).json()
    assert (cluster["maintenance_window"], cluster["next_maintenance_window"]) == (None, None)


def test_a_maintenance_window_may_change_during_an_upgrade(ha: World) -> None:
    upgrade(ha, "1.30.2")
    assert ha.call("member", "PATCH", HA, {"maintenance_window": WINDOW}).status_code == 202


@pytest.mark.parametrize(
    ("changes", "field", "rule"),
    [
        ({"time_zone": "Mars/Olympus"}, "maintenance_window.time_zone", "unknown_time_zone"),
        ({"day": "sunday"}, "maintenance_window.day", "literal_error"),
        ({"start": "25:00"}, "maintenance_window.start", "string_pattern_mismatch"),
        ({"duration_minutes": 30}, "maintenance_window.duration_minutes", "greater_than_equal"),
    ],
)
def test_a_maintenance_window_that_cannot_be_used_is_422(
    ha: World, changes: dict[str, Any], field: str, rule: str
) -> None:
    problem = refusal(ha.call("member", "PATCH", HA, {"maintenance_window": {**WINDOW, **changes}}))
    assert (problem["field"], problem["type"]) == (field, rule)


def test_the_pending_upgrade_is_the_newest_automatic_patch_of_the_clusters_minor(
    ha: World, session_factory: sessionmaker[Session]
) -> None:
    # r1's automatic upgrades are 1.29.8 and 1.30.9; ha runs 1.29.6, c1 1.30.2
    assert ha.call("viewer", "GET", HA).json()["pending_upgrade"] == "1.29.8"
    assert ha.call("viewer", "GET", "/v1/projects/alpha/clusters/c1").json()["pending_upgrade"] == "1.30.9"
    with session_factory() as session:
        region = session.scalar(select(Region).where(Region.name == "r1"))
        assert region is not None
        region.automatic_upgrades = ["1.29.5", "1.29.6", "1.31.0"]  # older, the same, another minor
        session.commit()
    assert ha.call("viewer", "GET", HA).json()["pending_upgrade"] is None
