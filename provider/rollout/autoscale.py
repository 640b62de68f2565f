"""kaas's own cluster autoscaler: the count a pool with ``min_count``/``max_count`` should have now. Pure.

Called by ``provider.rollout.run`` on passes with no operation in hand, for pools that carry both bounds.
Scale up when pods are Pending as Unschedulable (the scheduler found no node with room): by the nodes their
summed requests need on the pool's flavor (each pod's own request at least fits one node), never above
``max_count`` nor the nodes the project's quota has left. Scale down by one node that has had no pod but
DaemonSets' for ``scale_down_after`` (the rollout then drains it, as any scale-down), never below
``min_count``, and never while pods are waiting. Which pool takes pending pods: the first autoscaled pool
(by name) whose labels satisfy the pod's nodeSelector.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class PendingPod:
    name: str
    namespace: str
    cpu_millis: int
    memory_bytes: int
    node_selector: Mapping[str, str]


@dataclass(frozen=True)
class AutoscaledPool:
    name: str
    count: int
    min_count: int
    max_count: int
    labels: Mapping[str, str]
    vcpus: int  # of the pool's flavor (the region's flavor list); 0 when unknown
    ram_mb: int


@dataclass(frozen=True)
class ScaleDecision:
    pool: str
    count: int
    remove: tuple[str, ...] = ()  # the node a scale-down removes
    reason: str = ""


def _fits(pod: PendingPod, pool: AutoscaledPool) -> bool:
    return all(pool.labels.get(key) == value for key, value in pod.node_selector.items())


def _nodes_needed(pods: list[PendingPod], pool: AutoscaledPool) -> int:
    if pool.vcpus <= 0 or pool.ram_mb <= 0:
        return 1
    cpu = sum(p.cpu_millis for p in pods) / (pool.vcpus * 1000)
    memory = sum(p.memory_bytes for p in pods) / (pool.ram_mb * 1024 * 1024)
    return max(1, math.ceil(max(cpu, memory)))


def decide(
    pools: list[AutoscaledPool],
    *,
    pending: list[PendingPod],
    empty_since: Mapping[str, Mapping[str, datetime | None]],
    nodes_left_in_quota: int | None,
    scale_down_after: timedelta,
    now: datetime,
) -> list[ScaleDecision]:
    """At most one change per pool. ``empty_since``: pool → node → since when it has no pod but
    DaemonSets' (None: it has some)."""
    decisions: list[ScaleDecision] = []
    quota_left = nodes_left_in_quota
    claimed: set[str] = set()
    for pool in sorted(pools, key=lambda p: p.name):
        mine = [p for p in pending if f"{p.namespace}/{p.name}" not in claimed and _fits(p, pool)]
        if mine:
            claimed.update(f"{p.namespace}/{p.name}" for p in mine)
            room = pool.max_count - pool.count
            if quota_left is not None:
                room = min(room, quota_left)
            grow = min(room, _nodes_needed(mine, pool))
            if grow > 0:
                decisions.append(
                    ScaleDecision(
                        pool.name,
                        pool.count + grow,
                        reason=f"{len(mine)} pod(s) unschedulable: {pool.count} → {pool.count + grow} nodes",
                    )
                )
                if quota_left is not None:
                    quota_left -= grow
            continue
        if pool.count <= pool.min_count or pending:
            continue
        idle = sorted(
            (since, name)
            for name, since in empty_since.get(pool.name, {}).items()
            if since is not None and now - since >= scale_down_after
        )
        if idle:
            name = idle[0][1]
            decisions.append(
                ScaleDecision(
                    pool.name,
                    pool.count - 1,
                    remove=(name,),
                    reason=f"node {name} empty for {int(scale_down_after.total_seconds())} s or more",
                )
            )
    return decisions
