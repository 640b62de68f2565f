"""Response bodies of ``/v1/kubeconfig-tokens`` (the kubeconfig itself is YAML, not a schema)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class KubeconfigTokenOut(BaseModel):
    id: str
    prefix: str
    user: str
    project: str
    cluster: str
    cluster_id: str
    description: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
