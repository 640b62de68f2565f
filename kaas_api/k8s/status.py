"""Kubernetes ``Status`` failures: how every error of the k8s proxy leaves, so kubectl prints its message.

Owned by ``kaas_api.k8s``; raised by ``kaas_api.k8s.access`` and ``kaas_api.k8s.proxy``, rendered by the
handler ``create_app`` installs for ``KubeStatusError``.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from agents.tunnel.kube_status import kube_status
from kaas_api.errors import KaasError


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
