"""Recording an operation: one requested change of a cluster, superseding the older unfinished ones.

Shared by the API (``kaas_api.clusters.service`` and ``kaas_api.operations``, in the transaction of the spec
change) and ``kaas_core.upgrades`` (which the provider's automatic upgrades call too). Flushes only.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kaas_core.db.models import (
    UNFINISHED_OPERATION_STATES,
    Cluster,
    Operation,
    OperationKind,
    OperationState,
    utcnow,
)


def record_operation(
    session: Session,
    cluster: Cluster,
    *,
    kind: OperationKind,
    requested_by: str | None,
    params: dict[str, Any] | None = None,
) -> Operation:
    """A new pending operation for the cluster's current generation; older unfinished ones are superseded."""
    operation = Operation(
        cluster_id=cluster.id,
        project_id=cluster.project_id,
        kind=kind.value,
        state=OperationState.PENDING.value,
        progress=0,
        target_generation=cluster.generation,
        params=dict(params or {}),
        requested_by=requested_by,
        created_at=utcnow(),
    )
    session.add(operation)
    session.flush()
    now = utcnow()
    older = session.scalars(
        select(Operation).where(
            Operation.cluster_id == cluster.id,
            Operation.id != operation.id,
            Operation.state.in_(UNFINISHED_OPERATION_STATES),
        )
    )
    for previous in older:
        previous.state = OperationState.FAILED.value
        previous.error = f"superseded by operation {operation.id}"
        previous.finished_at = now
    session.flush()
    return operation


def unfinished_operation(session: Session, cluster: Cluster) -> Operation | None:
    """The cluster's newest operation that is pending, running or paused, if any."""
    return session.scalar(
        select(Operation)
        .where(Operation.cluster_id == cluster.id, Operation.state.in_(UNFINISHED_OPERATION_STATES))
        .order_by(Operation.created_at.desc(), Operation.id)
        .limit(1)
    )
