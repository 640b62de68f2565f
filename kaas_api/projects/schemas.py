"""Request and response bodies of projects, members and quotas."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from kaas_api.db.models import Role
from kaas_api.validation import DnsLabel, ShortText

QUOTA_MAX = 1_000_000_000


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
    created_at: datetime
    role: Role | None = Field(description="Your role in the project (null for an admin who is not a member).")


class MemberPut(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"role": "member"}]})

    role: Role


class MemberOut(BaseModel):
    user: str
    role: Role
    created_at: datetime


class Quota(BaseModel):
    """Limits of a project; null means unlimited."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"max_clusters": 10, "max_nodes": 50, "max_vcpus": 200, "max_ram_mb": 409600}]
        },
    )

    max_clusters: int | None = Field(ge=0, le=QUOTA_MAX)
    max_nodes: int | None = Field(ge=0, le=QUOTA_MAX)
    max_vcpus: int | None = Field(ge=0, le=QUOTA_MAX)
    max_ram_mb: int | None = Field(ge=0, le=QUOTA_MAX)


class QuotaUsage(BaseModel):
    clusters: int
    nodes: int
    vcpus: int
    ram_mb: int


class QuotaOut(BaseModel):
    quota: Quota
    usage: QuotaUsage
