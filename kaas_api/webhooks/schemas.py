"""Request and response bodies of ``/v1/projects/{project}/webhooks``, and the webhook URL check."""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

from kaas_api.schemas import Timestamp
from kaas_api.validation import PRINTABLE_PATTERN, JsonBool, anchored, check_printable, string_schema
from kaas_core.db.models import DeliveryState, WebhookEvent

WEBHOOK_URL_MAX = 2048
SECRET_MIN = 16
SECRET_MAX = 128
_URL_EXAMPLE = "https://hooks.example.com/kaas"
_H16 = "[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join(
    [
        f"({_H16}:){{7}}{_H16}",
        f"({_H16}:){{1,7}}:",
        f"({_H16}:){{1,6}}:{_H16}",
        f"({_H16}:){{1,5}}(:{_H16}){{1,2}}",
        f"({_H16}:){{1,4}}(:{_H16}){{1,3}}",
        f"({_H16}:){{1,3}}(:{_H16}){{1,4}}",
        f"({_H16}:){{1,2}}(:{_H16}){{1,5}}",
        f"{_H16}:(:{_H16}){{1,6}}",
        f":((:{_H16}){{1,7}}|:)",
    ]
)
_HOST_LABEL = "[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
_PORT = "([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# What check_webhook_url accepts, as the spec documents it: http(s), a host name or an IP address (IPv6 in
# brackets), an optional port, then a path or query of printable ASCII without '#' or '"' (percent-encode
# the rest). Its friendlier messages come first; this is the last word.
WEBHOOK_URL_PATTERN = (
    rf"[Hh][Tt][Tt][Pp][Ss]?://({_HOST_LABEL}(\.{_HOST_LABEL})*|\[({_IPV6})\])(:{_PORT})?([/?][!$-~]*)?"
)
_WEBHOOK_URL = re.compile(WEBHOOK_URL_PATTERN)


def check_webhook_url(value: str) -> str:
    """An absolute http(s) URL with a host and no credentials in it, e.g. 'https://hooks.example.com/kaas'."""
    if not value:
        raise ValueError(f"must not be empty: give the receiver's address, e.g. {_URL_EXAMPLE!r}")
    if len(value) > WEBHOOK_URL_MAX:
        raise ValueError(f"must be at most {WEBHOOK_URL_MAX} characters (got {len(value)})")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("must not contain spaces or control characters: percent-encode them (%20)")
    try:
        parts = urlsplit(value)
        port = parts.port  # raises on a port that is not a number in 0-65535
    except ValueError as exc:
        raise ValueError(f"{value[:80]!r} is not a valid URL ({exc}); e.g. {_URL_EXAMPLE!r}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"{value[:80]!r} must start with https:// or http://, e.g. {_URL_EXAMPLE!r}")
    if "@" in parts.netloc:
        raise ValueError(
            "must not contain a user name or password (user:password@host): every request is signed"
            " with the webhook secret (X-Kaas-Signature), verify that instead"
        )
    if not parts.hostname:
        raise ValueError(f"{value[:80]!r} has no host name, e.g. {_URL_EXAMPLE!r}")
    if port == 0:
        raise ValueError(f"{value[:80]!r}: port 0 is not a port a receiver can listen on")
    if parts.fragment:
        raise ValueError(f"{value[:80]!r} has a #fragment, which is never sent: remove it")
    if not _WEBHOOK_URL.fullmatch(value):
        raise ValueError(
            f"{value[:80]!r} is not a URL kaas can call: write https://host[:port]/path with ASCII letters"
            " only (percent-encode the rest, e.g. %C3%A9)"
        )
    return value


WebhookUrl = Annotated[
    str,
    StringConstraints(max_length=WEBHOOK_URL_MAX * 2),
    AfterValidator(check_webhook_url),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": WEBHOOK_URL_MAX,
            "pattern": anchored(WEBHOOK_URL_PATTERN),
        }
    ),
]
WebhookSecret = Annotated[
    str,
    StringConstraints(min_length=SECRET_MIN, max_length=SECRET_MAX),
    AfterValidator(check_printable),
    WithJsonSchema(string_schema(pattern=PRINTABLE_PATTERN, min_length=SECRET_MIN, max_length=SECRET_MAX)),
]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"url": _URL_EXAMPLE, "events": ["operation.succeeded", "operation.failed"]},
                {
                    "url": _URL_EXAMPLE,
                    "events": ["operation.failed"],
                    "secret": "my-own-secret-of-16-chars-or-more",
                },
            ]
        },
    )

    url: WebhookUrl = Field(description="Where kaas POSTs the notifications (http or https).")
    events: list[WebhookEvent] = Field(
        min_length=1, max_length=len(WebhookEvent), description="The events to be notified of."
    )
    secret: WebhookSecret | None = Field(
        default=None,
        description=f"The HMAC key that signs every request ({SECRET_MIN}-{SECRET_MAX} characters); "
        "generated when left out. Shown only in this response.",
    )


