"""The bulk observation of a region: one listing of the cloud, a diff per running cluster in memory, and a
pass only for the clusters that drifted; a converged region is read, never written."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import Cluster, ClusterPhase, NodePool, utcnow
from kaas_core.db.session import session_scope
from provider.cloud.driver import (
    ClusterResources,
    LoadBalancerObservation,
    RegionInventory,
    ServerInfo,
    security_group_rules,
    server_group_name,
)
from provider.reconciler.context import ProviderContext
from provider.reconciler.due import make_undated_clusters_due
from provider.reconciler.observe import Observation, RunningCluster, find_drift, observe_region
from provider.reconciler.reconcile import PassResult, next_due, reconcile_cluster_once
from simcloud.testing import SimCloudHandle
from tests.provider.factories import PoolSpec, create_cluster
from tests.provider.harness import run_until_settled

Sent = list[tuple[str, int, str]]


def observe(ctx: ProviderContext, sent: Sent) -> Observation:
    return observe_region(
        ctx.session_factory,
        "sim",
        ctx.driver("sim"),
        enqueue=lambda cluster_id, ticket, queue: sent.append((cluster_id, ticket, queue)),
        now=utcnow(),
        grace_seconds=ctx.limits.requeue_grace_seconds,
    )


def converged(ctx: ProviderContext, **spec: Any) -> str:
    created = create_cluster(ctx.session_factory, **spec)
    assert run_until_settled(ctx, created.id)[-1].outcome == "converged"
    return created.id


def repair(ctx: ProviderContext, sent: Sent) -> list[PassResult]:
    """Run the queued pass of each sent cluster, then passes until it settles, as the task chain would."""
    results = []
    for cluster_id, ticket, _queue in sent:
        results.append(reconcile_cluster_once(ctx, cluster_id, worker_id="w", ticket=ticket))
        results += run_until_settled(ctx, cluster_id)
    return results


def rows(session_factory: sessionmaker[Session]) -> list[tuple[Any, ...]]:
    with session_factory() as session:
        return [
            tuple(getattr(c, column.key) for column in Cluster.__table__.columns)
            for c in session.scalars(select(Cluster).order_by(Cluster.id))
        ]


@contextmanager
def statements(session_factory: sessionmaker[Session]) -> Iterator[list[str]]:
    """Every SQL statement run on the factory's engine while the block runs."""
    engine = session_factory.kw["bind"]
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
def ha_and_single(ctx: ProviderContext) -> tuple[str, str]:
    """A converged cluster behind a load balancer (3 control planes) and one of a single control plane."""
    ha = converged(ctx, name="ha", control_plane_count=3, node_cidr="10.1.0.0/24")
    single = converged(ctx, name="single", pools=(PoolSpec(count=2),), node_cidr="10.2.0.0/24")
    return ha, single


def test_a_converged_region_is_listed_and_nothing_is_queued_or_written(
    ctx: ProviderContext, ha_and_single: tuple[str, str]
) -> None:
    before = rows(ctx.session_factory)
    with ctx.session_factory() as session:  # converged without an agent gate: the observation's, undated
        assert session.scalars(select(Cluster.next_reconcile_at)).all() == [None, None]
    sent: Sent = []
    with statements(ctx.session_factory) as seen:
        seen_region = observe(ctx, sent)
    assert seen_region.clusters == 2
    assert seen_region.drifted == {}
    assert sent == []
    writes = [s for s in seen if s.lstrip().split()[0].upper() in {"INSERT", "UPDATE", "DELETE"}]
    assert writes == []
    assert len([s for s in seen if s.lstrip().upper().startswith("SELECT")]) == 4
    assert rows(ctx.session_factory) == before


