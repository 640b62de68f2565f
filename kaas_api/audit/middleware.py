"""Records an audit event for every mutating request, before its response leaves.

A pure ASGI middleware (the k8s proxy streams, so no response is buffered): for POST, PUT, PATCH and DELETE,
and for every WebSocket (the k8s proxy's exec, attach and port-forward: "create" verbs to Kubernetes,
recorded as GET with status 101 when accepted, else the refusal's status), it waits for the response
head, writes the event in its own transaction (so refused and failed attempts are recorded, and a
rolled-back request still leaves its trace), then lets the head go. The event is
visible to the caller as soon as it has its response. A k8s proxy request of any method is recorded too when
the proxy marks it (``audit_this_request``): a refused traversal attempt is worth a trace even as a GET.
Who the caller was is what the authentication
dependencies put on the request state (``set_actor``); the route template and the endpoint's name come
from FastAPI's routing. Request bodies, headers and tokens are never read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kaas_api.audit.service import AuditRecord, record
from kaas_core.request_context import current_request_id

log = logging.getLogger(__name__)

MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_ACTOR_KEY = "kaas_audit_actor"
_EXTRA_KEY = "kaas_audit_extra"
_ALWAYS_KEY = "kaas_audit_always"
# the only non-mutating requests that may ask to be recorded: the k8s proxy's (kubectl's reads are many, so
# the others pay nothing for this)
_MARKABLE_PREFIX = "/k8s/"


def set_actor(request: HTTPConnection, *, user_id: str | None, user_name: str, via: str = "api") -> None:
    """Called by the authentication dependencies once they know the caller."""
    request.state.kaas_audit_actor = (user_id, user_name, via)


def audit_this_request(request: HTTPConnection) -> None:
    """Record this request even if its method does not mutate (only under ``/k8s/``)."""
    request.state.kaas_audit_always = True


def add_audit_detail(request: HTTPConnection, **detail: str) -> None:
    """Non-secret facts a handler wants on its audit event (e.g. the id of what it created)."""
    extra = getattr(request.state, _EXTRA_KEY, None)
    if extra is None:
        extra = {}
        request.state.kaas_audit_extra = extra
    extra.update({key: str(value)[:255] for key, value in detail.items()})


def _action(scope: Scope) -> tuple[str, str]:
    """The route's template and the action: the endpoint's name, unless the route only matched the path.

    A request whose method the path does not serve is routed to the path's first route, whose endpoint
    never runs (405): it is recorded as ``method_not_allowed`` on that template, not as that endpoint.
    """
    route = scope.get("route")
    # path_format is the template without converters, as the OpenAPI schema spells it
    template = getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"
    name = getattr(route, "name", None) or "unmatched"
    methods = getattr(route, "methods", None)
    if methods and scope.get("type") == "http" and scope.get("method", "GET") not in methods:
        name = "method_not_allowed"
    return template, name


def _response_status(message: Message) -> int | None:
    """The status a message gives the request, if it is the first word of the answer."""
    kind = message["type"]
    if kind in ("http.response.start", "websocket.http.response.start"):
        return int(message["status"])
    if kind == "websocket.accept":
        return 101
    if kind == "websocket.close":  # closed before it was accepted: the server refuses the handshake
        return 403
    return None


def _source_ip(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0])[:64] if client else None


class AuditMiddleware:
    def __init__(self, app: ASGIApp, *, session_factory: Callable[[], Session]) -> None:
        self.app = app
        self._session_factory = session_factory

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = scope["type"] == "websocket"
        mutating = scope["type"] == "http" and scope.get("method", "GET") in MUTATING_METHODS
        markable = scope["type"] == "http" and scope.get("path", "").startswith(_MARKABLE_PREFIX)
        if not (websocket or mutating or markable):
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})  # where the auth dependencies leave the actor
        recorded = False

        async def send_after_audit(message: Message) -> None:
            nonlocal recorded
            status = _response_status(message)
            if status is not None and not recorded:
                recorded = True
                if websocket or mutating or state.get(_ALWAYS_KEY):
                    await self._record(scope, status)
            await send(message)

        try:
            await self.app(scope, receive, send_after_audit)
        except Exception:
            if not recorded and (websocket or mutating or state.get(_ALWAYS_KEY)):
                recorded = True
                await self._record(scope, 500)
            raise

    async def _record(self, scope: Scope, status_code: int) -> None:
        state: dict[str, Any] = scope.get("state", {})
        actor = state.get(_ACTOR_KEY)
        template, name = _action(scope)
        path_params = {str(k): str(v) for k, v in (scope.get("path_params") or {}).items()}
        if template.startswith("/k8s/"):
            # the Kubernetes path says which object was changed; it never carries a secret
            path_params["path"] = path_params.get("path", "")[:255]
        entry = AuditRecord(
            method=str(scope.get("method", "GET")),
            route=template,
            action=name,
            path_params=path_params,
            status_code=status_code,
            via=actor[2] if actor else ("dashboard" if template.startswith("/admin") else "api"),
            actor_id=actor[0] if actor else None,
            actor_name=actor[1] if actor else None,
            request_id=current_request_id() or state.get("request_id"),
            source_ip=_source_ip(scope),
            extra=dict(state.get(_EXTRA_KEY) or {}),
        )
        try:
            await run_in_threadpool(self._write, entry)
        except Exception:
            # the change itself already happened (or was refused): losing its trace must not turn the
            # answer into an error, but it must be loud
            log.exception("audit: could not record %s %s (status %d)", entry.method, template, status_code)

    def _write(self, entry: AuditRecord) -> None:
        session = self._session_factory()
        try:
            record(session, entry)
            session.commit()
        finally:
            session.close()
