"""The cluster status report: what an agent tells kaas about its cluster, on the tunnel's status streams.

Owned by the tunnel package (pure), since both ends read it: the agent fills it (``agents.status``) and
kaas's tunnel server stores it (``kaas_tunnel.store``). ``schema_version`` lets the two ends evolve apart.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

REPORT_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class NodeStatus:
    """One node as the report carries it."""

    name: str
    ready: bool
    roles: list[str] = field(default_factory=list)
    kubelet_version: str | None = None


@dataclass(frozen=True)
class ClusterStatusReport:
    """What the agent observed about its cluster at ``collected_at`` (ISO 8601, UTC)."""

    collected_at: str
    apiserver_reachable: bool
    kubernetes_version: str | None = None
    nodes_total: int | None = None  # None when the node list could not be read
    nodes_ready: int | None = None
    nodes: list[NodeStatus] = field(default_factory=list)
    error: str | None = None
    schema_version: int = REPORT_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterStatusReport:
        """The inverse of ``to_dict`` (kaas's side of the tunnel reads reports with it)."""
        nodes = [NodeStatus(**node) for node in data.get("nodes") or []]
        return cls(**{**data, "nodes": nodes})
