"""The day-2 part of real reconcile passes on simcloud: servers made at the new version, drains first,
pauses that stop everything, cancel, scale-down with drain, self-healing with its short circuit.

The cloud is simcloud and the passes are the production code; the cluster's far end (what the agent reports
and what cordon/evict do inside the cluster) is played by ``ClusterDouble``, since no Kubernetes runs here:
the real apiserver's side of the same rollout is ``tests/e2e/test_upgrade.py``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from kaas_core.db.models import (
    AuditEvent,
    Cluster,
    NodePool,
    NodeRole,
    Operation,
    OperationKind,
    OperationState,
    Region,
)
from kaas_core.upgrades import UpgradeStrategy
from kaas_core.upgrades import begin_upgrade as start_upgrade
from provider.reconciler.context import ProviderContext
from provider.reconciler.reconcile import PassResult, reconcile_cluster_once
from provider.rollout.health import HealthPolicy
from provider.rollout.observe import PodRef, UnschedulablePod
from provider.rollout.plan import RolloutPolicy
from simcloud.testing import SimCloudHandle
from tests.provider.addons.test_addons_step import RecordingApplier, with_tunnel_address
from tests.provider.factories import PoolSpec, create_cluster
from tests.provider.reconciler.test_agent_gate import converge_cloud_side, report
from tests.provider.reconciler.test_reconcile import load
from tests.provider.rollout.doubles import Clock, ClusterDouble

OLD, NEW = "1.30.2", "1.31.0"


@pytest.fixture
def double() -> ClusterDouble:
    return ClusterDouble()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def day2(ctx: ProviderContext, double: ClusterDouble, clock: Clock) -> ProviderContext:
    return replace(
        ctx,
        require_agent=True,
        addons=RecordingApplier().open,
        node_ops=double.open,
        clock=clock,
        rollout_defaults=RolloutPolicy(
            drain_timeout=timedelta(seconds=60), node_ready_timeout=timedelta(seconds=60)
        ),
        health_policy=HealthPolicy(unhealthy_after=timedelta(seconds=60), max_unhealthy_percent=40),
    )


def servers(simcloud: SimCloudHandle, cluster_id: str) -> dict[str, dict[str, str]]:
    """Live servers of the cluster by name → metadata."""
    found = {}
    for server in simcloud.sim.tables["servers"].values():
        metadata = server.get("metadata") or {}
        if server.get("status") not in ("DELETED", "SOFT_DELETED") and cluster_id in str(server.get("tags")):
            found[server["name"]] = metadata
    return found


def all_ready(ctx: ProviderContext, cluster_id: str, *, except_: frozenset[str] = frozenset()) -> None:
    _cluster, _operation, nodes = load(ctx.session_factory, cluster_id)
    report(
        ctx.session_factory, cluster_id, connected=True, ready={n.name: n.name not in except_ for n in nodes}
    )
    with_tunnel_address(ctx, cluster_id)


def running_cluster(ctx: ProviderContext, *, control_planes: int, workers: int) -> str:
    created = create_cluster(
        ctx.session_factory, control_plane_count=control_planes, pools=(PoolSpec(count=workers),)
    )
    with ctx.session_factory.begin() as session:
        region = session.scalars(select(Region)).one()
        region.kubernetes_versions = [OLD, NEW]
    converge_cloud_side(ctx, created.id)
    all_ready(ctx, created.id)
    result = reconcile_cluster_once(ctx, created.id, worker_id="w")
    assert result.outcome == "converged", result.message
    return created.id


def begin_upgrade(
    ctx: ProviderContext,
    cluster_id: str,
    *,
    pools: list[str] | None = None,
    node_ready_timeout_seconds: int = 600,
) -> str:
    """What the API's PATCH with kubernetes_version (or a pool's upgrade) writes: kaas_core.upgrades."""
    with ctx.session_factory.begin() as session:
        cluster = session.scalars(
            select(Cluster)
            .where(Cluster.id == cluster_id)
            .options(selectinload(Cluster.region), selectinload(Cluster.node_pools))
        ).one()
        operation = start_upgrade(
            session,
            cluster,
            to_version=NEW,
            pool_names=pools,
            strategy=UpgradeStrategy(node_ready_timeout_seconds=node_ready_timeout_seconds),
            requested_by=None,
        )
        return operation.id


def first_replacement(ctx: ProviderContext, simcloud: SimCloudHandle, cluster_id: str) -> PassResult:
    """The upgrade's first passes: one that puts the new join wave's token into the cluster (no server is
    made with a token the cluster does not know yet), then one that creates the first replacement."""
    before = set(servers(simcloud, cluster_id))
    waiting = reconcile_cluster_once(ctx, cluster_id, worker_id="w")
    assert "bootstrap token" in waiting.message, waiting.message
    assert set(servers(simcloud, cluster_id)) == before
    return reconcile_cluster_once(ctx, cluster_id, worker_id="w")


def operation_of(ctx: ProviderContext, operation_id: str) -> Operation:
    with ctx.session_factory() as session:
        return session.get_one(Operation, operation_id)


def drive(ctx: ProviderContext, cluster_id: str, *, passes: int, ready_new: bool = True) -> PassResult:
    """Passes, with every server's node reported Ready after each one (as kwok would make it)."""
    result = PassResult("skipped")
    for _ in range(passes):
        result = reconcile_cluster_once(ctx, cluster_id, worker_id="w")
        if result.outcome in ("converged", "paused", "failed"):
            return result
        if ready_new:
            all_ready(ctx, cluster_id)
    return result


