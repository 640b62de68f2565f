"""The far end of a rollout where no Kubernetes runs: a cluster double and a clock the tests move.

Used by ``tests/provider/rollout/test_rollout_pass.py`` and ``benchmarks/upgrade.py``; the real apiserver's
side of the same calls is ``provider.rollout.access`` (tested against real control planes).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from kaas_core.db.models import utcnow
from provider.rollout.observe import ClusterObservation, NodeObservation, UnschedulablePod
from provider.rollout.run import DrainResult, NodeOps


@dataclass
class ClusterDouble:
    """The cluster's side: nodes' Ready and versions as the agent would report, pods per node, evictions."""

    pods: dict[str, int] = field(default_factory=dict)
    blocked: set[str] = field(default_factory=set)  # nodes whose pods a PDB keeps
    cordoned: list[str] = field(default_factory=list)
    drained: list[str] = field(default_factory=list)
    deleted_nodes: list[str] = field(default_factory=list)
    unschedulable: list[UnschedulablePod] = field(default_factory=list)  # pods Pending for want of room

    def cordon(self, node: str) -> None:
        self.cordoned.append(node)

    def drain_step(self, node: str) -> DrainResult:
        if node in self.blocked:
            return DrainResult(remaining=1, blocked=(f"default/web-{node}",))
        self.drained.append(node)
        self.pods[node] = 0
        return DrainResult(remaining=0)

    def delete_node(self, node: str) -> None:
        self.deleted_nodes.append(node)

    def observe(self) -> ClusterObservation:
        return ClusterObservation(
            nodes=tuple(
                NodeObservation(
                    name=name,
                    ready=True,
                    ready_since=None,
                    kubelet_version="",
                    unschedulable=False,
                    workload_pods=count,
                )
                for name, count in sorted(self.pods.items())
            ),
            unschedulable_pods=tuple(self.unschedulable),
        )

    @contextmanager
    def open(self, address: str, cluster_id: str) -> Iterator[NodeOps]:
        yield self


@dataclass
class Clock:
    now: datetime = field(default_factory=utcnow)

    def __call__(self) -> datetime:
        return self.now
