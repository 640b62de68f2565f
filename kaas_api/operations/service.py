"""Operations: recording a requested change of a cluster, superseding older ones, reading progress.

``record_operation`` is called by ``kaas_api.clusters.service`` in the same transaction as the spec change;
the provider workers update step, progress and state. Reads are for ``kaas_api.operations.endpoints``.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from kaas_api.auth.service import Principal, project_role
from kaas_api.errors import NotFound
from kaas_api.validation import is_uuid
from kaas_core.db.models import (
    UNFINISHED_OPERATION_STATES,
    Cluster,
    Operation,
    OperationKind,
    OperationState,
    utcnow,
)

_UNFINISHED = UNFINISHED_OPERATION_STATES


def record_operation(
    session: Session, cluster: Cluster, *, kind: OperationKind, requested_by: str | None
) -> Operation:
    """A new pending operation for the cluster's current generation; older unfinished ones are superseded."""
    operation = Operation(
        cluster_id=cluster.id,
        project_id=cluster.project_id,
        kind=kind.value,
        state=OperationState.PENDING.value,
        progress=0,
        target_generation=cluster.generation,
        requested_by=requested_by,
        created_at=utcnow(),
    )
    session.add(operation)
    session.flush()
    now = utcnow()
    older = session.scalars(
        select(Operation).where(
            Operation.cluster_id == cluster.id, Operation.id != operation.id, Operation.state.in_(_UNFINISHED)
        )
    )
    for previous in older:
        previous.state = OperationState.FAILED.value
        previous.error = f"superseded by operation {operation.id}"
        previous.finished_at = now
    session.flush()
    return operation


def get_visible_operation(session: Session, principal: Principal, operation_id: str) -> Operation:
    """An operation of a project the caller is a member of (any for admins); others answer 404."""
    operation = session.get(Operation, operation_id) if is_uuid(operation_id) else None
    if operation is None or (
        not principal.is_admin and project_role(session, principal, operation.project_id) is None
    ):
        raise NotFound(f"operation {operation_id[:80]!r} not found")
    return operation


def list_cluster_operations(session: Session, cluster: Cluster, *, limit: int = 100) -> list[Operation]:
    return list(
        session.scalars(
            select(Operation)
            .where(Operation.cluster_id == cluster.id)
            .order_by(Operation.created_at.desc())
            .limit(limit)
        )
    )