def test_an_upgrade_replaces_every_node_control_plane_first_draining_each_before_its_server_goes(
    day2: ProviderContext, simcloud: SimCloudHandle, double: ClusterDouble
) -> None:
    cluster_id = running_cluster(day2, control_planes=3, workers=2)
    before = servers(simcloud, cluster_id)
    assert {meta["kaas-version"] for meta in before.values()} == {OLD}
    operation_id = begin_upgrade(day2, cluster_id)

    first = first_replacement(day2, simcloud, cluster_id)
    created = set(servers(simcloud, cluster_id)) - set(before)
    assert len(created) == 1
    (new_cp,) = created
    assert "-cp-" in new_cp
    assert servers(simcloud, cluster_id)[new_cp]["kaas-version"] == NEW
    assert first.outcome == "progressing"
    progress = {row["name"]: row["state"] for row in operation_of(day2, operation_id).nodes}
    assert set(progress.values()) == {"old"}

    result = drive(day2, cluster_id, passes=60)

    assert result.outcome == "converged", result.message
    after = servers(simcloud, cluster_id)
    assert {meta["kaas-version"] for meta in after.values()} == {NEW}
    assert len(after) == 5
    assert set(double.drained) == set(before)  # every old node was drained before its server went
    assert set(double.cordoned) == set(before)
    control_plane_drains = [n for n in double.drained if "-cp-" in n]
    assert double.drained[: len(control_plane_drains)] == control_plane_drains  # control plane first
    operation = operation_of(day2, operation_id)
    assert operation.state == OperationState.SUCCEEDED.value
    assert {row["state"] for row in operation.nodes} == {"new"}


def test_a_new_node_that_never_becomes_ready_pauses_the_upgrade_and_resume_continues(
    day2: ProviderContext, simcloud: SimCloudHandle, clock: Clock
) -> None:
    cluster_id = running_cluster(day2, control_planes=3, workers=1)
    operation_id = begin_upgrade(day2, cluster_id, node_ready_timeout_seconds=60)
    first_replacement(day2, simcloud, cluster_id)
    new_cp = next(n for n, meta in servers(simcloud, cluster_id).items() if meta["kaas-version"] == NEW)
    reconcile_cluster_once(day2, cluster_id, worker_id="w")  # the node row of the new server exists
    all_ready(day2, cluster_id, except_=frozenset({new_cp}))

    clock.now += timedelta(seconds=120)
    paused = reconcile_cluster_once(day2, cluster_id, worker_id="w")

    assert paused.outcome == "paused"
    operation = operation_of(day2, operation_id)
    assert operation.state == OperationState.PAUSED.value
    assert new_cp in (operation.paused_reason or "")
    assert "Ready" in (operation.paused_reason or "")
    count = len(servers(simcloud, cluster_id))
    clock.now += timedelta(seconds=120)
    assert reconcile_cluster_once(day2, cluster_id, worker_id="w").outcome == "paused"
    assert len(servers(simcloud, cluster_id)) == count  # a paused operation replaces nothing

    with day2.session_factory.begin() as session:  # what POST /v1/operations/{id}/resume writes
        resumed = session.get_one(Operation, operation_id)
        resumed.state = OperationState.RUNNING.value
        resumed.paused_reason = None
        resumed.params = {**resumed.params, "resumed_at": clock.now.isoformat()}
    all_ready(day2, cluster_id)  # the fix: the node became Ready
    result = drive(day2, cluster_id, passes=60)

    assert result.outcome == "converged", result.message
    assert operation_of(day2, operation_id).state == OperationState.SUCCEEDED.value
    assert {meta["kaas-version"] for meta in servers(simcloud, cluster_id).values()} == {NEW}


