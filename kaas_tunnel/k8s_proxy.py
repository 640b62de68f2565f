"""The tunnel server's own k8s proxy: ``/k8s/clusters/{cluster_id}/{path}``, kubectl's one-hop path.

Owned by ``kaas_tunnel``; mounted by ``kaas_tunnel.server.TunnelServer`` on its k8s proxy listener
(``KAAS_K8S_PROXY_PORT``), where the ingress sends ``/k8s`` (``deploy/kustomize``). It answers what the API's
k8s proxy (``kaas_api.k8s.proxy``) answers, from the process that holds the cluster's agent, as Rancher does:

1. The raw path must be canonical (``agents.tunnel.paths``), else 400 before the token is read (audited
   whatever the method: it is how a traversal would be tried).
2. The bearer token is checked by ``kaas_core.cluster_access`` through the process's
   ``kaas_core.credential_cache`` (no database round trip while the answer is remembered, revocations
   pushed over Redis): 401 a bad token, 404 a cluster the caller cannot see.
3. This process holds the agent: a stream on its WebSocket at once (the internal endpoint's own code,
   ``kaas_tunnel.proxy``). Another process does (the registry, ``kaas_core.tunnel_registry``): one hop to that
   process's internal endpoint with the signed assertion (``kaas_core.internal_hop``), over a pooled
   keep-alive connection. Neither: 503.

Bodies stream both ways unparsed; WebSockets (exec, attach, port-forward) take the same path. The agent
impersonates ``kaas:<user>`` with the role's groups, as through the API. Every request gets the API's
``k8s-proxy`` log line; writes, WebSockets and refused traversals also an ``audit_events`` row (the one the
API's audit middleware writes for its proxy), before the response head goes out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
from starlette.types import Message, Receive, Scope, Send
from websockets.exceptions import InvalidHandshake, InvalidStatus

from agents.tunnel.headers import RESPONSE_HOP_BY_HOP, dropped_from_request
from agents.tunnel.kube_status import kube_status
from agents.tunnel.paths import NonCanonicalPath, check_canonical_path, check_canonical_target
from agents.tunnel.websocket import SUBPROTOCOL_HEADER
from agents.tunnel.ws_client import connect_kube_websocket, valid_subprotocols
from kaas_core.agent_presence import disconnected_recently, new_session
from kaas_core.cluster_access import AccessRefused, ProxyIdentity
from kaas_core.db.models import AuditEvent, utcnow
from kaas_core.internal_hop import ASSERTION_HEADER, ProxyAssertion, internal_target_url
from kaas_core.request_context import RequestIdMiddleware, current_request_id, new_request_id
from kaas_core.websocket_relay import relay_websocket
from kaas_tunnel.proxy import (
    ALLOWED_METHODS,
    Refused,
    _counted,
    _exchange,
    _has_body,
    _open_stream,
    _request_headers,
    _Target,
    _websocket_relay,
)

if TYPE_CHECKING:
    from kaas_tunnel.server import TunnelServer

log = logging.getLogger(__name__)

PROXY_PREFIX = "/k8s/clusters/"
ROUTE_TEMPLATE = "/k8s/clusters/{cluster_id}/{path}"  # the API's route, as its audit rows name it
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Date and Server are this server's own: relaying the other process's too would send each twice
RESPONSE_DROPPED = RESPONSE_HOP_BY_HOP | {"date", "server"}
WEBSOCKET_OPEN_TIMEOUT_SECONDS = 15.0
WEBSOCKET_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def _status_body(code: int, message: str, reason: str) -> bytes:
    return json.dumps(kube_status(code, message, reason=reason)).encode()


_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    405: "MethodNotAllowed",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class _Request:
    """One proxied request or WebSocket as it goes: what the log line and the audit row need."""

    def __init__(self, server: TunnelServer, scope: Scope) -> None:
        self.server = server
        self.scope = scope
        self.websocket = scope["type"] == "websocket"
        self.method = "GET" if self.websocket else str(scope.get("method", "GET")).upper()
        self.started = time.monotonic()
        self.cluster_id = ""
        self.k8s_path = ""
        self.identity: ProxyIdentity | None = None
        self.status = 0
        self.sent = 0
        self.always_audit = False  # a refused traversal: audited whatever the method
        self.reason: str | None = None
        self.audited = False

    @property
    def audits(self) -> bool:
        return self.websocket or self.method in MUTATING_METHODS or self.always_audit

    async def audit(self, status: int) -> None:
        """The ``audit_events`` row, once, before the response head (its own transaction, a worker thread)."""
        if self.audited or not self.audits:
            return
        self.audited = True
        event = AuditEvent(
            at=utcnow(),
            actor_id=None,
            actor_name=self.identity.user if self.identity is not None else None,
            via="api",
            action="proxy_websocket" if self.websocket else "proxy",
            method=self.method[:8],
            route=ROUTE_TEMPLATE,
            resource_type="cluster" if self.cluster_id else None,
            resource_id=self.cluster_id[:255] or None,
            project_id=None,
            cluster_id=self.cluster_id[:63] or None,
            outcome="success" if status < 400 else ("refused" if status < 500 else "failed"),
            status_code=status,
            request_id=current_request_id() or new_request_id(),
            source_ip=_source_ip(self.scope),
            detail={
                "path_params": {"cluster_id": self.cluster_id[:255], "path": self.k8s_path.lstrip("/")[:255]},
                **({"reason": self.reason[:255]} if self.reason else {}),
                "via_tunnel": "true",
            },
        )
        try:
            await asyncio.to_thread(self.server.write_audit, event)
        except Exception:
            # the request went (or was refused) already: losing its trace must be loud, not an error
            log.exception("audit: could not record %s %s (status %d)", self.method, ROUTE_TEMPLATE, status)

    def log_line(self, outcome: str) -> None:
        """The API's ``k8s-proxy`` line (``kaas_api.k8s.proxy._log``), never a token."""
        identity = self.identity
        if identity is None:
            log.info(
                "k8s-proxy denied cluster=%s method=%s path=%s status=%d reason=%r",
                self.cluster_id[:64],
                "WEBSOCKET" if self.websocket else self.method,
                self.scope.get("path", "")[:256],
                self.status,
                self.reason,
            )
            return
        log.info(
            "k8s-proxy user=%s groups=%s token_id=%s token_kind=%s project=%s cluster=%s cluster_id=%s "
            "method=%s path=%s status=%d bytes=%d duration_ms=%d outcome=%s",
            identity.user,
            ",".join(identity.groups),
            identity.token_id,
            identity.token_kind,
            identity.project,
            identity.cluster_name,
            identity.cluster_id,
            "WEBSOCKET" if self.websocket else self.method,
            self.k8s_path[:512],
            self.status,
            self.sent,
            int((time.monotonic() - self.started) * 1000),
            outcome,
        )


