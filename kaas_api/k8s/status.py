"""Kubernetes ``Status`` failures: how every error of the k8s proxy leaves, so kubectl prints its message.

Owned by ``kaas_api.k8s``; raised by ``kaas_api.k8s.access`` and ``kaas_api.k8s.proxy``, rendered by the
handler ``create_app`` installs for ``KubeStatusError``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from kaas_api.errors import KaasError

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "RequestEntityTooLarge",
    422: "Invalid",
    501: "NotImplemented",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def kube_status(code: int, message: str, *, reason: str | None = None) -> dict[str, Any]:
    """A ``meta/v1`` ``Status`` failure object."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, "InternalError"),
        "code": code,
    }


class KubeStatusError(Exception):
    """An error of the k8s proxy, rendered as a ``Status`` with its HTTP code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @classmethod
    def from_domain(cls, exc: KaasError) -> KubeStatusError:
        return cls(exc.status_code, exc.message)


async def kube_status_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KubeStatusError)
    headers = {"WWW-Authenticate": 'Bearer realm="kaas"'} if exc.code == 401 else None
    return JSONResponse(status_code=exc.code, content=kube_status(exc.code, exc.message), headers=headers)