def test_a_drain_a_pdb_blocks_past_its_timeout_pauses_and_the_node_keeps_its_server(
    day2: ProviderContext, simcloud: SimCloudHandle, double: ClusterDouble, clock: Clock
) -> None:
    cluster_id = running_cluster(day2, control_planes=1, workers=3)
    workers = sorted(n for n in servers(simcloud, cluster_id) if "-cp-" not in n)
    double.blocked.update(workers)
    with day2.session_factory.begin() as session:
        pool = session.scalars(select(NodePool).where(NodePool.cluster_id == cluster_id)).one()
        pool.count = 2
        pool.nodes_to_remove = [workers[1]]
        session.get_one(Cluster, cluster_id).generation += 1
        cluster = session.get_one(Cluster, cluster_id)
        session.add(
            Operation(
                cluster_id=cluster_id,
                project_id=cluster.project_id,
                kind=OperationKind.UPDATE.value,
                target_generation=cluster.generation,
            )
        )

    waiting = reconcile_cluster_once(day2, cluster_id, worker_id="w")
    assert waiting.outcome == "progressing"
    assert double.cordoned == [workers[1]]  # the caller's choice, cordoned first
    assert "PodDisruptionBudget" in waiting.message
    assert workers[1] in servers(simcloud, cluster_id)  # not deleted while its pods cannot leave

    clock.now += timedelta(seconds=61)
    paused = reconcile_cluster_once(day2, cluster_id, worker_id="w")

    assert paused.outcome == "paused"
    assert workers[1] in servers(simcloud, cluster_id)

    double.blocked.clear()
    with day2.session_factory.begin() as session:
        operation = session.scalars(select(Operation).where(Operation.state == "paused")).one()
        operation.state = OperationState.RUNNING.value  # what POST /v1/operations/{id}/resume writes
        operation.params = {**operation.params, "resumed_at": clock.now.isoformat()}
    result = drive(day2, cluster_id, passes=10)

    assert result.outcome == "converged", result.message
    assert workers[1] not in servers(simcloud, cluster_id)
    assert double.drained == [workers[1]]


def test_scale_down_drains_the_emptiest_node_before_deleting_its_server(
    day2: ProviderContext, simcloud: SimCloudHandle, double: ClusterDouble
) -> None:
    cluster_id = running_cluster(day2, control_planes=1, workers=3)
    workers = sorted(n for n in servers(simcloud, cluster_id) if "-cp-" not in n)
    double.pods.update({workers[0]: 4, workers[1]: 0, workers[2]: 2})
    with day2.session_factory.begin() as session:
        session.scalars(select(NodePool).where(NodePool.cluster_id == cluster_id)).one().count = 2

    result = drive(day2, cluster_id, passes=5)

    assert result.outcome == "converged", result.message
    assert double.drained == [workers[1]]
    assert double.deleted_nodes == [workers[1]]
    assert sorted(n for n in servers(simcloud, cluster_id) if "-cp-" not in n) == [workers[0], workers[2]]