class WebhookPatch(BaseModel):
    """What may change on a webhook; what is left out stays. The secret cannot change: make a new webhook."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"enabled": False}, {"url": _URL_EXAMPLE, "events": ["operation.failed"]}]
        },
    )

    url: WebhookUrl | None = Field(default=None, description="The new receiver address.")
    events: list[WebhookEvent] | None = Field(
        default=None, min_length=1, max_length=len(WebhookEvent), description="The new set of events."
    )
    enabled: JsonBool | None = Field(
        default=None, description="false: nothing is sent (new deliveries are not made, pending ones fail)."
    )


class WebhookOut(BaseModel):
    """A webhook; its secret is never shown again after creation."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "5b1c7d2e-2f7a-4a4b-9c1e-1a2b3c4d5e6f",
                    "url": _URL_EXAMPLE,
                    "events": ["operation.succeeded", "operation.failed"],
                    "enabled": True,
                    "created_by": "alice",
                    "created_at": "2026-01-01T12:00:00Z",
                }
            ]
        }
    )

    id: str
    url: str
    events: list[WebhookEvent]
    enabled: bool
    created_by: str | None = Field(description="The user who created it (null once that user is gone).")
    created_at: Timestamp


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="Verify X-Kaas-Signature with it. Shown once: store it now; it cannot be read back."
    )


class AttemptOut(BaseModel):
    number: int
    at: Timestamp
    status_code: int | None = Field(description="The receiver's HTTP status; null when none came.")
    error: str | None = Field(description="Why the attempt did not succeed; null when it did.")
    duration_ms: int


class DeliveryOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0f8e2c4a-9b7d-4e1f-8a6c-5d4b3a291807",
                    "webhook_id": "5b1c7d2e-2f7a-4a4b-9c1e-1a2b3c4d5e6f",
                    "event": "operation.succeeded",
                    "operation_id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
                    "cluster_id": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
                    "state": "succeeded",
                    "attempt_count": 2,
                    "next_attempt_at": None,
                    "last_status_code": 200,
                    "last_error": None,
                    "created_at": "2026-01-01T12:00:00Z",
                    "delivered_at": "2026-01-01T12:00:11Z",
                    "payload": {"event": "operation.succeeded"},
                    "attempts": [
                        {
                            "number": 1,
                            "at": "2026-01-01T12:00:00Z",
                            "status_code": 500,
                            "error": "the receiver answered HTTP 500",
                            "duration_ms": 12,
                        },
                        {
                            "number": 2,
                            "at": "2026-01-01T12:00:11Z",
                            "status_code": 200,
                            "error": None,
                            "duration_ms": 9,
                        },
                    ],
                }
            ]
        }
    )

    id: str
    webhook_id: str
    event: WebhookEvent
    operation_id: str
    cluster_id: str
    state: DeliveryState
    attempt_count: int
    next_attempt_at: Timestamp | None = Field(description="When the next attempt is due (pending only).")
    last_status_code: int | None
    last_error: str | None
    created_at: Timestamp
    delivered_at: Timestamp | None
    payload: dict[str, Any] = Field(description="The JSON body sent (the same on every attempt).")
    attempts: list[AttemptOut] = Field(description="Every attempt so far, oldest first.")
