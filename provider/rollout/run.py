"""The day-2 part of a reconcile pass: read the members, plan (``provider.rollout.plan``), act, report.

Called by ``provider.reconciler.reconcile`` once the cloud steps are done and the cluster's agent is
connected (drains go through the tunnel), for every live cluster: an unfinished upgrade (or its rollback)
replaces outdated nodes; otherwise only counts are reconciled, a scale-down draining its surplus first.
Actions are bounded: a drain is one round of evictions (``NodeOps.drain_step``), never a wait; a node whose
drain is complete has its server deleted in the same pass and its Node object removed. What a pass decided
is written on the rows the reconciler commits: ``nodes.draining_since``, the operation's per-node progress,
step and, on failure, ``paused`` with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from kaas_core.db.models import (
    Cluster,
    Node,
    NodePool,
    Operation,
    OperationKind,
    OperationState,
    as_utc,
)
from provider.reconciler.naming import place_of
from provider.rollout.autoscale import AutoscaledPool, PendingPod, ScaleDecision, decide
from provider.rollout.health import HealthPolicy, HealthVerdict, judge_health
from provider.rollout.observe import ClusterObservation
from provider.rollout.plan import (
    Member,
    NewServer,
    PoolTarget,
    RolloutPlan,
    RolloutPolicy,
    RolloutTarget,
    plan_rollout,
)

logger = logging.getLogger(__name__)

VERSION_METADATA = "kaas-version"


@dataclass(frozen=True)
class DrainResult:
    """One round of evictions on a node: what is still on it, and which pods a PDB kept there."""

    remaining: int
    blocked: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return self.remaining == 0


class NodeOps(Protocol):
    """What the rollout does inside a cluster, through its tunnel (``provider.rollout.access``)."""

    def cordon(self, node: str) -> None: ...

    def drain_step(self, node: str) -> DrainResult: ...

    def delete_node(self, node: str) -> None: ...

    def observe(self) -> ClusterObservation: ...


# (the address of the tunnel server holding the agent's session, the cluster id) -> node operations
NodeOpsFactory = Callable[[str, str], AbstractContextManager[NodeOps]]


class NodeOpsError(Exception):
    """A call into the cluster that did not work; ``temporary`` when a later pass may succeed."""

    def __init__(self, message: str, *, temporary: bool) -> None:
        super().__init__(message)
        self.temporary = temporary


@dataclass(frozen=True)
class RolloutOutcome:
    done: bool
    paused: bool = False
    message: str = ""
    progress: int = 0
    health: HealthVerdict | None = None  # None: not judged (an upgrade or a paused operation in hand)


# what the steps give the rollout to create a server with (provider.reconciler.steps.create_member)
CreateServer = Callable[[NewServer], str | None]  # None: not now (the join wave's token is on its way)
DeleteServer = Callable[[str], None]
# records that self-healing replaces these nodes (an operation of kind repair, audited); the reconciler's
RecordRepair = Callable[[list[str]], None]


@dataclass(frozen=True)
class AutoscaleInputs:
    """What the autoscaler needs besides the cluster: flavors' sizes, the quota left, the idle time."""

    flavors: dict[str, tuple[int, int]]  # name → (vcpus, ram_mb), the region's list
    nodes_left_in_quota: Callable[[], int | None]
    scale_down_after: timedelta
    record: Callable[[ScaleDecision], None]  # audited by the reconciler


def policy_of(operation: Operation | None, *, defaults: RolloutPolicy) -> RolloutPolicy:
    """The operation's strategy (``params``), the defaults where it says nothing."""
    params: dict[str, Any] = dict(operation.params or {}) if operation is not None else {}

    def seconds(key: str, default: timedelta) -> timedelta:
        value = params.get(key)
        return timedelta(seconds=float(value)) if isinstance(value, int | float) else default

    def count(key: str, default: int) -> int:
        value = params.get(key)
        return value if isinstance(value, int) and value >= 0 else default

    resumed = params.get("resumed_at")
    try:
        clocks_from = as_utc(datetime.fromisoformat(resumed)) if isinstance(resumed, str) else None
    except ValueError:
        clocks_from = None
    return RolloutPolicy(
        clocks_from=clocks_from,
        max_surge=count("max_surge", defaults.max_surge),
        max_unavailable=count("max_unavailable", defaults.max_unavailable),
        drain_timeout=seconds("drain_timeout_seconds", defaults.drain_timeout),
        node_ready_timeout=seconds("node_ready_timeout_seconds", defaults.node_ready_timeout),
    )


def is_upgrade(operation: Operation | None) -> bool:
    return (
        operation is not None
        and operation.kind == OperationKind.UPGRADE.value
        and not OperationState(operation.state).finished
    )


