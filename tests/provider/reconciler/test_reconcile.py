"""The reconciler against the real OpenStackDriver and simcloud, on a real PostgreSQL.

Each test writes the rows the API would write and drives passes the way the Celery chain does.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from kaas_core.db.models import (
    Cluster,
    ClusterPhase,
    Node,
    Operation,
    OperationKind,
    OperationState,
    utcnow,
)
from provider.bootstrap.cloud_init import BootstrapError, parse_agent_config, parse_node_config
from provider.reconciler.context import ProviderContext
from provider.reconciler.due import queue_due_clusters
from provider.reconciler.plan import plan_steps
from provider.reconciler.reconcile import reconcile_cluster_once
from provider.reconciler.steps import STEP_FUNCTIONS, PassState
from provider.reconciler.sweep import clean_leaked_resources
from simcloud.state import SimCloud
from simcloud.testing import SimCloudHandle
from tests.provider.factories import PoolSpec, create_cluster, request_operation, scale_pool
from tests.provider.harness import TUNNEL_URL, cloud_inventory, run_until_settled


def load(session_factory: sessionmaker[Session], cluster_id: str) -> tuple[Cluster, Operation, list[Node]]:
    with session_factory() as session:
        cluster = session.get_one(Cluster, cluster_id)
        operation = session.scalars(
            select(Operation).where(Operation.cluster_id == cluster_id).order_by(Operation.created_at.desc())
        ).first()
        assert operation is not None
        nodes = list(session.scalars(select(Node).where(Node.cluster_id == cluster_id).order_by(Node.name)))
        return cluster, operation, nodes


def conditions(cluster: Cluster) -> dict[str, str]:
    return {c["type"]: c["status"] for c in cluster.conditions}


def test_create_converges_to_running_with_every_condition_true(
    ctx: ProviderContext, simcloud: SimCloudHandle
) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=2, labels={"tier": "web"}),))
    results = run_until_settled(ctx, created.id)
    assert results[-1].outcome == "converged"
    cluster, operation, nodes = load(ctx.session_factory, created.id)
    assert cluster.phase == ClusterPhase.RUNNING.value
    assert conditions(cluster) == {"NetworkReady": "True", "ControlPlaneReady": "True", "NodesReady": "True"}
    assert cluster.observed_generation == cluster.generation
    assert cluster.api_endpoint is not None
    assert cluster.api_endpoint.startswith("https://")
    assert operation.state == OperationState.SUCCEEDED.value
    assert operation.progress == 100
    assert operation.started_at is not None
    assert operation.finished_at is not None
    assert operation.error is None
    assert [n.role for n in nodes] == ["control-plane", "worker", "worker"]
    assert nodes[0].name == f"kaas-{created.id[:8]}-cp-1"
    assert all(n.name.startswith(f"kaas-{created.id[:8]}-workers-") for n in nodes[1:])
    assert all(n.status == "ACTIVE" and n.server_id and n.address for n in nodes)
    assert cluster.lease_owner is None
    inventory = cloud_inventory(simcloud.sim)
    assert inventory["servers"] == 3
    assert inventory["networks"] == 1
    assert inventory["routers"] == 1
    assert inventory["server_groups"] == 1
    assert "loadbalancers" not in inventory


def test_servers_boot_with_their_node_config_and_only_the_control_plane_with_the_agent_config(
    ctx: ProviderContext, simcloud: SimCloudHandle
) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=2, labels={"tier": "web"}),))
    run_until_settled(ctx, created.id)
    _, _, nodes = load(ctx.session_factory, created.id)
    user_data = {}
    for node in nodes:
        assert node.server_id is not None
        found = simcloud.sim.get_user_data(node.server_id)
        assert found is not None
        user_data[node.name] = (node.role, found)
    assert sorted(role for role, _ in user_data.values()) == ["control-plane", "worker", "worker"]
    for role, text in user_data.values():
        if role == "control-plane":
            agent = parse_agent_config(text)
            assert agent["token"] == created.agent_token
            assert agent["tunnel_url"] == TUNNEL_URL
            assert agent["cluster_id"] == created.id
        else:
            assert created.agent_token not in text
            with pytest.raises(BootstrapError, match="does not write"):
                parse_agent_config(text)
            node_config = parse_node_config(text)
            assert node_config["labels"] == {"tier": "web"}
            assert node_config["api_endpoint"] is not None


def test_highly_available_control_plane_sits_behind_a_load_balancer(
    ctx: ProviderContext, simcloud: SimCloudHandle
) -> None:
    created = create_cluster(ctx.session_factory, control_plane_count=3, pools=(PoolSpec(count=1),))
    assert run_until_settled(ctx, created.id)[-1].outcome == "converged"
    cluster, _, nodes = load(ctx.session_factory, created.id)
    assert cluster.phase == ClusterPhase.RUNNING.value
    assert [n.role for n in nodes].count("control-plane") == 3
    inventory = simcloud.sim.inventory()
    assert len(inventory["loadbalancers"]) == 1
    assert cluster.api_endpoint == f"https://{inventory['loadbalancers'][0]['vip_address']}:6443"
    assert len(inventory["members"]) == 3


def test_every_step_run_twice_creates_nothing_twice(ctx: ProviderContext, simcloud: SimCloudHandle) -> None:
    created = create_cluster(ctx.session_factory, control_plane_count=3, pools=(PoolSpec(count=2),))
    run_until_settled(ctx, created.id)
    before = cloud_inventory(simcloud.sim)
    with ctx.session_factory() as session:
        cluster = session.scalars(
            select(Cluster)
            .where(Cluster.id == created.id)
            .options(selectinload(Cluster.region), selectinload(Cluster.node_pools))
        ).one()
        state = PassState(
            cluster=cluster,
            region=cluster.region,
            pools=list(cluster.node_pools),
            driver=ctx.driver("sim"),
            tunnel_url=TUNNEL_URL,
            agent_token=None,
            server_error_retries=1,
        )
        state.refresh_servers()
        for step in plan_steps(cluster):
            assert STEP_FUNCTIONS[step](state).done, step
            assert STEP_FUNCTIONS[step](state).done, step
    assert cloud_inventory(simcloud.sim) == before
    assert run_until_settled(ctx, created.id)[-1].outcome == "converged"
    assert cloud_inventory(simcloud.sim) == before


class WorkerCrash(BaseException):
    """A worker dying mid-pass (like SystemExit): nothing is committed and the lease is not given back."""


@pytest.mark.parametrize("crash_after", ["network", "security_groups", "control_plane", "node_pools"])
def test_a_worker_that_dies_between_steps_leaves_nothing_leaked_after_the_next_pass(
    ctx: ProviderContext, simcloud: SimCloudHandle, crash_after: str
) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=2),))

    def crash(step: str) -> None:
        if step == crash_after:
            raise WorkerCrash(step)

    crashing = replace(ctx, after_step=crash)

    def run_until_the_crash() -> None:  # earlier passes may stop short of the step: servers still building
        for _ in range(100):
            reconcile_cluster_once(crashing, created.id, worker_id="doomed")
            time.sleep(0.05)

    with pytest.raises(WorkerCrash):
        run_until_the_crash()
    cluster, operation, _ = load(ctx.session_factory, created.id)
    assert cluster.lease_owner == "doomed"  # held until it expires
    assert operation.state != OperationState.SUCCEEDED.value
    assert reconcile_cluster_once(ctx, created.id, worker_id="other").outcome == "locked"

    with ctx.session_factory() as session, session.begin():  # time passes: the dead worker's lease runs out
        session.get_one(Cluster, created.id).lease_expires_at = utcnow() - timedelta(seconds=1)
    assert run_until_settled(ctx, created.id)[-1].outcome == "converged"
    inventory = cloud_inventory(simcloud.sim)
    assert inventory["servers"] == 3
    assert inventory["networks"] == 1
    assert inventory["subnets"] == 1
    assert inventory["routers"] == 1
    assert inventory["security_groups"] == 2
    assert inventory["server_groups"] == 1


def test_two_passes_on_one_cluster_never_run_at_once(ctx: ProviderContext, simcloud: SimCloudHandle) -> None:
    created = create_cluster(ctx.session_factory)
    inside = threading.Event()
    release = threading.Event()

    def hold(step: str) -> None:
        if step == "network":
            inside.set()
            release.wait(10)

    holding = replace(ctx, after_step=hold)
    outcome: list[str] = []
    first = threading.Thread(
        target=lambda: outcome.append(reconcile_cluster_once(holding, created.id, worker_id="first").outcome)
    )
    first.start()
    try:
        assert inside.wait(10)
        second = reconcile_cluster_once(ctx, created.id, worker_id="second")
        assert second.outcome == "locked"
    finally:
        release.set()
        first.join(10)
    assert outcome == ["progressing"] or outcome == ["converged"]
    assert run_until_settled(ctx, created.id, worker_id="second")[-1].outcome == "converged"


def test_scale_down_deletes_the_newest_surplus_servers(
    ctx: ProviderContext, simcloud: SimCloudHandle
) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=3),))
    run_until_settled(ctx, created.id)
    _, _, nodes = load(ctx.session_factory, created.id)
    workers = {n.server_id: n.name for n in nodes if n.role == "worker"}
    oldest = min(
        (s for s in simcloud.sim.inventory()["servers"] if s["id"] in workers), key=lambda s: s["created"]
    )
    scale_pool(ctx.session_factory, created.id, pool="workers", count=1)
    assert run_until_settled(ctx, created.id)[-1].outcome == "converged"
    cluster, operation, nodes = load(ctx.session_factory, created.id)
    assert operation.kind == OperationKind.UPDATE.value
    assert operation.state == OperationState.SUCCEEDED.value
    assert cluster.phase == ClusterPhase.RUNNING.value
    assert cluster.observed_generation == 2
    assert [n.name for n in nodes if n.role == "worker"] == [oldest["name"]]
    assert cloud_inventory(simcloud.sim)["servers"] == 2


def test_delete_leaves_nothing_in_the_cloud(ctx: ProviderContext, simcloud: SimCloudHandle) -> None:
    created = create_cluster(ctx.session_factory, control_plane_count=3, pools=(PoolSpec(count=2),))
    run_until_settled(ctx, created.id)
    request_operation(ctx.session_factory, created.id, kind=OperationKind.DELETE, phase=ClusterPhase.DELETING)
    assert run_until_settled(ctx, created.id)[-1].outcome == "deleted"
    cluster, operation, nodes = load(ctx.session_factory, created.id)
    assert cluster.phase == ClusterPhase.DELETED.value
    assert cluster.deleted_at is not None
    assert operation.state == OperationState.SUCCEEDED.value
    assert operation.progress == 100
    assert nodes == []
    assert cloud_inventory(simcloud.sim) == {}
    assert reconcile_cluster_once(ctx, created.id, worker_id="late").outcome == "skipped"


def test_quota_exceeded_shows_on_the_condition_and_recovers(
    ctx: ProviderContext, simcloud: SimCloudHandle
) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    simcloud.sim.fail_next_server_creates(1000)
    results = [reconcile_cluster_once(ctx, created.id, worker_id="w") for _ in range(3)]
    assert {r.outcome for r in results} == {"retrying"}
    assert all(
        r.requeue_after is not None and r.requeue_after <= ctx.limits.retry_max_seconds for r in results
    )
    cluster, operation, _ = load(ctx.session_factory, created.id)
    control_plane = next(c for c in cluster.conditions if c["type"] == "ControlPlaneReady")
    assert control_plane["status"] == "False"
    assert control_plane["reason"] == "CloudQuotaExceeded"
    assert "quota" in control_plane["message"].lower()
    assert conditions(cluster)["NetworkReady"] == "True"
    assert operation.state == OperationState.RUNNING.value
    assert operation.error is not None
    assert "quota" in operation.error.lower()
    assert cluster.phase == ClusterPhase.PROVISIONING.value
    assert cluster.reconcile_failures == 3

    simcloud.sim.fail_next_server_creates(0)
    assert run_until_settled(ctx, created.id)[-1].outcome == "converged"
    cluster, operation, _ = load(ctx.session_factory, created.id)
    assert operation.state == OperationState.SUCCEEDED.value
    assert operation.error is None
    assert cluster.reconcile_failures == 0
    assert conditions(cluster)["ControlPlaneReady"] == "True"


def test_an_unknown_flavor_fails_the_operation_with_a_clear_message(
    ctx: ProviderContext, simcloud: SimCloudHandle
) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(flavor="m1.gigantic"),))
    results = run_until_settled(ctx, created.id)
    assert results[-1].outcome == "failed"
    cluster, operation, _ = load(ctx.session_factory, created.id)
    assert cluster.phase == ClusterPhase.ERROR.value
    assert operation.state == OperationState.FAILED.value
    assert operation.error is not None
    assert "m1.gigantic" in operation.error
    assert cloud_inventory(simcloud.sim).get("servers", 0) == 0
    assert reconcile_cluster_once(ctx, created.id, worker_id="w").outcome == "skipped"


def test_a_server_in_error_is_replaced(ctx: ProviderContext, simcloud: SimCloudHandle) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=2),))
    simcloud.sim.error_next_servers(1, "No valid host was found")
    assert run_until_settled(ctx, created.id)[-1].outcome == "converged"
    servers = simcloud.sim.inventory()["servers"]
    assert len(servers) == 3
    assert {s["status"] for s in servers} == {"ACTIVE"}


def test_servers_that_keep_failing_fail_the_operation(ctx: ProviderContext, simcloud: SimCloudHandle) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    simcloud.sim.error_next_servers(1000, "No valid host was found")
    assert run_until_settled(ctx, created.id)[-1].outcome == "failed"
    cluster, operation, _ = load(ctx.session_factory, created.id)
    assert cluster.phase == ClusterPhase.ERROR.value
    assert operation.error is not None
    assert "ERROR 3 times" in operation.error
    assert "No valid host was found" in operation.error


def test_the_sweep_deletes_resources_of_clusters_missing_from_the_database(
    ctx: ProviderContext, simcloud: SimCloudHandle
) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    kept = create_cluster(
        ctx.session_factory, name="kept", node_cidr="10.0.1.0/24", pools=(PoolSpec(count=1),)
    )
    run_until_settled(ctx, created.id)
    run_until_settled(ctx, kept.id)
    with ctx.session_factory() as session, session.begin():
        session.delete(session.get_one(Cluster, created.id))  # the row is gone, its resources are not
    driver = ctx.driver("sim")
    for _ in range(20):
        if clean_leaked_resources(ctx.session_factory, driver) == []:
            break
    assert driver.list_tagged_cluster_ids() == {kept.id}
    assert cloud_inventory(simcloud.sim)["servers"] == 2
    assert driver.list_cluster_resources(created.id) == []


def test_a_paused_cluster_is_left_alone(ctx: ProviderContext, simcloud: SimCloudHandle) -> None:
    created = create_cluster(ctx.session_factory)
    with ctx.session_factory() as session, session.begin():
        session.get_one(Cluster, created.id).paused = True
    assert reconcile_cluster_once(ctx, created.id, worker_id="w").outcome == "skipped"
    assert cloud_inventory(simcloud.sim) == {}
    queued: list[str] = []
    queue_due_clusters(
        ctx.session_factory,
        "sim",
        enqueue=lambda cluster_id, ticket, queue: queued.append(cluster_id),
        now=utcnow() + timedelta(days=1),
        grace_seconds=10,
    )
    assert queued == []


def test_a_reconcile_of_a_cluster_that_does_not_exist_stops_instead_of_waiting_for_a_lock(
    ctx: ProviderContext,
) -> None:
    result = reconcile_cluster_once(ctx, "00000000-0000-0000-0000-000000000000", worker_id="w1")
    assert result.outcome == "skipped"
    assert result.requeue_after is None


# --- a cloud whose identity changes under the reconciler ----------------------------------------------


def router_gateways(sim: SimCloud) -> list[str]:
    return sorted(
        str((r["external_gateway_info"] or {}).get("network_id")) for r in sim.tables["routers"].values()
    )


def test_a_recreated_public_network_is_used_by_the_next_passes_without_a_worker_restart(
    ctx: ProviderContext, simcloud: SimCloudHandle
) -> None:
    """The incident: after the cloud's public network was recreated, passes failed with "404 Network ...
    could not be found" forever, because the driver kept the old id; only a restart cleared it."""
    first = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    assert run_until_settled(ctx, first.id)[-1].outcome == "converged"
    new_id = simcloud.sim.recreate_external_network("public")
    second = create_cluster(
        ctx.session_factory, name="second", node_cidr="10.0.1.0/24", pools=(PoolSpec(count=1),)
    )
    assert run_until_settled(ctx, second.id, max_passes=60)[-1].outcome == "converged"
    # the sweep's next pass of the running cluster puts its router's gateway back, on the new network
    assert reconcile_cluster_once(ctx, first.id, worker_id="w").outcome == "converged"
    assert router_gateways(simcloud.sim) == [new_id, new_id]


