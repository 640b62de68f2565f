"""Response bodies of ``/v1/kubeconfig-tokens`` (the kubeconfig itself is YAML, not a schema)."""

from __future__ import annotations

from pydantic import BaseModel

from kaas_api.schemas import Timestamp


class KubeconfigTokenOut(BaseModel):
    id: str
    prefix: str
    user: str
    project: str
    cluster: str
    cluster_id: str
    description: str
    created_at: Timestamp
    expires_at: Timestamp | None
    revoked_at: Timestamp | None
    last_used_at: Timestamp | None
