"""Request and response bodies of the ``/v1/users`` endpoints."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from kaas_api.schemas import Timestamp
from kaas_api.validation import DnsLabel, JsonBool


class UserCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "alice", "is_admin": False}]}
    )

    name: DnsLabel
    is_admin: JsonBool = False


class UserOut(BaseModel):
    id: str
    name: str
    is_admin: bool
    created_at: Timestamp


class UserCreated(BaseModel):
    user: UserOut
    token: str = Field(description="The user's first bearer token. Shown only this once.")
