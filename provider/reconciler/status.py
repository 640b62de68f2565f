"""The observed status a pass writes: conditions, phase, operation progress, and the ``nodes`` table.

Pure functions over the ORM rows the pass loaded (no queries, no commits); ``provider.reconciler.reconcile``
calls them and owns the one commit. Condition format (the API renders it as is)::

    {"type": "NetworkReady", "status": "True" | "False" | "Unknown", "reason": str, "message": str,
     "last_transition_time": ISO 8601}

``last_transition_time`` changes only when ``status`` does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kaas_core.db.models import Cluster, Node, NodePool, NodeRole, Operation, OperationState, utcnow
from provider.cloud.driver import ServerInfo

CONDITION_TYPES = (
    "NetworkReady",
    "ControlPlaneReady",
    "NodesReady",
    "NodesHealthy",
    "AgentConnected",
    "AddonsReady",
)


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool | None  # None: Unknown
    reason: str
    message: str = ""

    @property
    def status_text(self) -> str:
        return "Unknown" if self.status is None else str(self.status)


def set_conditions(cluster: Cluster, conditions: Iterable[Condition], *, now: datetime | None = None) -> None:
    """Merge ``conditions`` into the cluster's list, keeping transition times of unchanged statuses."""
    now = now or utcnow()
    current = {c["type"]: c for c in (cluster.conditions or [])}
    for condition in conditions:
        previous = current.get(condition.type)
        changed = previous is None or previous.get("status") != condition.status_text
        current[condition.type] = {
            "type": condition.type,
            "status": condition.status_text,
            "reason": condition.reason,
            "message": condition.message,
            "last_transition_time": now.isoformat()
            if changed or previous is None
            else previous.get("last_transition_time", now.isoformat()),
        }
    ordered = [current[t] for t in CONDITION_TYPES if t in current]
    ordered += [c for t, c in current.items() if t not in CONDITION_TYPES]
    if ordered != cluster.conditions:
        cluster.conditions = ordered  # a new list, so the JSON column is seen as changed


def start_operation(operation: Operation | None, *, now: datetime) -> None:
    if operation is not None and operation.state == OperationState.PENDING.value:
        operation.state = OperationState.RUNNING.value
        operation.started_at = now


def report_progress(operation: Operation | None, *, step: str, progress: int, error: str | None) -> None:
    # a paused operation keeps the step and reason it stopped at until someone resumes it
    if operation is None or OperationState(operation.state).finished or operation.state == "paused":
        return
    operation.step = step
    operation.progress = max(0, min(99, progress))  # 100 only when the operation succeeds
    operation.error = error


def finish_operation(
    operation: Operation | None, *, succeeded: bool, error: str | None, now: datetime
) -> None:
    if operation is None or OperationState(operation.state).finished:
        return
    operation.state = (OperationState.SUCCEEDED if succeeded else OperationState.FAILED).value
    if succeeded:
        operation.progress = 100
        operation.step = "done"
    operation.error = error
    operation.started_at = operation.started_at or now
    operation.finished_at = now


def sync_nodes(
    cluster: Cluster,
    nodes: list[Node],
    servers: Iterable[ServerInfo],
    pools: dict[str, NodePool],
    session_add: Any,
    session_delete: Any,
) -> None:
    """Make the cluster's node rows exactly its servers (by name): add new ones, update, remove gone ones."""
    by_name = {node.name: node for node in nodes}
    seen: set[str] = set()
    for server in servers:
        if server.status in ("DELETED", "SOFT_DELETED"):
            continue
        seen.add(server.name)
        role = server.metadata.get("kaas-role", NodeRole.WORKER.value)
        pool = pools.get(server.metadata.get("kaas-pool", ""))
        node = by_name.get(server.name)
        if node is None:
            node = Node(cluster_id=cluster.id, name=server.name, role=role)
            session_add(node)
        node.role = role
        node.node_pool_id = pool.id if pool is not None else None
        node.server_id = server.id
        node.flavor = server.metadata.get(
            "kaas-flavor", pool.flavor if pool else cluster.control_plane_flavor
        )
        node.status = server.status
        node.address = server.address
        node.kubernetes_version = server.metadata.get("kaas-version", node.kubernetes_version)
    for name, node in by_name.items():
        if name not in seen:
            session_delete(node)
