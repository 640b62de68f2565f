"""Body shapes every part of the API shares: the error body, timestamps, the k8s proxy's ``Status``.

Owned by ``kaas_api``; ``kaas_api.app`` renders every error through ``ErrorBody``, ``kaas_api.openapi``
documents it as the answer of every 4xx and 5xx, and each domain's ``schemas.py`` uses ``Timestamp`` for
its times and ``QueryTimestamp`` for a time in a query string.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from kaas_api.errors import RULES_BEYOND_SCHEMA


def _as_utc(value: datetime) -> datetime:
    """Stored times are UTC; SQLite (the embedded mode) gives them back without a zone."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# A time in a response: always UTC, rendered RFC 3339 with ``Z`` (pydantic writes UTC as ``Z``).
Timestamp = Annotated[datetime, AfterValidator(_as_utc)]

_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _rfc3339(value: Any) -> Any:
    """Only an RFC 3339 date-time with its zone: pydantic alone would read ``0.5`` as a Unix time and
    ``2026-01-01`` as midnight."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise PydanticCustomError(
            "datetime_format", "Input should be an RFC 3339 date-time with a zone, e.g. 2026-12-01T09:30:00Z"
        )
    return value


QueryTimestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_as_utc)]


class FieldProblem(BaseModel):
    """One thing wrong with a request."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "field": "node_pools[0].count",
                    "message": "Input should be a valid integer",
                    "type": "int_type",
                }
            ]
        },
    )

    field: str = Field(
        description="Where: a path into the request, names joined by '.', list items in brackets "
        "(node_pools[0].count), a query or path parameter by its name; empty for the request as a whole."
    )
    message: str
    type: str = Field(
        description="What kind of problem: pydantic's error types for the operation's schema, or one of "
        + ", ".join(sorted(RULES_BEYOND_SCHEMA))
        + " for a rule JSON Schema cannot state (it depends on other resources, or relates several fields)."
    )


class ErrorBody(BaseModel):
    """Every error kaas answers, 4xx and 5xx alike (the k8s proxy answers Kubernetes ``Status`` objects)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": "invalid_input",
                    "message": "name: must not be empty",
                    "detail": [{"field": "name", "message": "must not be empty", "type": "value_error"}],
                },
                {"error": "not_found", "message": "project 'team-a' not found", "detail": None},
            ]
        }
    )

    error: str = Field(
        description="A stable code: bad_request, unauthenticated, forbidden, not_found, method_not_allowed, "
        "conflict, quota_exceeded, invalid_input, payload_too_large, service_unavailable, ..."
    )
    message: str = Field(description="What went wrong and what to do, for a person.")
    detail: list[FieldProblem] | dict[str, Any] | None = Field(
        default=None,
        description="invalid_input: the list of problems; other errors: null, or an object with the "
        "numbers behind the refusal (a quota's limit and usage, the clusters still in a project).",
    )


class KubeStatus(BaseModel):
    """A Kubernetes ``meta/v1`` ``Status`` failure: how the k8s proxy answers so that kubectl prints it."""

    kind: str = Field(examples=["Status"])
    apiVersion: str = Field(examples=["v1"])
    metadata: dict[str, Any]
    status: str = Field(examples=["Failure"])
    message: str
    reason: str = Field(examples=["ServiceUnavailable"])
    code: int
