"""HTTP endpoints ``GET /v1/operations/{id}`` and its controls ``POST /v1/operations/{id}/resume | pause |
rollback | cancel`` (the per-cluster list is in ``kaas_api.clusters.endpoints``).

Reading needs any role in the operation's project; a control needs member or owner (admins may both).
A control answers 409 when the operation's state does not allow it (``kaas_api.operations.service``).
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from kaas_api.audit.middleware import add_audit_detail
from kaas_api.deps import CurrentUser, Uow
from kaas_api.openapi import errors
from kaas_api.operations import service
from kaas_api.operations.schemas import OperationOut

router = APIRouter(prefix="/v1/operations", tags=["operations"])


@router.get("/{operation_id}", response_model=OperationOut)
def get_operation(operation_id: str, principal: CurrentUser, uow: Uow) -> OperationOut:
    return OperationOut.of(service.get_visible_operation(uow.session, principal, operation_id))


@router.post("/{operation_id}/resume", response_model=OperationOut, responses=errors(403))
def resume_operation(request: Request, operation_id: str, principal: CurrentUser, uow: Uow) -> OperationOut:
    """Run a paused operation again from where it stopped."""
    operation = service.resume_operation(uow, principal, operation_id)
    add_audit_detail(request, cluster=operation.cluster_id, project=operation.project_id)
    return OperationOut.of(operation)


@router.post("/{operation_id}/pause", response_model=OperationOut, responses=errors(403))
def pause_operation(request: Request, operation_id: str, principal: CurrentUser, uow: Uow) -> OperationOut:
    """Stop a pending or running upgrade or repair after the node in hand."""
    operation = service.pause_operation(uow, principal, operation_id)
    add_audit_detail(request, cluster=operation.cluster_id, project=operation.project_id)
    return OperationOut.of(operation)


@router.post("/{operation_id}/rollback", response_model=OperationOut, responses=errors(403))
def rollback_operation(request: Request, operation_id: str, principal: CurrentUser, uow: Uow) -> OperationOut:
    """Bring an unfinished upgrade's nodes back to the versions it started from."""
    operation = service.rollback_operation(uow, principal, operation_id)
    add_audit_detail(request, cluster=operation.cluster_id, project=operation.project_id)
    return OperationOut.of(operation)


@router.post("/{operation_id}/cancel", response_model=OperationOut, responses=errors(403))
def cancel_operation(request: Request, operation_id: str, principal: CurrentUser, uow: Uow) -> OperationOut:
    """Stop an unfinished operation after the node in hand (a paused one is cancelled at once)."""
    operation = service.cancel_operation(uow, principal, operation_id)
    add_audit_detail(request, cluster=operation.cluster_id, project=operation.project_id)
    return OperationOut.of(operation)