def test_a_worker_not_ready_too_long_is_replaced_as_an_audited_repair(
    day2: ProviderContext, simcloud: SimCloudHandle, clock: Clock
) -> None:
    cluster_id = running_cluster(day2, control_planes=1, workers=3)
    sick = sorted(n for n in servers(simcloud, cluster_id) if "-cp-" not in n)[0]
    all_ready(day2, cluster_id, except_=frozenset({sick}))
    reconcile_cluster_once(day2, cluster_id, worker_id="w")  # the node is seen NotReady: its clock starts

    clock.now += timedelta(seconds=61)
    reconcile_cluster_once(day2, cluster_id, worker_id="w")

    assert sick not in servers(simcloud, cluster_id)
    with day2.session_factory() as session:
        repair = session.scalars(select(Operation).where(Operation.kind == OperationKind.REPAIR.value)).one()
        assert repair.params == {"replaced": [sick]}
        audit = session.scalars(select(AuditEvent).where(AuditEvent.action == "cluster.nodes.repair")).one()
        assert audit.detail["replaced"] == [sick]
    result = drive(day2, cluster_id, passes=10)
    assert result.outcome == "converged", result.message
    assert len([n for n in servers(simcloud, cluster_id) if "-cp-" not in n]) == 3
    with day2.session_factory() as session:
        assert session.get_one(Operation, repair.id).state == OperationState.SUCCEEDED.value


def test_three_of_three_not_ready_short_circuits_instead_of_replacing_them_all(
    day2: ProviderContext, simcloud: SimCloudHandle, clock: Clock
) -> None:
    cluster_id = running_cluster(day2, control_planes=1, workers=3)
    workers = frozenset(n for n in servers(simcloud, cluster_id) if "-cp-" not in n)
    all_ready(day2, cluster_id, except_=workers)
    reconcile_cluster_once(day2, cluster_id, worker_id="w")

    clock.now += timedelta(seconds=61)
    reconcile_cluster_once(day2, cluster_id, worker_id="w")

    assert workers <= set(servers(simcloud, cluster_id))
    cluster, _operation, _nodes = load(day2.session_factory, cluster_id)
    healthy = {c["type"]: c for c in cluster.conditions}["NodesHealthy"]
    assert healthy["status"] == "False"
    assert healthy["reason"] == "ShortCircuited"
    assert "3 of 3" in healthy["message"]
    with day2.session_factory() as session:
        assert not session.scalars(
            select(Operation).where(Operation.kind == OperationKind.REPAIR.value)
        ).all()


def test_user_data_of_a_replacement_carries_the_new_version(
    day2: ProviderContext, simcloud: SimCloudHandle
) -> None:
    cluster_id = running_cluster(day2, control_planes=3, workers=1)
    before = set(servers(simcloud, cluster_id))
    begin_upgrade(day2, cluster_id)

    first_replacement(day2, simcloud, cluster_id)

    new_id = next(
        sid
        for sid, server in simcloud.sim.tables["servers"].items()
        if server["name"] not in before and cluster_id in str(server.get("tags"))
    )
    user_data = simcloud.sim.get_user_data(new_id)
    assert user_data is not None
    files = {f["path"]: f["content"] for f in yaml.safe_load(user_data)["write_files"]}
    node = yaml.safe_load(files["/etc/kaas/node.yaml"])
    assert node["kubernetes_version"] == NEW
    assert NodeRole.CONTROL_PLANE.value == node["role"]


def test_a_rollback_brings_the_replaced_nodes_back_to_the_old_version_the_same_careful_way(
    day2: ProviderContext, simcloud: SimCloudHandle, double: ClusterDouble
) -> None:
    cluster_id = running_cluster(day2, control_planes=3, workers=2)
    operation_id = begin_upgrade(day2, cluster_id)
    for _ in range(6):  # part of the way: the first control planes replaced
        reconcile_cluster_once(day2, cluster_id, worker_id="w")
        all_ready(day2, cluster_id)
    versions = {meta["kaas-version"] for meta in servers(simcloud, cluster_id).values()}
    assert versions == {OLD, NEW}
    replaced_before = list(double.drained)

    with day2.session_factory.begin() as session:  # what POST /v1/operations/{id}/rollback writes
        cluster = session.get_one(Cluster, cluster_id)
        cluster.kubernetes_version = OLD
        for pool in session.scalars(select(NodePool).where(NodePool.cluster_id == cluster_id)):
            pool.kubernetes_version = OLD
        operation = session.get_one(Operation, operation_id)
        operation.rolling_back = True
    result = drive(day2, cluster_id, passes=60)

    assert result.outcome == "converged", result.message
    assert {meta["kaas-version"] for meta in servers(simcloud, cluster_id).values()} == {OLD}
    assert len(servers(simcloud, cluster_id)) == 5
    rolled_back = double.drained[len(replaced_before) :]
    assert rolled_back  # the new ones were drained on the way back, never deleted undrained
    assert all("-cp-" in name for name in rolled_back)  # only what the upgrade had replaced went back
    assert operation_of(day2, operation_id).state == OperationState.SUCCEEDED.value


