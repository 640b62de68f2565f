"""Kubernetes ``Status`` failure objects: how every hop of the k8s proxy says no, so kubectl prints it.

Owned by the tunnel package (pure: no I/O), because every hop answers with one: the agent when it refuses a
request (``agents.forward``, ``agents.websocket``), kaas's tunnel server (``kaas_tunnel``) and the API's k8s
proxy (``kaas_api.k8s.status``). One builder, so the three answers cannot drift.
"""

from __future__ import annotations

from typing import Any

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "RequestEntityTooLarge",
    422: "Invalid",
    429: "TooManyRequests",
    431: "RequestHeaderFieldsTooLarge",
    501: "NotImplemented",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def kube_status(code: int, message: str, *, reason: str | None = None) -> dict[str, Any]:
    """A ``meta/v1`` ``Status`` failure; ``reason`` defaults to the one Kubernetes uses for ``code``."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, "InternalError"),
        "code": code,
    }