def _source_ip(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0])[:64] if client else None


def _parse(scope: Scope) -> tuple[str, str]:
    """The cluster id and the Kubernetes target (path and query, as sent) of a proxied request."""
    raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    if not raw_path.startswith(PROXY_PREFIX):
        raise Refused(404, "NotFound", "not found: kubectl's path is /k8s/clusters/{cluster id}/...")
    cluster_id, slash, _rest = raw_path[len(PROXY_PREFIX) :].partition("/")
    if not cluster_id or not slash:
        raise Refused(404, "NotFound", "not found: kubectl's path is /k8s/clusters/{cluster id}/...")
    query = scope.get("query_string", b"").decode("latin-1")
    target = raw_path[len(PROXY_PREFIX) + len(cluster_id) :] + ("?" + query if query else "")
    try:
        check_canonical_path(raw_path)
        check_canonical_target(target)
    except NonCanonicalPath as exc:
        raise Refused(400, "BadRequest", f"refused a non-canonical request path: {exc}") from exc
    return cluster_id, target


def _authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return str(value.decode("latin-1"))
    return None


async def _identify(request: _Request) -> str:
    """Parse and authorize; the target on success, ``Refused`` (logged, audited where due) otherwise."""
    scope = request.scope
    try:
        cluster_id, target = _parse(scope)
    except Refused as refused:
        request.always_audit = refused.code == 400
        request.reason = refused.message
        raise
    request.cluster_id = cluster_id
    request.k8s_path = target.partition("?")[0]
    try:
        request.identity = await request.server.credentials.authorize(_authorization(scope), cluster_id)
    except AccessRefused as exc:
        request.reason = exc.message
        raise Refused(exc.status_code, _REASONS.get(exc.status_code, "Unauthorized"), exc.message) from exc
    return target