def target_of(cluster: Cluster, pools: list[NodePool], operation: Operation | None) -> RolloutTarget:
    upgrade = is_upgrade(operation)
    params = dict(operation.params or {}) if operation is not None and upgrade else {}
    covered = params.get("pools")
    return RolloutTarget(
        control_plane_count=cluster.control_plane_count,
        control_plane_version=cluster.kubernetes_version,
        pools=tuple(
            PoolTarget(
                name=pool.name,
                count=pool.count,
                version=pool.kubernetes_version or cluster.kubernetes_version,
                nodes_to_remove=tuple(pool.nodes_to_remove or ()),
            )
            for pool in pools
        ),
        replace_outdated=upgrade,
        upgrade_pools=frozenset(covered) if isinstance(covered, list) else None,
        # kaas_core.upgrades.begin_upgrade says so; an operation without the key covers everything
        upgrade_control_plane=bool(params.get("control_plane", True)),
        cancel_requested=bool(operation is not None and operation.cancel_requested),
    )


def members_of(
    servers: list[Any], nodes: list[Node], *, reported_versions: dict[str, str], now: datetime
) -> list[Member]:
    """The live servers (``ServerInfo``, not ERROR) joined with their node rows by name."""
    rows = {node.name: node for node in nodes}
    members = []
    for server in servers:
        if server.status == "ERROR":
            continue
        place = place_of(server)
        row = rows.get(server.name)
        version = server.metadata.get(VERSION_METADATA) or reported_versions.get(server.name)
        members.append(
            Member(
                name=server.name,
                role=place.role,
                pool=place.pool,
                slot=place.slot,
                attempt=place.attempt,
                version=version.removeprefix("v") if version else None,
                active=server.status == "ACTIVE",
                ready=bool(row is not None and row.ready),
                first_seen=(as_utc(row.created_at) if row is not None else None) or now,
                created=place.created,
                draining_since=as_utc(row.draining_since) if row is not None else None,
            )
        )
    return members


def with_pods(members: list[Member], pods: dict[str, int]) -> list[Member]:
    return [replace(member, pods=pods.get(member.name, 0)) for member in members]


def progress_of(plan: RolloutPlan) -> int:
    """Percent of nodes already at their place (new and Ready); the operation shows it."""
    if not plan.nodes:
        return 0
    settled = sum(1 for row in plan.nodes if row["state"] == "new")
    return int(95 * settled / len(plan.nodes))


def pause(operation: Operation | None, reason: str, *, now: datetime) -> None:
    if operation is None or OperationState(operation.state).finished:
        return
    operation.state = OperationState.PAUSED.value
    operation.paused_reason = reason
    operation.error = reason
    operation.started_at = operation.started_at or now


def run_rollout(
    *,
    cluster: Cluster,
    pools: list[NodePool],
    nodes: list[Node],
    servers: list[Any],
    operation: Operation | None,
    node_ops: NodeOps | None,
    create_server: CreateServer,
    delete_server: DeleteServer,
    defaults: RolloutPolicy,
    health_policy: HealthPolicy,
    record_repair: RecordRepair,
    reported_versions: dict[str, str],
    now: datetime,
    autoscale: AutoscaleInputs | None = None,
) -> RolloutOutcome:
    """Plan and act once. ``node_ops`` None: no way into the cluster (``kaas up``'s stand-ins without
    add-ons), so a node to remove is deleted without a drain, as kaas did before drains existed."""
    members = members_of(servers, nodes, reported_versions=reported_versions, now=now)
    observed: list[ClusterObservation | None] = []  # the cluster read once a pass, by whoever needs it first

    def observation() -> ClusterObservation | None:
        if not observed:
            try:
                observed.append(node_ops.observe() if node_ops is not None else None)
            except NodeOpsError as exc:
                logger.warning("cluster %s: its nodes and pods not read this pass: %s", cluster.id, exc)
                observed.append(None)
        return observed[0]

    if autoscale is not None and operation is None and node_ops is not None and _autoscaled(pools):
        seen = observation()
        if seen is not None:
            _autoscale(cluster, pools, nodes, members, seen, autoscale, now=now)
    target = target_of(cluster, pools, operation)
    policy = policy_of(operation, defaults=defaults)
    if node_ops is not None and _scales_down(members, target):
        seen = observation()
        if seen is not None:  # else the removal order goes by age
            members = with_pods(members, {node.name: node.workload_pods for node in seen.nodes})
    paused = operation is not None and operation.state == OperationState.PAUSED.value
    plan = plan_rollout(members, target, policy, now=now)
    _record_nodes(operation, plan)
    if paused:
        assert operation is not None
        return RolloutOutcome(False, paused=True, message=operation.paused_reason or "paused")
    if plan.pause_reason is not None:
        pause(operation, plan.pause_reason, now=now)
        logger.warning("cluster %s: rollout paused: %s", cluster.id, plan.pause_reason)
        return RolloutOutcome(False, paused=operation is not None, message=plan.pause_reason)
    health = None
    if not is_upgrade(operation):
        health = judge_health(
            members,
            not_ready_since={node.name: as_utc(node.not_ready_since) for node in nodes},
            policy=health_policy,
            now=now,
        )
        if health.replace:
            record_repair(health.replace)
            by_name = {server.name: server for server in servers}
            for name in health.replace:
                delete_server(by_name[name].id)
                logger.warning(
                    "cluster %s: node %s NotReady too long; its server is replaced", cluster.id, name
                )
            return RolloutOutcome(False, message=health.message, health=health)
    waiting = [plan.waiting_for] if plan.waiting_for else []
    for new in plan.create:
        created = create_server(new)
        if created is None:
            waiting.append("the join wave's bootstrap token to reach the cluster")
            break
        logger.info("cluster %s: created %s at %s (%s)", cluster.id, created, new.version, new.role)
    by_name = {server.name: server for server in servers}
    rows = {node.name: node for node in nodes}
    for name in plan.drain:
        server = by_name[name]
        if node_ops is None:
            delete_server(server.id)
            continue
        row = rows.get(name)
        try:
            if row is None or row.draining_since is None:
                node_ops.cordon(name)
                if row is not None:
                    row.draining_since = now
            result = node_ops.drain_step(name)
        except NodeOpsError as exc:
            waiting.append(f"node {name} to drain ({exc})")
            continue
        if not result.complete:
            blocked = (
                f"; a PodDisruptionBudget keeps {', '.join(result.blocked[:3])}" if result.blocked else ""
            )
            waiting.append(f"node {name} to drain ({result.remaining} pods left{blocked})")
            continue
        delete_server(server.id)
        try:
            node_ops.delete_node(name)
        except NodeOpsError as exc:  # the cloud controller removes the Node of a deleted server anyway
            logger.info(
                "cluster %s: Node %s stays until the cloud controller removes it: %s", cluster.id, name, exc
            )
        logger.info("cluster %s: node %s drained and its server deleted", cluster.id, name)
    if operation is not None and operation.cancel_requested and not plan.drain and not plan.create:
        operation.state = OperationState.CANCELLED.value
        operation.finished_at = now
        operation.error = "cancelled on request; nodes are left as they are"
        return RolloutOutcome(True, message="cancelled", health=health)
    acted = bool(plan.create or plan.drain)
    message = "; ".join(waiting) if waiting else ("replacing nodes" if acted else "")
    return RolloutOutcome(plan.done and not acted, message=message, progress=progress_of(plan), health=health)


