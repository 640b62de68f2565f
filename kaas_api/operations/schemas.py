"""Response bodies of operations."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kaas_api.schemas import Timestamp
from kaas_core.db.models import Operation

# params are what the operation was asked (versions, pools, the upgrade strategy) and hold no secret today;
# a key that names one is never shown all the same, whoever writes it later
_SECRET_WORDS = ("secret", "token", "password", "credential", "key")


def shown_params(params: dict[str, Any] | None) -> dict[str, Any]:
    return {
        name: value
        for name, value in (params or {}).items()
        if not any(word in name.lower() for word in _SECRET_WORDS)
    }


class OperationNodeOut(BaseModel):
    """One node's part in a rollout, as the provider's last pass wrote it."""

    model_config = ConfigDict(extra="allow")

    name: str
    role: str | None = None
    pool: str | None = None
    version: str | None = None
    state: str = Field(description="old | new | surging | draining | deleted")


class OperationOut(BaseModel):
    id: str
    cluster_id: str
    kind: str
    state: str
    step: str | None
    progress: int
    error: str | None
    target_generation: int
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="What was asked: for an upgrade from_version, to_version, control_plane, pools, "
        "pool_versions_before, max_surge, max_unavailable, drain_timeout_seconds, "
        "node_ready_timeout_seconds.",
    )
    nodes: list[OperationNodeOut] = Field(default_factory=list, description="Per-node progress of a rollout.")
    paused_reason: str | None = None
    cancel_requested: bool = False
    rolling_back: bool = False
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
            params=shown_params(operation.params),
            nodes=[
                OperationNodeOut.model_validate(node)
                for node in operation.nodes or []
                if isinstance(node, dict) and isinstance(node.get("name"), str)
            ],
            paused_reason=operation.paused_reason,
            cancel_requested=bool(operation.cancel_requested),
            rolling_back=bool(operation.rolling_back),
            created_at=operation.created_at,
            started_at=operation.started_at,
            finished_at=operation.finished_at,
        )