_STREAMING_TIMEOUT = httpx.Timeout(10.0, read=None)


def _is_streaming(target: str) -> bool:
    """A watch or a followed log (as ``agents.forward.is_streaming_target`` reads them)."""
    path, _, query = target.partition("?")
    params = {part.partition("=")[0]: part.partition("=")[2] for part in query.split("&") if part}
    if params.get("watch", "").lower() in ("true", "1") or params.get("follow", "").lower() in ("true", "1"):
        return True
    return "/watch/" in path


def k8s_proxy_app(server: TunnelServer) -> Any:
    """The ASGI app of the tunnel server's k8s proxy listener, bound to one ``TunnelServer``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await _serve_http(server, scope, receive, send)
        elif scope["type"] == "websocket":
            await _serve_websocket(server, scope, receive, send)

    # the caller's X-Request-ID (or a new one) in the audit row, the log lines and the answer, as the API's
    return RequestIdMiddleware(app)


# --- HTTP ---------------------------------------------------------------------------------------------


async def _answer_status(request: _Request, send: Send, refused: Refused) -> None:
    request.status = refused.code
    await request.audit(refused.code)
    body = _status_body(refused.code, refused.message, refused.reason)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if refused.code == 401:
        headers.append((b"www-authenticate", b'Bearer realm="kaas"'))
    await send({"type": "http.response.start", "status": refused.code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    request.log_line("refused")


async def _serve_http(server: TunnelServer, scope: Scope, receive: Receive, send: Send) -> None:
    request = _Request(server, scope)
    try:
        target = await _identify(request)
        if request.method not in ALLOWED_METHODS:
            raise Refused(405, "MethodNotAllowed", f"method {request.method} is not proxied")
    except Refused as refused:
        await _answer_status(request, send, refused)
        return
    identity = request.identity
    assert identity is not None

    async def observed(message: Message) -> None:
        if message["type"] == "http.response.start":
            request.status = int(message["status"])
            await request.audit(request.status)
        elif message["type"] == "http.response.body":
            request.sent += len(message.get("body", b""))
        await send(message)

    raw_headers: list[tuple[bytes, bytes]] = list(scope["headers"])
    has_body = _has_body(raw_headers)
    live = server.session_for(identity.cluster_id)
    outcome = "completed"
    try:
        if live is not None:
            outcome = await _local(server, request, live, target, receive, observed, has_body=has_body)
        else:
            outcome = await _remote(server, request, target, receive, observed, has_body=has_body)
    except Refused as refused:
        await _answer_status(request, send, refused)
        return
    except Exception:
        request.log_line("upstream-broke")
        raise
    request.log_line(outcome)


async def _local(
    server: TunnelServer,
    request: _Request,
    live: Any,
    target: str,
    receive: Receive,
    send: Send,
    *,
    has_body: bool,
) -> str:
    """This process holds the agent: one stream on its WebSocket."""
    identity = request.identity
    assert identity is not None
    stream = await _open_stream(
        server,
        _Target(
            cluster_id=identity.cluster_id, path=target, user=identity.user, groups=identity.groups, live=live
        ),
        method=request.method,
        headers=tuple(_request_headers(request.scope["headers"])),
        body=has_body,
    )
    with _counted(server.metrics):
        finished = await _exchange(
            stream,
            receive,
            send,
            has_body=has_body,
            cluster_id=identity.cluster_id,
            head_timeout=server.settings.response_head_timeout_seconds,
            metrics=server.metrics,
        )
    return "completed" if finished else "client-went-away"


def _hop_headers(request: _Request, target: str) -> list[tuple[str, str]]:
    """The caller's headers minus credentials, impersonation and hop-by-hop ones, plus the assertion."""
    identity = request.identity
    assert identity is not None
    kept = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in request.scope["headers"]
        if not dropped_from_request(name.decode("latin-1").lower())
    ]
    assertion = ProxyAssertion.issue(
        cluster_id=identity.cluster_id,
        user=identity.user,
        groups=identity.groups,
        method=request.method,
        target=target,
        now=time.time(),
    )
    kept.append((ASSERTION_HEADER, assertion.sign(request.server.assertion_key)))
    return kept


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise httpx.ReadError("the client went away while sending the body")
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


