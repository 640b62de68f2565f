"""The rollout planner: from what a pass observed and what the spec asks, the next safe actions. Pure.

Called by ``provider.rollout.run`` once per pass of a cluster whose cloud steps are done and whose agent is
connected. It never remembers anything: what is in flight is read back from the servers (their build in
metadata ``kaas-version``, their slot and age) and the node rows (``draining_since``, Ready and since when),
so a pass that dies between two actions leaves nothing the next pass cannot pick up. The rules are Cluster
API's, on immutable nodes:

- *Control plane first, one server at a time*: when every control-plane node is Ready and there are no more
  servers than ``control_plane_count``, a replacement at the new version is created in the slot of the
  oldest outdated server; once its node is Ready the outdated one is drained and deleted. Never two
  control-plane changes at once, never fewer Ready control planes than the count (so never below quorum).
- *Then each pool with surge*: up to ``count + max_surge`` servers; outdated nodes are drained while the
  available ones (Ready, not draining) stay at least ``count - max_unavailable``.
- *Scale-down*: a pool with more servers than its count (and nothing outdated to replace) drains its
  surplus, ``nodes_to_remove`` first, then the nodes with the fewest pods.
- *Stop on failure*: a new node not Ready within ``node_ready_timeout``, or a drain that has not finished
  within ``drain_timeout``, pauses the operation with the reason; a paused operation plans nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from kaas_core.db.models import NodeRole
from kaas_core.kube_versions import same_version

CONTROL_PLANE = NodeRole.CONTROL_PLANE.value
WORKER = NodeRole.WORKER.value


@dataclass(frozen=True)
class Member:
    """One live (not ERROR, not gone) server of the cluster and what is known of its node."""

    name: str
    role: str
    pool: str | None
    slot: int | None
    attempt: int
    version: str | None  # the build it was created with; None: unknown (counts as outdated in an upgrade)
    active: bool  # the server is ACTIVE
    ready: bool  # its Kubernetes node is Ready, as the agent reports
    first_seen: datetime  # when kaas first recorded the server (its node row)
    created: int = 0  # kaas-created, ns: the order servers were made in
    draining_since: datetime | None = None
    pods: int | None = None  # evictable pods on its node, when observed


@dataclass(frozen=True)
class PoolTarget:
    name: str
    count: int
    version: str
    nodes_to_remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class RolloutPolicy:
    """How careful the rollout is; an upgrade operation's params, or the defaults for a scale-down."""

    max_surge: int = 1
    max_unavailable: int = 0
    drain_timeout: timedelta = timedelta(seconds=600)
    node_ready_timeout: timedelta = timedelta(seconds=600)
    # the timeouts count from no earlier than this: a resumed operation's clocks start again
    clocks_from: datetime | None = None


@dataclass(frozen=True)
class RolloutTarget:
    control_plane_count: int
    control_plane_version: str
    pools: tuple[PoolTarget, ...]
    # replace outdated nodes (an upgrade or its rollback is unfinished); otherwise versions are left as
    # they are and only counts are reconciled (with drains)
    replace_outdated: bool
    # the pools the upgrade covers (None: all of them), and whether it covers the control plane
    upgrade_pools: frozenset[str] | None = None
    upgrade_control_plane: bool = True
    cancel_requested: bool = False


@dataclass(frozen=True)
class NewServer:
    role: str
    pool: str | None
    slot: int | None
    attempt: int
    version: str


@dataclass
class RolloutPlan:
    create: list[NewServer] = field(default_factory=list)
    drain: list[str] = field(default_factory=list)  # start or go on draining; deleted once empty
    pause_reason: str | None = None
    waiting_for: str = ""  # what the rollout waits for when it neither acts nor is done
    done: bool = False  # nothing outdated, no surplus, nothing draining
    nodes: list[dict[str, str | None]] = field(default_factory=list)  # per-node progress

    @property
    def idle(self) -> bool:
        return not self.create and not self.drain


