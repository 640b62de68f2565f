"""Request and response bodies of ``/v1/me`` and ``/v1/tokens``."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from kaas_api.schemas import Timestamp
from kaas_api.validation import JSON_INTEGER, ShortText


class TokenCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"description": "laptop", "ttl_days": 30}]}
    )

    description: ShortText = ""
    ttl_days: Annotated[int, Field(ge=1, le=3650), JSON_INTEGER] | None = Field(
        default=None, description="Days until the token expires; default from the server."
    )


class TokenOut(BaseModel):
    id: str
    prefix: str
    kind: str
    description: str
    created_at: Timestamp
    expires_at: Timestamp | None
    revoked_at: Timestamp | None
    last_used_at: Timestamp | None


class TokenCreated(BaseModel):
    token: str = Field(description="The bearer token. Shown only this once; store it now.")
    info: TokenOut


class MembershipOut(BaseModel):
    project: str
    role: str


class MeOut(BaseModel):
    id: str
    name: str
    is_admin: bool
    created_at: Timestamp
    projects: list[MembershipOut]