async def _remote(
    server: TunnelServer,
    request: _Request,
    target: str,
    receive: Receive,
    send: Send,
    *,
    has_body: bool,
) -> str:
    """Another process holds the agent: one hop to its internal endpoint, on a pooled connection.

    Between two sessions of the agent (its tunnel process died: the registry names the dead process, or
    nothing), a request without a body waits for the new session within the hop's connect timeout
    (``kaas_core.agent_presence``), and goes to it, here or on another process; a body may have been read
    from the client already, so a request with one answers 503 at once."""
    identity = request.identity
    assert identity is not None
    started = time.monotonic()
    timeout = server.settings.dial_timeout_seconds
    location = await server.registry.lookup(identity.cluster_id)
    if location is None and not has_body:
        if await asyncio.to_thread(disconnected_recently, server.session_factory, identity.cluster_id):
            location = await new_session(
                server.registry, identity.cluster_id, started=started, timeout=timeout
            )
    client = server.peer_client()
    while True:
        live = server.session_for(identity.cluster_id)
        if live is not None:  # the agent's new session is on this process
            return await _local(server, request, live, target, receive, send, has_body=has_body)
        if location is None or location.address == server.internal_url:
            raise Refused(
                503,
                "ServiceUnavailable",
                f"the agent of cluster {identity.cluster_name} is not connected;"
                " it reconnects by itself — try again shortly",
            )
        upstream_request = client.build_request(
            request.method,
            internal_target_url(location.address, target),
            headers=_hop_headers(request, target),
            content=_request_body(receive) if has_body else None,
            # watches and followed logs may stay silent for long: no read timeout for them
            timeout=_STREAMING_TIMEOUT if _is_streaming(target) else httpx.USE_CLIENT_DEFAULT,
        )
        try:
            upstream = await client.send(upstream_request, stream=True)
            break
        except httpx.TimeoutException as exc:
            raise Refused(
                504, "Timeout", f"the cluster {identity.cluster_name} did not answer in time"
            ) from exc
        except httpx.TransportError as exc:
            moved = None
            if isinstance(exc, httpx.ConnectError) and not has_body:  # nothing was sent
                moved = await new_session(
                    server.registry, identity.cluster_id, started=started, timeout=timeout, unlike=location
                )
            if moved is None:
                raise Refused(
                    503,
                    "ServiceUnavailable",
                    f"the tunnel server of cluster {identity.cluster_name} cannot be reached;"
                    " try again shortly",
                ) from exc
            location = moved
    headers = [
        (name.lower(), value)
        for name, value in upstream.headers.raw
        if name.lower().decode("latin-1") not in RESPONSE_DROPPED
    ]

    async def relay() -> None:
        await send({"type": "http.response.start", "status": upstream.status_code, "headers": headers})
        async for chunk in upstream.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def client_gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    relay_task = asyncio.create_task(relay())
    gone_task = asyncio.create_task(client_gone())
    try:
        await asyncio.wait({relay_task, gone_task}, return_when=asyncio.FIRST_COMPLETED)
        if relay_task.done():
            relay_task.result()  # a body broken off after the head: the server aborts the connection
            return "completed"
        return "client-went-away"
    finally:
        for task in (relay_task, gone_task):
            task.cancel()
        await asyncio.gather(relay_task, gone_task, return_exceptions=True)
        await upstream.aclose()


