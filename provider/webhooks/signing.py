"""How a webhook request is encoded and signed. Pure: no I/O, no clock (the caller passes the timestamp).

Used by ``provider.webhooks.delivery``; receivers verify with the same three lines (see
``docs/architecture.md``, "Notifications (webhooks)")::

    expected = "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, "sha256").hexdigest()
    ok = hmac.compare_digest(expected, request.headers["X-Kaas-Signature"])
    fresh = abs(time.time() - int(request.headers["X-Kaas-Timestamp"])) < 300

The signed message is the ``X-Kaas-Timestamp`` value (unix seconds of the attempt), a dot, and the raw
request body exactly as received. Each attempt carries a new timestamp (and so a new signature), so a
receiver can refuse replays of old requests; ``X-Kaas-Delivery`` stays the same across retries, so it can
also drop duplicates.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

SIGNATURE_PREFIX = "sha256="
EVENT_HEADER = "X-Kaas-Event"
DELIVERY_HEADER = "X-Kaas-Delivery"
TIMESTAMP_HEADER = "X-Kaas-Timestamp"
SIGNATURE_HEADER = "X-Kaas-Signature"
USER_AGENT = "kaas-webhooks/1"


def encode_body(payload: dict[str, Any]) -> bytes:
    """The request body: compact JSON with sorted keys, UTF-8, so every attempt sends the same bytes."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def sign(secret: str, *, timestamp: str, body: bytes) -> str:
    """``sha256=`` + hex HMAC-SHA256 of ``{timestamp}.{body}`` keyed with the webhook's secret."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def request_headers(
    *, secret: str, event: str, delivery_id: str, timestamp: str, body: bytes
) -> dict[str, str]:
    """Every header of one attempt (the secret itself is never among them)."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: event,
        DELIVERY_HEADER: delivery_id,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp=timestamp, body=body),
    }