def plan_rollout(
    members: Iterable[Member], target: RolloutTarget, policy: RolloutPolicy, *, now: datetime
) -> RolloutPlan:
    """The actions of this pass (see the module docstring); ``done`` when the cluster is as specified."""
    live = list(members)
    plan = RolloutPlan(nodes=_progress(live, target))
    control_planes = [m for m in live if m.role == CONTROL_PLANE]
    _plan_control_plane(plan, control_planes, target, policy, now=now)
    if plan.pause_reason is not None:
        plan.create, plan.drain = [], []
        return plan
    control_plane_settled = plan.idle and not _outdated_control_planes(control_planes, target)
    if control_plane_settled or not target.replace_outdated:
        for pool in target.pools:
            workers = [m for m in live if m.role == WORKER and m.pool == pool.name]
            _plan_pool(plan, workers, pool, target, policy, now=now)
            if plan.pause_reason is not None:
                plan.create, plan.drain = [], []
                return plan
    elif not plan.waiting_for:
        plan.waiting_for = "the control plane to be replaced first"
    outdated = [m for m in live if _is_outdated(m, target)] if target.replace_outdated else []
    draining = [m for m in live if m.draining_since is not None]
    surplus = len(live) > target.control_plane_count + sum(p.count for p in target.pools)
    plan.done = plan.idle and not outdated and not draining and not surplus and not plan.waiting_for
    return plan


def wanted_version(member: Member, target: RolloutTarget) -> str | None:
    """The version the member should be at, or None when the upgrade in hand does not cover it."""
    if member.role == CONTROL_PLANE:
        return target.control_plane_version if target.upgrade_control_plane else None
    pool = next((p for p in target.pools if p.name == member.pool), None)
    if pool is None:
        return None
    if target.upgrade_pools is not None and pool.name not in target.upgrade_pools:
        return None
    return pool.version


def _is_outdated(member: Member, target: RolloutTarget) -> bool:
    wanted = wanted_version(member, target)
    return wanted is not None and not same_version(member.version, wanted)


def _outdated_control_planes(control_planes: list[Member], target: RolloutTarget) -> list[Member]:
    if not target.replace_outdated:
        return []
    return [m for m in control_planes if _is_outdated(m, target)]


def _since(moment: datetime, policy: RolloutPolicy) -> datetime:
    return moment if policy.clocks_from is None else max(moment, policy.clocks_from)


def _not_ready_too_long(member: Member, policy: RolloutPolicy, now: datetime) -> bool:
    return not member.ready and now - _since(member.first_seen, policy) > policy.node_ready_timeout


def _drain_too_long(member: Member, policy: RolloutPolicy, now: datetime) -> bool:
    if member.draining_since is None:
        return False
    return now - _since(member.draining_since, policy) > policy.drain_timeout


def _seconds(delta: timedelta) -> int:
    return int(delta.total_seconds())


def _plan_control_plane(
    plan: RolloutPlan,
    control_planes: list[Member],
    target: RolloutTarget,
    policy: RolloutPolicy,
    *,
    now: datetime,
) -> None:
    draining = [m for m in control_planes if m.draining_since is not None]
    if draining:  # the one change in hand: finish it whatever else is asked
        member = draining[0]
        if _drain_too_long(member, policy, now):
            plan.pause_reason = (
                f"control-plane node {member.name} did not drain within {_seconds(policy.drain_timeout)} s"
            )
            return
        plan.drain.append(member.name)
        return
    outdated = _outdated_control_planes(control_planes, target)
    if not outdated:
        return
    current = [m for m in control_planes if m not in outdated]
    if len(control_planes) > target.control_plane_count:
        # a replacement exists: once its node is Ready, the outdated server of its slot goes
        waiting = [m for m in current if not m.ready]
        if waiting:
            late = [m for m in waiting if _not_ready_too_long(m, policy, now)]
            if late:
                plan.pause_reason = (
                    f"control-plane node {late[0].name} did not become Ready within "
                    f"{_seconds(policy.node_ready_timeout)} s"
                )
                return
            plan.waiting_for = f"control-plane node {waiting[0].name} to become Ready"
            return
        # the replacement is up: its outdated peer goes even when cancelled (the node in hand is finished)
        slots_replaced = {m.slot for m in current}
        victim = min(outdated, key=lambda m: (m.slot not in slots_replaced, m.created, m.name))
        plan.drain.append(victim.name)
        return
    if target.cancel_requested:
        return
    not_ready = [m for m in control_planes if not m.ready]
    if not_ready:
        late = [m for m in not_ready if _not_ready_too_long(m, policy, now)]
        if late:
            plan.pause_reason = (
                f"control-plane node {late[0].name} is not Ready: the control plane is not healthy enough "
                "to replace a member"
            )
            return
        plan.waiting_for = f"control-plane node {not_ready[0].name} to become Ready"
        return
    oldest = min(outdated, key=lambda m: (m.created, m.name))
    slot = oldest.slot or 1
    attempt = 1 + max((m.attempt for m in control_planes if (m.slot or 1) == slot), default=1)
    plan.create.append(
        NewServer(
            role=CONTROL_PLANE, pool=None, slot=slot, attempt=attempt, version=target.control_plane_version
        )
    )


