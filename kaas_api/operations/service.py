"""Operations: reading progress, and the controls of a running one (resume, pause, roll back, cancel).

Operations are recorded by ``kaas_core.operations.record_operation`` (in the transaction of the spec
change); the provider workers update step, progress, nodes and state. Reads and controls are for
``kaas_api.operations.endpoints``. A control changes the operation's row (and, for a rollback, the desired
versions) and asks for a pass after the commit, as a spec change does; the rollout does the rest.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from kaas_api.auth.service import Principal, project_role
from kaas_api.clusters.service import request_reconcile
from kaas_api.clusters.upgrades import api_errors
from kaas_api.dispatch import UnitOfWork
from kaas_api.errors import Conflict, Forbidden, NotFound
from kaas_api.validation import is_uuid
from kaas_core.db.models import Cluster, Operation, OperationKind, OperationState, Role, utcnow
from kaas_core.upgrades import rollback_refusal, rollback_upgrade

# the kinds a rollout runs (provider.rollout) and so can stop between two nodes
_PAUSABLE_KINDS = (OperationKind.UPGRADE.value, OperationKind.REPAIR.value)
Control = Literal["pause", "resume", "rollback", "cancel"]
CONTROLS: tuple[Control, ...] = ("pause", "resume", "rollback", "cancel")


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


def control_refusal(operation: Operation, control: Control) -> str | None:
    """Why the operation's state does not allow ``control`` (one of ``CONTROLS``) now, the 409's message;
    None when it does. The controls below refuse with it; the dashboard shows a control's button only when
    it is None."""
    state = operation.state
    if control == "resume":
        if state != OperationState.PAUSED.value:
            return f"operation {operation.id} is {state}: only a paused operation resumes"
    elif control == "pause":
        if operation.kind not in _PAUSABLE_KINDS:
            return f"operation {operation.id} is a {operation.kind}: only upgrades and repairs pause"
        if state not in (OperationState.PENDING.value, OperationState.RUNNING.value):
            return f"operation {operation.id} is {state}: only a pending or running one pauses"
    elif control == "rollback":
        refused = rollback_refusal(operation)
        if refused is not None:
            return refused.message
    elif operation.kind not in _PAUSABLE_KINDS:  # cancel: a spec change is undone by another change
        return (
            f"operation {operation.id} is a {operation.kind}: only upgrades and repairs are cancelled "
            "(change the cluster back instead)"
        )
    elif OperationState(state).finished:
        return f"operation {operation.id} is {state}: there is nothing to cancel"
    return None


def allowed_controls(operation: Operation) -> list[Control]:
    """The controls the operation's state allows now, in ``CONTROLS`` order."""
    return [control for control in CONTROLS if control_refusal(operation, control) is None]


def _controllable(session: Session, principal: Principal, operation_id: str) -> tuple[Operation, Cluster]:
    """The operation (locked) and its cluster, for a member or owner of its project or an admin; a viewer
    gets 403, anyone else 404 (as a read does)."""
    operation = get_visible_operation(session, principal, operation_id)
    role = project_role(session, principal, operation.project_id)
    if not principal.is_admin and (role is None or role.rank < Role.MEMBER.rank):
        shown = role.value if role is not None else "none"
        raise Forbidden(f"your role in the operation's project is {shown}; this needs member or higher")
    locked = session.scalar(select(Operation).where(Operation.id == operation.id).with_for_update())
    cluster = session.scalar(
        select(Cluster)
        .where(Cluster.id == operation.cluster_id)
        .options(selectinload(Cluster.node_pools), selectinload(Cluster.region))
    )
    if locked is None or cluster is None:  # deleted between the read and the lock
        raise NotFound(f"operation {operation_id[:80]!r} not found")
    return locked, cluster


def resume_operation(uow: UnitOfWork, principal: Principal, operation_id: str) -> Operation:
    """A paused operation runs again from where it stopped (the rollout's clocks start again)."""
    operation, cluster = _controllable(uow.session, principal, operation_id)
    refused = control_refusal(operation, "resume")
    if refused is not None:
        raise Conflict(refused)
    operation.state = OperationState.RUNNING.value
    operation.paused_reason = None
    # the rollout measures its Ready and drain timeouts from here again (provider.rollout.run.policy_of)
    operation.params = {**(operation.params or {}), "resumed_at": utcnow().isoformat()}
    uow.session.flush()
    request_reconcile(uow, cluster)
    return operation


def pause_operation(uow: UnitOfWork, principal: Principal, operation_id: str) -> Operation:
    """Stop an upgrade or repair after the node in hand: nothing more is replaced until it is resumed."""
    operation, cluster = _controllable(uow.session, principal, operation_id)
    refused = control_refusal(operation, "pause")
    if refused is not None:
        raise Conflict(refused)
    operation.state = OperationState.PAUSED.value
    operation.paused_reason = f"paused by {principal.user.name}"
    uow.session.flush()
    request_reconcile(uow, cluster)
    return operation


def rollback_operation(uow: UnitOfWork, principal: Principal, operation_id: str) -> Operation:
    """Bring an unfinished upgrade back to the versions it started from (``kaas_core.upgrades``)."""
    operation, cluster = _controllable(uow.session, principal, operation_id)
    with api_errors():
        rollback_upgrade(uow.session, operation, cluster)
    request_reconcile(uow, cluster)
    return operation


def cancel_operation(uow: UnitOfWork, principal: Principal, operation_id: str) -> Operation:
    """Ask an unfinished operation to stop after the node in hand (nodes stay at the versions they have); a
    paused one has no node in hand and is cancelled at once."""
    operation, cluster = _controllable(uow.session, principal, operation_id)
    refused = control_refusal(operation, "cancel")
    if refused is not None:
        raise Conflict(refused)
    operation.cancel_requested = True
    if operation.state == OperationState.PAUSED.value:
        operation.state = OperationState.CANCELLED.value
        operation.finished_at = utcnow()
    uow.session.flush()
    request_reconcile(uow, cluster)
    return operation
