"""The request id of the work at hand: one per API call, carried into every log line and every task the call
queues (``RequestIdMiddleware`` sets it per request, in the API and the tunnel server's k8s proxy; the
workers' Celery signals per task).

Owned by ``kaas_core``: the API, the tunnel server, the workers and the logging set and read it, so it lives
below them.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
_HEADER_BYTES = REQUEST_ID_HEADER.encode()  # ASGI header names: lower-case bytes
# a caller's id is kept only when it is short and harmless, so it can go into logs and headers unescaped
_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")

request_id_var: ContextVar[str | None] = ContextVar("kaas_request_id", default=None)


def current_request_id() -> str | None:
    return request_id_var.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


def accept_request_id(value: str | None) -> str:
    """The caller's id when it is acceptable, else a fresh one."""
    if value and _ACCEPTABLE.match(value):
        return value
    return new_request_id()


class RequestIdMiddleware:
    """Takes a well-formed ``X-Request-ID`` from the caller or makes a new one, holds it in
    ``request_id_var`` for the request and returns it in the response's ``X-Request-ID`` header. A pure ASGI
    middleware, so streamed answers (the k8s proxies') stay streamed. Both the API and the tunnel server's
    k8s proxy wrap themselves in it, so a kubectl request's audit row and log lines carry the caller's id
    whichever of the two served it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        supplied = None
        for name, value in scope.get("headers", []):
            if name == _HEADER_BYTES:
                supplied = value.decode("latin-1")
                break
        request_id = accept_request_id(supplied)
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != _HEADER_BYTES]
                headers.append((_HEADER_BYTES, request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
