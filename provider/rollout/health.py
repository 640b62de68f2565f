"""Self-healing, in the spirit of Cluster API's MachineHealthCheck: which unhealthy workers to replace. Pure.

Called by ``provider.rollout.run`` on passes with no upgrade in hand. A worker whose node has been NotReady
(or missing from the agent's report) for longer than ``unhealthy_after`` is replaced: its server is deleted
without a drain (its kubelet is not answering, so evictions would never finish; the pod garbage collector
reschedules its pods) and the pool's count brings a new one. At most ``max_unhealthy_percent`` of a pool
is replaced at once: when more of it is unhealthy the cause is probably not the nodes (a network, the
control plane, the cloud), so nothing is replaced and the NodesHealthy condition says why (the short
circuit). Control-plane nodes are never replaced here (left to an operator: losing quorum by a wrong
verdict costs more than waiting).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from provider.rollout.plan import WORKER, Member

NODES_HEALTHY = "NodesHealthy"


@dataclass(frozen=True)
class HealthPolicy:
    unhealthy_after: timedelta = timedelta(seconds=300)
    max_unhealthy_percent: int = 40


@dataclass
class HealthVerdict:
    replace: list[str] = field(default_factory=list)
    # pool → why its unhealthy nodes are left alone (more of it unhealthy than the policy allows)
    short_circuited: dict[str, str] = field(default_factory=dict)
    unhealthy: dict[str, list[str]] = field(default_factory=dict)  # pool → unhealthy node names

    @property
    def message(self) -> str:
        parts = [*self.short_circuited.values()]
        if self.replace:
            parts.append(f"replacing {', '.join(sorted(self.replace))} (NotReady too long)")
        return "; ".join(parts)


def allowed_unhealthy(pool_size: int, percent: int) -> int:
    """How many of a pool may be replaced at once: the percentage, rounded down, at least one."""
    return max(1, pool_size * percent // 100)


def judge_health(
    members: Iterable[Member],
    *,
    not_ready_since: dict[str, datetime | None],
    policy: HealthPolicy,
    now: datetime,
) -> HealthVerdict:
    """The workers to replace now, and the pools short-circuited (see the module docstring)."""
    verdict = HealthVerdict()
    by_pool: dict[str, list[Member]] = {}
    for member in members:
        if member.role == WORKER and member.pool is not None and member.draining_since is None:
            by_pool.setdefault(member.pool, []).append(member)
    for pool, workers in sorted(by_pool.items()):
        unhealthy = []
        for member in workers:
            since = not_ready_since.get(member.name)
            if (
                member.active
                and not member.ready
                and since is not None
                and now - since > policy.unhealthy_after
            ):
                unhealthy.append(member.name)
        if not unhealthy:
            continue
        verdict.unhealthy[pool] = sorted(unhealthy)
        limit = allowed_unhealthy(len(workers), policy.max_unhealthy_percent)
        if len(unhealthy) > limit:
            verdict.short_circuited[pool] = (
                f"{len(unhealthy)} of {len(workers)} nodes of pool {pool} are NotReady for more than "
                f"{int(policy.unhealthy_after.total_seconds())} s, more than the {limit} "
                f"({policy.max_unhealthy_percent} %) kaas replaces at once: not replacing any, the cause is "
                "probably not the nodes (network, control plane, cloud)"
            )
            continue
        verdict.replace.extend(sorted(unhealthy))
    return verdict
