"""The request id: one per API call, carried into every log line and every task the call queues.

``RequestIdMiddleware`` (a pure ASGI middleware, so streaming responses of the k8s proxy stay streamed)
takes a well-formed ``X-Request-ID`` from the caller or makes a new one, stores it in ``request_id_var``
for the duration of the request and returns it in the response's ``X-Request-ID`` header. The audit log,
the JSON logs and the task dispatcher read it from ``kaas_core.request_context.current_request_id()``.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kaas_core.request_context import accept_request_id, request_id_var


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        supplied = None
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                supplied = value.decode("latin-1")
                break
        request_id = accept_request_id(supplied)
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