# --- WebSocket ----------------------------------------------------------------------------------------


async def _deny(
    request: _Request, send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    request.status = status
    await request.audit(status)
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


async def _serve_websocket(server: TunnelServer, scope: Scope, receive: Receive, send: Send) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    request = _Request(server, scope)
    try:
        target = await _identify(request)
        subprotocols = valid_subprotocols(list(scope.get("subprotocols") or []))
    except Refused as refused:
        body = _status_body(refused.code, refused.message, refused.reason)
        await _deny(request, send, refused.code, [(b"content-type", b"application/json")], body)
        request.log_line("refused")
        return
    except ValueError as exc:
        await _deny(
            request,
            send,
            400,
            [(b"content-type", b"application/json")],
            _status_body(400, str(exc), "BadRequest"),
        )
        request.log_line("refused")
        return
    identity = request.identity
    assert identity is not None

    async def observed(message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            request.status = 101
            await request.audit(101)
        elif kind == "websocket.http.response.start":
            request.status = int(message["status"])
            await request.audit(request.status)
        await send(message)

    live = server.session_for(identity.cluster_id)
    outcome = "completed"
    try:
        if live is not None:
            stream = await _open_stream(
                server,
                _Target(
                    cluster_id=identity.cluster_id,
                    path=target,
                    user=identity.user,
                    groups=identity.groups,
                    live=live,
                ),
                method="GET",
                headers=((SUBPROTOCOL_HEADER, ", ".join(subprotocols)),) if subprotocols else (),
                websocket=True,
            )
            with _counted(server.metrics):
                await _websocket_relay(
                    stream,
                    receive,
                    observed,
                    cluster_id=identity.cluster_id,
                    head_timeout=server.settings.response_head_timeout_seconds,
                    metrics=server.metrics,
                )
        else:
            outcome = await _remote_websocket(server, request, target, subprotocols, receive, observed)
    except Refused as refused:
        body = _status_body(refused.code, refused.message, refused.reason)
        await _deny(request, send, refused.code, [(b"content-type", b"application/json")], body)
        request.log_line("refused")
        return
    request.log_line(outcome)


async def _remote_websocket(
    server: TunnelServer,
    request: _Request,
    target: str,
    subprotocols: list[str],
    receive: Receive,
    send: Send,
) -> str:
    """Another process holds the agent: a WebSocket to its internal endpoint, messages relayed."""
    identity = request.identity
    assert identity is not None
    location = await server.registry.lookup(identity.cluster_id)
    if location is None or location.address == server.internal_url:
        raise Refused(
            503, "ServiceUnavailable", f"the agent of cluster {identity.cluster_name} is not connected"
        )
    headers = _hop_headers(request, target)
    hop_only = [(name, value) for name, value in headers if name == ASSERTION_HEADER]
    try:
        upstream = await connect_kube_websocket(
            internal_target_url(location.address, target, websocket=True),
            additional_headers=hop_only,
            subprotocols=subprotocols,
            compression=None,
            proxy=None,
            open_timeout=WEBSOCKET_OPEN_TIMEOUT_SECONDS,
            max_size=WEBSOCKET_MAX_MESSAGE_BYTES,
            user_agent_header="kaas-tunnel-k8s-proxy",
        )
    except InvalidStatus as exc:  # the other process's or the apiserver's refusal, as it was
        refusal = exc.response
        media_type = refusal.headers.get("content-type", "application/json")
        await _deny(
            request,
            send,
            refusal.status_code,
            [(b"content-type", media_type.encode("latin-1"))],
            bytes(refusal.body or b""),
        )
        return "refused"
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise Refused(
            503,
            "ServiceUnavailable",
            f"the tunnel server of cluster {identity.cluster_name} cannot be reached: {exc}",
        ) from exc
    try:
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
        return await relay_websocket(receive, send, upstream)
    finally:
        await upstream.close()