def test_a_server_deleted_behind_kaas_back_is_found_and_repaired(
    ctx: ProviderContext, simcloud: SimCloudHandle, ha_and_single: tuple[str, str]
) -> None:
    _ha, single = ha_and_single
    victim = next(s for s in simcloud.sim.servers() if s.name.startswith(f"kaas-{single[:8]}-w"))
    assert simcloud.sim.delete_server(victim.id)
    sent: Sent = []
    seen = observe(ctx, sent)
    assert list(seen.drifted) == [single]
    assert "workers per pool" in seen.drifted[single]
    assert [(c, q) for c, _t, q in sent] == [(single, "region.sim")]
    assert repair(ctx, sent)[-1].outcome == "converged"
    assert victim.name not in {s.name for s in simcloud.sim.servers()}
    assert len([s for s in simcloud.sim.servers() if s.name.startswith(f"kaas-{single[:8]}")]) == 3
    assert observe(ctx, after := []).drifted == {}
    assert after == []


def test_a_missing_load_balancer_member_is_found_and_repaired(
    ctx: ProviderContext, ha_and_single: tuple[str, str]
) -> None:
    ha, _single = ha_and_single
    lb_api = ctx.driver("sim")._conn.load_balancer  # type: ignore[attr-defined]
    [lb] = list(lb_api.load_balancers(tags=f"kaas-cluster={ha}"))
    pool_id = lb_api.get_load_balancer(lb.id).pools[0]["id"]
    member = next(iter(lb_api.members(pool_id)))
    lb_api.delete_member(member, pool_id)
    sent: Sent = []
    seen = observe(ctx, sent)
    assert list(seen.drifted) == [ha]
    assert "members" in seen.drifted[ha] or "not ACTIVE" in seen.drifted[ha]
    assert repair(ctx, sent)[-1].outcome == "converged"
    assert len(list(lb_api.members(pool_id))) == 3
    assert observe(ctx, []).drifted == {}


def test_a_missing_router_port_is_found_and_repaired(
    ctx: ProviderContext, ha_and_single: tuple[str, str]
) -> None:
    _ha, single = ha_and_single
    net_api = ctx.driver("sim")._conn.network  # type: ignore[attr-defined]
    [router] = list(net_api.routers(tags=f"kaas-cluster={single}"))
    [subnet] = list(net_api.subnets(tags=f"kaas-cluster={single}"))
    net_api.remove_interface_from_router(router, subnet=subnet.id)
    sent: Sent = []
    seen = observe(ctx, sent)
    assert seen.drifted == {single: "network, subnet, router or router port missing"}
    assert repair(ctx, sent)[-1].outcome == "converged"
    assert list(net_api.ports(device_id=router.id, network_id=subnet.network_id))
    assert observe(ctx, []).drifted == {}


def test_a_spec_changed_without_a_due_time_is_found_and_reconciled(
    ctx: ProviderContext, simcloud: SimCloudHandle, ha_and_single: tuple[str, str]
) -> None:
    """A writer that changed the spec and left no due time (an operator's SQL): the generation says so."""
    _ha, single = ha_and_single
    with session_scope(ctx.session_factory) as session:
        session.execute(update(NodePool).where(NodePool.cluster_id == single).values(count=3))
        session.execute(update(Cluster).where(Cluster.id == single).values(generation=Cluster.generation + 1))
    sent: Sent = []
    seen = observe(ctx, sent)
    assert seen.drifted == {single: "spec changed"}
    assert repair(ctx, sent)[-1].outcome == "converged"
    assert len([s for s in simcloud.sim.servers() if s.name.startswith(f"kaas-{single[:8]}-w")]) == 3
    assert observe(ctx, []).drifted == {}


def test_a_converged_cluster_keeps_its_resync_due_time_when_the_agent_gate_is_on(
    ctx: ProviderContext,
) -> None:
    """With the gate on, the periodic pass also does what only the cluster tells (add-ons, health,
    autoscaling): the bulk observation cannot stand in for it."""
    now = utcnow()
    result = PassResult("converged")
    assert next_due(ctx.limits, result, now=now, observed_in_bulk=True) is None
    assert next_due(ctx.limits, result, now=now, observed_in_bulk=False) == now + timedelta(
        seconds=ctx.limits.resync_interval_seconds
    )


