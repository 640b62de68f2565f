"""HTTP endpoint ``GET /v1/operations/{id}`` (the per-cluster list is in ``kaas_api.clusters.endpoints``)."""

from __future__ import annotations

from fastapi import APIRouter

from kaas_api.deps import CurrentUser, Uow
from kaas_api.operations import service
from kaas_api.operations.schemas import OperationOut

router = APIRouter(prefix="/v1/operations", tags=["operations"])


@router.get("/{operation_id}", response_model=OperationOut)
def get_operation(operation_id: str, principal: CurrentUser, uow: Uow) -> OperationOut:
    return OperationOut.of(service.get_visible_operation(uow.session, principal, operation_id))
