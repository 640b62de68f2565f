"""Response bodies of ``/v1/admin``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from kaas_api.schemas import Timestamp
from kaas_core.db.models import AuditEvent


class AuditEventOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "7b0c2d0e-0c1f-4a4e-9d55-3a3f4f0b8a11",
                    "at": "2026-12-01T10:00:00Z",
                    "actor_id": "3f8c7c1a-8a4c-4a57-8d0a-1f6f1bb7b0d2",
                    "actor_name": "alice",
                    "via": "api",
                    "action": "create_cluster",
                    "method": "POST",
                    "route": "/v1/projects/{project}/clusters",
                    "resource_type": "project",
                    "resource_id": "team-a",
                    "project_id": "team-a",
                    "cluster_id": None,
                    "outcome": "success",
                    "status_code": 202,
                    "request_id": "5d1f0e8f4b6c4c0e9a8f5d2b7e3c1a90",
                    "source_ip": "10.0.0.7",
                    "detail": {"path_params": {"project": "team-a"}},
                }
            ]
        }
    )

    id: str
    at: Timestamp
    actor_id: str | None
    actor_name: str | None
    via: str
    action: str
    method: str
    route: str
    resource_type: str | None
    resource_id: str | None
    project_id: str | None
    cluster_id: str | None
    outcome: str
    status_code: int
    request_id: str | None
    source_ip: str | None
    detail: dict[str, Any]

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventOut:
        return cls(
            id=event.id,
            at=event.at,
            actor_id=event.actor_id,
            actor_name=event.actor_name,
            via=event.via,
            action=event.action,
            method=event.method,
            route=event.route,
            resource_type=event.resource_type,
            resource_id=event.resource_id,
            project_id=event.project_id,
            cluster_id=event.cluster_id,
            outcome=event.outcome,
            status_code=event.status_code,
            request_id=event.request_id,
            source_ip=event.source_ip,
            detail=dict(event.detail or {}),
        )


class FleetClusterOut(BaseModel):
    id: str
    name: str
    project: str
    region: str
    kubernetes_version: str
    phase: str
    paused: bool
    nodes_ready: int
    nodes_total: int
    agent_connected: bool
    agent_last_seen_at: Timestamp | None
    created_at: Timestamp


class FleetClusterPage(BaseModel):
    items: list[FleetClusterOut]
    total: int
    page: int
    pages: int