def test_cancel_finishes_the_node_in_hand_and_starts_no_other(
    day2: ProviderContext, simcloud: SimCloudHandle, double: ClusterDouble
) -> None:
    cluster_id = running_cluster(day2, control_planes=3, workers=1)
    operation_id = begin_upgrade(day2, cluster_id)
    first_replacement(day2, simcloud, cluster_id)
    all_ready(day2, cluster_id)
    with day2.session_factory.begin() as session:
        session.get_one(Operation, operation_id).cancel_requested = True

    result = drive(day2, cluster_id, passes=20)

    assert result.outcome == "converged", result.message
    operation = operation_of(day2, operation_id)
    assert operation.state == OperationState.CANCELLED.value
    versions = sorted(meta["kaas-version"] for meta in servers(simcloud, cluster_id).values())
    assert versions == [OLD, OLD, OLD, NEW]  # one control plane replaced (the one in hand), nothing else
    assert len(double.drained) == 1


def test_the_autoscaler_grows_a_pool_for_unschedulable_pods_and_shrinks_it_by_a_long_empty_node(
    day2: ProviderContext, simcloud: SimCloudHandle, double: ClusterDouble, clock: Clock
) -> None:
    cluster_id = running_cluster(day2, control_planes=1, workers=1)
    with day2.session_factory.begin() as session:
        pool = session.scalars(select(NodePool).where(NodePool.cluster_id == cluster_id)).one()
        pool.min_count, pool.max_count = 1, 3
    worker = next(n for n in servers(simcloud, cluster_id) if "-cp-" not in n)
    double.pods[worker] = 3
    double.unschedulable.append(
        UnschedulablePod(pod=PodRef("default", "big"), cpu_millicores=900, memory_bytes=1 << 20, message="")
    )

    reconcile_cluster_once(day2, cluster_id, worker_id="w")
    with day2.session_factory() as session:
        grown = session.scalars(select(NodePool).where(NodePool.cluster_id == cluster_id)).one()
        assert grown.count == 2  # one 1-vCPU node of m1.small holds the 900m pod
        audit = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "cluster.node_pools.autoscale")
        ).one()
        assert audit.detail["count"] == 2
    double.unschedulable.clear()
    result = drive(day2, cluster_id, passes=10)
    assert result.outcome == "converged", result.message
    workers = sorted(n for n in servers(simcloud, cluster_id) if "-cp-" not in n)
    assert len(workers) == 2
    new = next(n for n in workers if n != worker)
    double.pods[new] = 0  # the new node stays empty

    reconcile_cluster_once(day2, cluster_id, worker_id="w")  # its empty clock starts
    clock.now += timedelta(seconds=601)
    result = drive(day2, cluster_id, passes=10)

    assert result.outcome == "converged", result.message
    assert sorted(n for n in servers(simcloud, cluster_id) if "-cp-" not in n) == [worker]
    assert double.drained == [new]


def test_a_pool_upgrade_leaves_the_control_plane_as_it_is(
    day2: ProviderContext, simcloud: SimCloudHandle, double: ClusterDouble
) -> None:
    cluster_id = running_cluster(day2, control_planes=3, workers=2)
    with day2.session_factory.begin() as session:  # a pool left behind at the old version
        session.get_one(Cluster, cluster_id).kubernetes_version = NEW
        session.scalars(
            select(NodePool).where(NodePool.cluster_id == cluster_id)
        ).one().kubernetes_version = OLD
    operation_id = begin_upgrade(day2, cluster_id, pools=["workers"])

    result = drive(day2, cluster_id, passes=40)

    assert result.outcome == "converged", result.message
    by_role: dict[bool, set[str]] = {}
    for name, meta in servers(simcloud, cluster_id).items():
        by_role.setdefault("-cp-" in name, set()).add(meta["kaas-version"])
    assert by_role == {True: {OLD}, False: {NEW}}
    assert all("-cp-" not in name for name in double.drained)
    assert operation_of(day2, operation_id).state == OperationState.SUCCEEDED.value