def _scales_down(members: list[Member], target: RolloutTarget) -> bool:
    for pool in target.pools:
        if sum(1 for m in members if m.pool == pool.name and m.role == "worker") > pool.count:
            return True
    return False


def _record_nodes(operation: Operation | None, plan: RolloutPlan) -> None:
    if operation is None or OperationState(operation.state).finished:
        return
    if operation.nodes != plan.nodes:
        operation.nodes = list(plan.nodes)


def _autoscaled(pools: list[NodePool]) -> bool:
    return any(pool.min_count is not None and pool.max_count is not None for pool in pools)


def _autoscale(
    cluster: Cluster,
    pools: list[NodePool],
    nodes: list[Node],
    members: list[Member],
    observation: ClusterObservation,
    inputs: AutoscaleInputs,
    *,
    now: datetime,
) -> None:
    """Update the nodes' empty clocks from the observation, then let ``autoscale.decide`` move counts."""
    observed = {node.name: node for node in observation.nodes}
    for row in nodes:
        seen = observed.get(row.name)
        empty = seen is not None and seen.workload_pods == 0 and seen.ready
        row.empty_since = (as_utc(row.empty_since) or now) if empty else None
    pool_of = {m.name: m.pool for m in members}
    empty_since: dict[str, dict[str, datetime | None]] = {}
    for row in nodes:
        pool_name = pool_of.get(row.name)
        if pool_name is not None:
            empty_since.setdefault(pool_name, {})[row.name] = as_utc(row.empty_since)
    autoscaled = [
        AutoscaledPool(
            name=pool.name,
            count=pool.count,
            min_count=pool.min_count,
            max_count=pool.max_count,
            labels=dict(pool.labels or {}),
            vcpus=inputs.flavors.get(pool.flavor, (0, 0))[0],
            ram_mb=inputs.flavors.get(pool.flavor, (0, 0))[1],
        )
        for pool in pools
        if pool.min_count is not None and pool.max_count is not None
    ]
    pending = [
        PendingPod(
            name=p.pod.name,
            namespace=p.pod.namespace,
            cpu_millis=p.cpu_millicores,
            memory_bytes=p.memory_bytes,
            node_selector=dict(p.node_selector),
        )
        for p in observation.unschedulable_pods
    ]
    quota = inputs.nodes_left_in_quota() if pending else None
    decisions = decide(
        autoscaled,
        pending=pending,
        empty_since=empty_since,
        nodes_left_in_quota=quota,
        scale_down_after=inputs.scale_down_after,
        now=now,
    )
    by_name = {pool.name: pool for pool in pools}
    for decision in decisions:
        scaled = by_name[decision.pool]
        scaled.count = decision.count
        scaled.nodes_to_remove = list(decision.remove)
        cluster.generation += 1
        inputs.record(decision)
        logger.info("cluster %s: autoscaler: pool %s: %s", cluster.id, scaled.name, decision.reason)