def test_the_sweeps_safety_net_leaves_running_clusters_to_the_bulk_observation(
    ctx: ProviderContext, ha_and_single: tuple[str, str]
) -> None:
    now = utcnow()
    assert make_undated_clusters_due(ctx.session_factory, now=now, running_observed_in_bulk=True) == 0
    with session_scope(ctx.session_factory) as session:
        session.execute(
            update(Cluster).where(Cluster.id == ha_and_single[0]).values(phase=ClusterPhase.UPDATING.value)
        )
    assert make_undated_clusters_due(ctx.session_factory, now=now, running_observed_in_bulk=True) == 1
    assert make_undated_clusters_due(ctx.session_factory, now=now) == 1  # the other, running


# --- find_drift alone: the inventory as the driver would build it, no cloud ------------------------------

CLUSTER_ID = "0123abcd-0000-4000-8000-000000000000"


def converged_inventory(
    *, control_planes: int = 1, workers: int = 2
) -> tuple[RunningCluster, RegionInventory]:
    spec = RunningCluster(
        id=CLUSTER_ID,
        control_plane_count=control_planes,
        node_cidr="10.0.0.0/24",
        generation=1,
        observed_generation=1,
        cloud_credential_id="cred-1",
        pools={"workers": workers},
    )
    servers = [
        ServerInfo(
            f"cp{slot}",
            f"kaas-0123abcd-cp-{slot}",
            "ACTIVE",
            "10.0.0.5",
            {"kaas-role": "control-plane", "kaas-slot": str(slot)},
        )
        for slot in range(1, control_planes + 1)
    ] + [
        ServerInfo(
            f"w{i}",
            f"kaas-0123abcd-workers-{i}",
            "ACTIVE",
            "10.0.0.9",
            {"kaas-role": "worker", "kaas-pool": "workers"},
        )
        for i in range(workers)
    ]
    resources = ClusterResources(
        servers=servers,
        network_ready=True,
        security_groups=dict(security_group_rules(CLUSTER_ID, node_cidr="10.0.0.0/24")),
        load_balancer=LoadBalancerObservation("ACTIVE", True, True, True, control_planes)
        if control_planes > 1
        else None,
    )
    inventory = RegionInventory(
        clusters={CLUSTER_ID: resources},
        credential_ids={"cred-1"},
        server_groups={server_group_name(CLUSTER_ID)},
    )
    return spec, inventory


def test_a_cluster_as_specified_has_no_drift() -> None:
    for control_planes in (1, 3):
        spec, inventory = converged_inventory(control_planes=control_planes)
        assert find_drift(spec, inventory) is None


def test_an_extra_worker_a_server_in_error_and_a_missing_rule_are_drift() -> None:
    spec, inventory = converged_inventory()
    inventory.of(CLUSTER_ID).servers.append(
        ServerInfo(
            "w9",
            "kaas-0123abcd-workers-9",
            "ACTIVE",
            None,
            {"kaas-role": "worker", "kaas-pool": "workers"},
        )
    )
    assert "workers per pool" in (find_drift(spec, inventory) or "")

    spec, inventory = converged_inventory()
    resources = inventory.of(CLUSTER_ID)
    resources.servers[0] = replace(resources.servers[0], status="ERROR")
    assert find_drift(spec, inventory) == "server kaas-0123abcd-cp-1 is ERROR"

    spec, inventory = converged_inventory()
    name = next(iter(inventory.of(CLUSTER_ID).security_groups))
    inventory.of(CLUSTER_ID).security_groups[name] = frozenset(
        list(inventory.of(CLUSTER_ID).security_groups[name])[1:]
    )
    assert find_drift(spec, inventory) == f"security group {name} or one of its rules missing"


def test_a_lost_credential_server_group_or_load_balancer_member_is_drift() -> None:
    spec, inventory = converged_inventory(control_planes=3)
    inventory.credential_ids.clear()
    assert find_drift(spec, inventory) == "cloud credential missing"

    spec, inventory = converged_inventory(control_planes=3)
    inventory.server_groups.clear()
    assert find_drift(spec, inventory) == "server group missing"

    spec, inventory = converged_inventory(control_planes=3)
    inventory.of(CLUSTER_ID).load_balancer = LoadBalancerObservation("ACTIVE", True, True, True, 2)
    assert find_drift(spec, inventory) == "load balancer has 2 members, want 3"