def test_a_token_refused_twice_after_an_identity_restart_does_not_fail_the_operation(
    ctx: ProviderContext, simcloud: SimCloudHandle
) -> None:
    """The incident: one stale-token 401 after a cloud restart failed the operation for good ("network:
    list servers ...: refused by the cloud (401)") and left the cluster in error."""
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    assert reconcile_cluster_once(ctx, created.id, worker_id="w").outcome == "progressing"
    simcloud.sim.revoke_tokens()
    simcloud.sim.refuse_next_tokens(2)  # and two new tokens refused: one more than keystoneauth retries
    assert run_until_settled(ctx, created.id)[-1].outcome == "converged"
    _, operation, _ = load(ctx.session_factory, created.id)
    assert operation.state == OperationState.SUCCEEDED.value
    assert not simcloud.sim.take_token_refusal()  # the refusals were met, and healed


def fix_clouds_yaml(simcloud: SimCloudHandle, password: str) -> None:
    """As the operator does: the region's cloud entry gets the password the cloud now wants."""
    document = yaml.safe_load(simcloud.clouds_yaml.read_text())
    document["clouds"][simcloud.cloud_name]["auth"]["password"] = password
    simcloud.clouds_yaml.write_text(yaml.safe_dump(document))


def test_refused_region_credentials_show_on_a_condition_and_heal_once_clouds_yaml_is_fixed(
    ctx: ProviderContext, simcloud: SimCloudHandle
) -> None:
    created = create_cluster(
        ctx.session_factory, region="region-one", cloud="sim", pools=(PoolSpec(count=1),)
    )
    assert reconcile_cluster_once(ctx, created.id, worker_id="w").outcome == "progressing"
    simcloud.sim.set_password("demo", "rotated")  # the cloud's operator rotated it; kaas's file is stale

    results = [reconcile_cluster_once(ctx, created.id, worker_id="w") for _ in range(3)]
    assert [r.outcome for r in results] == ["retrying"] * 3
    assert all(r.requeue_after is not None for r in results)
    cluster, operation, _ = load(ctx.session_factory, created.id)
    network = next(c for c in cluster.conditions if c["type"] == "NetworkReady")
    assert (network["status"], network["reason"]) == ("False", "CloudCredentialsRefused")
    assert "credentials of region 'region-one'" in network["message"]
    assert "credentials of cloud 'sim'" in network["message"]
    assert "an operator must fix" in network["message"]
    assert "rotated" not in network["message"]
    assert cluster.phase == ClusterPhase.PROVISIONING.value  # not error: nothing for the user to do
    assert operation.state == OperationState.RUNNING.value
    assert operation.error is not None
    assert "region-one" in operation.error

    fix_clouds_yaml(simcloud, "rotated")
    assert run_until_settled(ctx, created.id)[-1].outcome == "converged"
    cluster, operation, _ = load(ctx.session_factory, created.id)
    assert operation.state == OperationState.SUCCEEDED.value
    assert conditions(cluster)["NetworkReady"] == "True"


def test_a_deletion_with_refused_region_credentials_waits_for_the_operator_instead_of_failing(
    ctx: ProviderContext, simcloud: SimCloudHandle
) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    run_until_settled(ctx, created.id)
    request_operation(ctx.session_factory, created.id, kind=OperationKind.DELETE, phase=ClusterPhase.DELETING)
    simcloud.sim.set_password("demo", "rotated")
    assert reconcile_cluster_once(ctx, created.id, worker_id="w").outcome == "retrying"
    cluster, operation, _ = load(ctx.session_factory, created.id)
    assert cluster.phase == ClusterPhase.DELETING.value
    assert operation.state == OperationState.RUNNING.value
    assert next(c for c in cluster.conditions if c["type"] == "NetworkReady")["reason"] == (
        "CloudCredentialsRefused"
    )
    fix_clouds_yaml(simcloud, "rotated")
    assert run_until_settled(ctx, created.id)[-1].outcome == "deleted"
    assert cloud_inventory(simcloud.sim) == {}
