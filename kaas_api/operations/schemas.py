"""Response bodies of operations."""

from __future__ import annotations

from pydantic import BaseModel

from kaas_api.schemas import Timestamp
from kaas_core.db.models import Operation


class OperationOut(BaseModel):
    id: str
    cluster_id: str
    kind: str
    state: str
    step: str | None
    progress: int
    error: str | None
    target_generation: int
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None

    @classmethod
    def of(cls, operation: Operation) -> OperationOut:
        return cls(
            id=operation.id,
            cluster_id=operation.cluster_id,
            kind=operation.kind,
            state=operation.state,
            step=operation.step,
            progress=operation.progress,
            error=operation.error,
            target_generation=operation.target_generation,
            created_at=operation.created_at,
            started_at=operation.started_at,
            finished_at=operation.finished_at,
        )