def _removal_order(workers: list[Member], pool: PoolTarget) -> list[Member]:
    """Which of a pool's nodes go first on a scale-down: the caller's names, then not Ready, then fewest
    pods, then the newest."""
    chosen = set(pool.nodes_to_remove)
    return sorted(
        workers,
        key=lambda m: (
            m.name not in chosen,
            m.ready,
            m.pods if m.pods is not None else 1_000_000,
            -m.created,
            m.name,
        ),
    )


def _plan_pool(
    plan: RolloutPlan,
    workers: list[Member],
    pool: PoolTarget,
    target: RolloutTarget,
    policy: RolloutPolicy,
    *,
    now: datetime,
) -> None:
    draining = [m for m in workers if m.draining_since is not None]
    for member in draining:
        if _drain_too_long(member, policy, now):
            plan.pause_reason = (
                f"node {member.name} of pool {pool.name} did not drain within "
                f"{_seconds(policy.drain_timeout)} s (a PodDisruptionBudget may refuse its evictions)"
            )
            return
        plan.drain.append(member.name)
    staying = [m for m in workers if m.draining_since is None]
    outdated = [m for m in staying if target.replace_outdated and _is_outdated(m, target)]
    current = [m for m in staying if m not in outdated]
    late = [m for m in current if _not_ready_too_long(m, policy, now) and (outdated or draining)]
    if late:
        plan.pause_reason = (
            f"node {late[0].name} of pool {pool.name} did not become Ready within "
            f"{_seconds(policy.node_ready_timeout)} s"
        )
        return
    available = [m for m in staying if m.ready]
    min_available = max(0, pool.count - policy.max_unavailable)
    if outdated:
        if target.cancel_requested:
            return
        max_total = pool.count + policy.max_surge
        missing_new = pool.count - len(current)
        surge = min(max_total - len(workers), missing_new)
        for _ in range(max(0, surge)):
            plan.create.append(
                NewServer(role=WORKER, pool=pool.name, slot=None, attempt=1, version=pool.version)
            )
        # drain outdated nodes while the available ones stay at or above the minimum; a node not Ready
        # is not available anyway, so it goes first and costs nothing
        budget = len(available) - min_available
        for member in _removal_order(outdated, pool):
            if not member.ready:
                plan.drain.append(member.name)
            elif budget > 0:
                plan.drain.append(member.name)
                budget -= 1
        if not plan.drain and not plan.create:
            plan.waiting_for = f"new nodes of pool {pool.name} to become Ready"
        return
    surplus = len(workers) - pool.count
    if surplus <= len(draining):
        return
    if target.cancel_requested:
        return
    for member in _removal_order(staying, pool)[: surplus - len(draining)]:
        plan.drain.append(member.name)


def _progress(live: list[Member], target: RolloutTarget) -> list[dict[str, str | None]]:
    """Per-node progress as the operation shows it: old, new, surging (new, not Ready yet), draining."""
    rows: list[dict[str, str | None]] = []
    for member in sorted(live, key=lambda m: (m.role != CONTROL_PLANE, m.pool or "", m.name)):
        if member.draining_since is not None:
            state = "draining"
        elif target.replace_outdated and _is_outdated(member, target):
            state = "old"
        elif not member.ready:
            state = "surging"
        else:
            state = "new"
        rows.append(
            {
                "name": member.name,
                "role": member.role,
                "pool": member.pool,
                "version": member.version,
                "state": state,
            }
        )
    return rows
