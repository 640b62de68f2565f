"""Request and response bodies of projects, members and quotas."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from kaas_api.schemas import Timestamp
from kaas_api.validation import JSON_INTEGER, DnsLabel, ShortText
from kaas_core.db.models import Role

QUOTA_MAX = 1_000_000_000
Limit = Annotated[int, Field(ge=0, le=QUOTA_MAX), JSON_INTEGER]


class ProjectCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "team-a", "description": "Team A"}]}
    )

    name: DnsLabel
    description: ShortText = ""


class ProjectOut(BaseModel):
    id: str
    name: str
    description: str
    created_at: Timestamp
    role: Role | None = Field(description="Your role in the project (null for an admin who is not a member).")


class MemberPut(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"role": "member"}]})

    role: Role


class MemberOut(BaseModel):
    user: str
    role: Role
    created_at: Timestamp


class Quota(BaseModel):
    """Limits of a project; null means unlimited."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"max_clusters": 10, "max_nodes": 50, "max_vcpus": 200, "max_ram_mb": 409600}]
        },
    )

    max_clusters: Limit | None
    max_nodes: Limit | None
    max_vcpus: Limit | None
    max_ram_mb: Limit | None


class QuotaUsage(BaseModel):
    clusters: int
    nodes: int
    vcpus: int
    ram_mb: int


class QuotaOut(BaseModel):
    quota: Quota
    usage: QuotaUsage
