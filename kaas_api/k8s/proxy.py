"""The k8s proxy endpoint: ``/k8s/clusters/{cluster_id}/{path}``, every method, streamed both ways.

Owned by ``kaas_api.k8s``; ``create_app`` includes ``router`` and stores a ``K8sProxyContext`` on
``app.state.kaas_k8s``. A request is authenticated and authorized (``kaas_api.k8s.access``), its cluster's
live agent session is looked up in the ``TunnelRegistry``, and the request goes to that tunnel server's
internal endpoint with a signed assertion of the authorized cluster and caller
(``kaas_core.internal_hop`` holds that contract and why it is signed).

A path that is not canonical (``agents.tunnel.paths``: dot segments, escaped separators, ``;``...) is refused
with 400 before anything else, and audited whatever its method: it is how a traversal would be tried.

Nothing is buffered whole: the request body is handed to httpx as the client's stream, the answer is relayed
chunk by chunk (``aiter_raw``: gzip stays gzip), so watches and huge lists flow; a client that goes away
closes the upstream at once, also while a watch is idle. The caller's ``Authorization``, ``Impersonate-*``
and ``X-Kaas-*`` headers never go upstream. Every failure is a Kubernetes ``Status`` so kubectl prints it.
WebSocket upgrades (kubectl exec, attach, port-forward: ``v5.channel.k8s.io`` and friends) are proxied by
``proxy_websocket``: the same authentication and authorization, then a WebSocket to the tunnel server, whose
agent dials the apiserver's; messages are relayed, and the apiserver's refusal (RBAC) is the handshake's
answer. SPDY upgrades (kubectl before 1.30, or its retry after a refused WebSocket) go to the cluster as a
plain request: its refusal (401, 403, 404) is relayed, anything else answers 501.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi import Path as PathParam
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send
from websockets.exceptions import InvalidHandshake, InvalidStatus

from agents.tunnel.headers import RESPONSE_HOP_BY_HOP, dropped_from_request
from agents.tunnel.kube_status import kube_status
from agents.tunnel.paths import NonCanonicalPath, check_canonical_path, check_canonical_target
from agents.tunnel.ws_client import connect_kube_websocket, valid_subprotocols
from kaas_api.audit.middleware import add_audit_detail, audit_this_request, set_actor
from kaas_api.deps import AppContext
from kaas_api.errors import KaasError
from kaas_api.k8s.access import ProxyIdentity, as_kaas_error
from kaas_api.k8s.status import KubeStatusError
from kaas_api.schemas import KubeStatus
from kaas_core.agent_presence import disconnected_recently, new_session
from kaas_core.cluster_access import AccessRefused
from kaas_core.credential_cache import CredentialCache
from kaas_core.internal_hop import (
    ASSERTION_HEADER,
    INTERNAL_HOP_LIMITS,
    ProxyAssertion,
    internal_target_url,
)
from kaas_core.tunnel_registry import SessionLocation, TunnelRegistry
from kaas_core.websocket_relay import relay_websocket

log = logging.getLogger(__name__)

PROXY_PREFIX = "/k8s/clusters"
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
SPDY_UNSUPPORTED = (
    "SPDY connection upgrades are not supported through kaas: exec, attach and port-forward work over"
    " WebSockets (kubectl 1.30 and newer use them by default)"
)
# Date and Server are this server's own (uvicorn writes them): relaying the cluster's too would send each
# twice, which some clients reject
RESPONSE_DROPPED = RESPONSE_HOP_BY_HOP | {"date", "server"}


@dataclass(frozen=True)
class K8sProxyContext:
    """What the proxy needs besides the database: where sessions live and how to talk to tunnel servers."""

    registry: TunnelRegistry
    assertion_key: bytes = field(repr=False)  # signs the internal hop (kaas_core.internal_hop)
    credentials: CredentialCache = field(repr=False)  # who may reach which cluster, remembered briefly
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 120.0  # per read; watches and log follows have none
    _clients: dict[int, tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def client(self) -> httpx.AsyncClient:
        """The HTTP client to the tunnel servers, one per event loop, kept for the process's lifetime.

        Shared rather than made per request: building an ``httpx.AsyncClient`` loads the CA bundle (tens of
        milliseconds of CPU), and a shared pool keeps connections to the tunnel servers alive.
        """
        loop = asyncio.get_running_loop()
        held = self._clients.get(id(loop))
        if held is not None and held[0] is loop:
            return held[1]
        client = httpx.AsyncClient(trust_env=False, limits=INTERNAL_HOP_LIMITS)
        self._clients[id(loop)] = (loop, client)
        return client


async def get_proxy_context(request: Request) -> K8sProxyContext:
    context: K8sProxyContext = request.app.state.kaas_k8s
    return context


class NonCanonicalRequest(KaasError):
    """A proxied path some parser could read differently: refused before authentication or routing."""

    status_code = 400
    error = "bad_request"


def canonical_target(connection: HTTPConnection) -> str:
    """The Kubernetes target (path after the cluster id, plus the query) of a request, as it was sent.

    The whole raw path is checked, the ``/k8s/clusters/{id}`` prefix included: the router has already
    split it once, and a dot segment or escaped separator anywhere means another parser may split it
    differently. ``NonCanonicalRequest`` names the rule broken.
    """
    scope = connection.scope
    raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    query = scope.get("query_string", b"").decode("latin-1")
    try:
        check_canonical_path(raw_path)
        cluster_id = scope.get("path_params", {}).get("cluster_id", "")
        prefix = f"{PROXY_PREFIX}/{cluster_id}"
        if not raw_path.startswith(prefix + "/"):
            # the id was written escaped (the router decoded it): not the form kaas hands out
            raise NonCanonicalPath("the cluster id must be written as kaas gives it")
        target = raw_path[len(prefix) :] + ("?" + query if query else "")
        return check_canonical_target(target)
    except NonCanonicalPath as exc:
        raise NonCanonicalRequest(f"refused a non-canonical request path: {exc}") from exc


async def identify(connection: HTTPConnection, cluster_id: str) -> tuple[ProxyIdentity, str]:
    """Who is calling (a request or a WebSocket handshake) and the target they ask for; the caller is
    recorded as the audit actor. A refusal is logged, audited (a non-canonical path whatever the method)
    and raised as the ``KaasError`` it is.

    The path is checked first, before the token or the database: a traversal attempt is refused the same
    way whoever sends it. Not the ``Uow`` dependency of ``/v1``: that costs a worker-thread hop to open the
    session, one to run the check and one to commit. kubectl sends many small requests, so here it is at
    most one, and none while the answer is remembered (``kaas_core.credential_cache``, shared with the
    tunnel server's k8s proxy).
    """
    context: K8sProxyContext = connection.app.state.kaas_k8s
    try:
        target = canonical_target(connection)
        try:
            identity = await context.credentials.authorize(
                connection.headers.get("authorization"), cluster_id
            )
        except AccessRefused as refused:
            raise as_kaas_error(refused) from refused
    except KaasError as exc:
        if isinstance(exc, NonCanonicalRequest):
            audit_this_request(connection)
        add_audit_detail(connection, reason=exc.message)
        log.info(
            "k8s-proxy denied cluster=%s method=%s path=%s status=%d reason=%r",
            cluster_id[:64],
            connection.scope.get("method", "WEBSOCKET"),
            connection.url.path[:256],
            exc.status_code,
            exc.message,
        )
        raise
    set_actor(connection, user_id=None, user_name=identity.user)
    return identity, target


async def get_identity(request: Request, cluster_id: str) -> tuple[ProxyIdentity, str]:
    """``identify`` as a dependency of the HTTP routes: refusals become ``Status`` errors."""
    try:
        return await identify(request, cluster_id)
    except KaasError as exc:
        raise KubeStatusError.from_domain(exc) from exc


def not_connected(identity: ProxyIdentity) -> str:
    return (
        f"the agent of cluster {identity.cluster_name} is not connected; "
        "it reconnects by itself — try again shortly"
    )


def hop_headers(identity: ProxyIdentity, target: str, *, method: str, key: bytes) -> list[tuple[str, str]]:
    """What the tunnel server needs besides the request: the signed assertion of whom it is for."""
    assertion = ProxyAssertion.issue(
        cluster_id=identity.cluster_id,
        user=identity.user,
        groups=identity.groups,
        method=method,
        target=target,
        now=time.time(),
    )
    return [(ASSERTION_HEADER, assertion.sign(key))]


Identity = Annotated[tuple[ProxyIdentity, str], Depends(get_identity)]
ProxyContext = Annotated[K8sProxyContext, Depends(get_proxy_context)]

router = APIRouter(tags=["k8s"])


def _is_streaming(query: str, k8s_path: str) -> bool:
    """Watches and log follows may stay silent for long: no read timeout for them."""
    params = {part.partition("=")[0]: part.partition("=")[2] for part in query.split("&") if part}
    if params.get("watch") in ("true", "1") or params.get("follow") in ("true", "1"):
        return True
    return "/watch/" in k8s_path


def upstream_headers(
    request: Request, identity: ProxyIdentity, target: str, *, key: bytes
) -> list[tuple[str, str]]:
    """The caller's headers minus credentials, impersonation and hop-by-hop ones, plus the assertion."""
    kept: list[tuple[str, str]] = []
    for name_bytes, value_bytes in request.scope["headers"]:
        name = name_bytes.decode("latin-1")
        lower = name.lower()
        if dropped_from_request(lower):
            continue
        kept.append((name, value_bytes.decode("latin-1")))
    return kept + hop_headers(identity, target, method=request.method, key=key)


def _has_body(request: Request) -> bool:
    if "transfer-encoding" in request.headers:
        return True
    return request.headers.get("content-length", "0").strip() not in ("", "0")


async def proxy(
    cluster_id: str, path: ProxiedPath, request: Request, identified: Identity, context: ProxyContext
) -> Response:
    """Forward a Kubernetes API request to the cluster as the caller, impersonated with their role."""
    identity, target = identified
    # A WebSocket upgrade is routed to ``proxy_websocket``; an upgrade arriving here is SPDY (old kubectl,
    # or its retry after a refused WebSocket). It goes to the cluster as a plain request (hop-by-hop headers
    # never go upstream), so that the cluster's refusal, when it refuses (RBAC), is what kubectl prints.
    spdy_upgrade = "upgrade" in request.headers
    location = await context.registry.lookup(cluster_id)
    if location is None and not _has_body(request):
        location = await _returning_session(request, context, cluster_id)
    if location is None:
        raise KubeStatusError(503, not_connected(identity))
    k8s_path = target.partition("?")[0]
    streaming = _is_streaming(request.scope.get("query_string", b"").decode("latin-1"), k8s_path)
    read_timeout = None if streaming else context.read_timeout_seconds
    client = context.client()
    has_body = _has_body(request)
    started = time.monotonic()
    try:
        while True:
            outgoing = client.build_request(
                request.method,
                internal_target_url(location.address, target),
                headers=upstream_headers(request, identity, target, key=context.assertion_key),
                content=request.stream() if has_body else None,
                timeout=httpx.Timeout(
                    connect=context.connect_timeout_seconds,
                    read=read_timeout,
                    write=context.read_timeout_seconds,
                    pool=context.connect_timeout_seconds,
                ),
            )
            try:
                upstream = await client.send(outgoing, stream=True)
                break
            except httpx.ConnectError:
                # Nothing was sent. The tunnel process the registry names is gone (killed, restarted):
                # its claim outlives it until the agent's new session, on a live process, replaces it,
                # which the agent dials at once. A request without a body waits for that, within the
                # connect timeout; a body may have been read from the client already.
                moved = (
                    None
                    if has_body
                    else await new_session(
                        context.registry,
                        cluster_id,
                        started=started,
                        timeout=context.connect_timeout_seconds,
                        unlike=location,
                    )
                )
                if moved is None:
                    raise
                location = moved
    except httpx.TimeoutException as exc:
        _log(identity, request, k8s_path, status=504, sent=0, started=started, outcome="timeout")
        raise KubeStatusError(504, f"the cluster {identity.cluster_name} did not answer in time") from exc
    except httpx.TransportError as exc:
        _log(identity, request, k8s_path, status=503, sent=0, started=started, outcome="unreachable")
        raise KubeStatusError(
            503,
            f"the tunnel server of cluster {identity.cluster_name} cannot be reached; try again shortly",
        ) from exc
    if spdy_upgrade and upstream.status_code not in (401, 403, 404):
        await upstream.aclose()
        _log(identity, request, k8s_path, status=501, sent=0, started=started, outcome="spdy-refused")
        raise KubeStatusError(501, SPDY_UNSUPPORTED)
    return UpstreamResponse(
        upstream,
        on_done=lambda sent, outcome: _log(
            identity,
            request,
            k8s_path,
            status=upstream.status_code,
            sent=sent,
            started=started,
            outcome=outcome,
        ),
    )


async def _returning_session(
    request: Request, context: K8sProxyContext, cluster_id: str
) -> SessionLocation | None:
    """No session in the registry: when the agent was connected a moment ago, a request without a body waits
    for its new session within the connect timeout (``kaas_core.agent_presence``); an agent that has been
    away answers 503 at once. Only this path reads the database."""
    app_context: AppContext = request.app.state.kaas
    if not await run_in_threadpool(disconnected_recently, app_context.session_factory, cluster_id):
        return None
    return await new_session(
        context.registry, cluster_id, started=time.monotonic(), timeout=context.connect_timeout_seconds
    )


# What a segment may hold, as the OpenAPI document states it: no control character, '\\', ';', '%', '?' or
# '#', and not "." or ".." (a client that escapes those sends %2E, which is refused). Schema generators send
# the parameter as one escaped segment; the description says how real paths (several segments) are read.
_PATH_CHAR = r"[^\x00-\x1f\x7f\\;%?#]"
_PATH_START = r"[^./\x00-\x1f\x7f\\;%?#]"
PROXIED_PATH_PATTERN = rf"^(?:{_PATH_START}|\.{_PATH_START}|\.\.[^/\x00-\x1f\x7f\\;%?#]){_PATH_CHAR}*$"
ProxiedPath = Annotated[
    str,
    PathParam(
        description="The Kubernetes API path after the cluster id, e.g. `api/v1/namespaces`, sent as it is:"
        " segments separated by `/`, none empty, `.` or `..`; no `;`, `\\`, control characters, and no"
        " escape of `/`, `\\`, `.`, `;`, `%` or a control character (`agents.tunnel.paths`). Anything"
        " else is refused with 400 before the token is read.",
        json_schema_extra={"pattern": PROXIED_PATH_PATTERN},
    ),
]


# What kaas itself answers, as a Status; anything else is the cluster's own answer, relayed as it came.
PROXY_RESPONSES: dict[int | str, dict[str, Any]] = {
    "default": {"description": "The cluster's apiserver's answer, relayed as it is (an object or a Status)."},
    400: {
        "model": KubeStatus,
        "description": "A request path that is not canonical (see the `path` parameter): refused before the"
        " token is read, whatever the method.",
    },
    413: {"model": KubeStatus, "description": "A request body over the proxy's cap."},
    401: {"model": KubeStatus, "description": "No token, or an unknown, expired or revoked one."},
    404: {"model": KubeStatus, "description": "No such cluster, or one the caller is not a member of."},
    501: {"model": KubeStatus, "description": "A SPDY upgrade: exec, attach, port-forward use WebSockets."},
    503: {
        "model": KubeStatus,
        "description": "The cluster's agent is not connected (yet: a new cluster's connects once its "
        "nodes boot), or its tunnel server cannot be reached; retry shortly.",
    },
    504: {"model": KubeStatus, "description": "The cluster did not answer in time."},
}

for _method in METHODS:  # one route per method: OpenAPI wants one operation id each
    router.add_api_route(
        PROXY_PREFIX + "/{cluster_id}/{path:path}",
        proxy,
        methods=[_method],
        response_class=Response,
        operation_id=f"k8s_proxy_{_method.lower()}",
        summary="The Kubernetes API of a cluster (kubectl's server; use the downloaded kubeconfig)",
        responses=PROXY_RESPONSES,
    )


def _log(
    identity: ProxyIdentity,
    connection: HTTPConnection,
    k8s_path: str,
    *,
    status: int,
    sent: int,
    started: float,
    outcome: str,
) -> None:
    """One audit line per request or WebSocket (method WEBSOCKET): who, which cluster, what, the answer.
    Never a token. ``bytes`` is the HTTP body relayed; a WebSocket's messages are not counted here."""
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
        connection.scope.get("method", "WEBSOCKET"),
        k8s_path[:512],
        status,
        sent,
        int((time.monotonic() - started) * 1000),
        outcome,
    )


class UpstreamResponse(Response):
    """Relays an httpx streamed response; watches the client's disconnect while the body flows.

    A raw ASGI ``__call__`` rather than ``StreamingResponse``: on ASGI 2.4 servers Starlette only notices a
    gone client when a write fails, which an idle watch never does.
    """

    def __init__(
        self,
        upstream: httpx.Response,
        *,
        on_done: Any,
    ) -> None:
        super().__init__(status_code=upstream.status_code)
        self._upstream = upstream
        self._on_done = on_done
        # raw bytes go through (aiter_raw), so a Content-Length still matches the body
        self.raw_headers = [
            (name.lower(), value)
            for name, value in upstream.headers.raw
            if name.lower().decode("latin-1") not in RESPONSE_DROPPED
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent = 0
        outcome = "completed"

        async def relay() -> None:
            nonlocal sent
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            async for chunk in self._upstream.aiter_raw():
                sent += len(chunk)
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
                exc = relay_task.exception()
                if exc is not None:
                    outcome = "upstream-broke"
                    # the head is out: aborting the connection is the only honest signal left
                    raise exc
            else:
                outcome = "client-went-away"
        finally:
            for task in (relay_task, gone_task):
                task.cancel()
            await asyncio.gather(relay_task, gone_task, return_exceptions=True)
            await self._upstream.aclose()  # an unfinished body closes its connection instead of pooling it
            self._on_done(sent, outcome)


# --- WebSocket upgrades: kubectl exec, attach, port-forward -------------------------------------------------

WEBSOCKET_OPEN_TIMEOUT_SECONDS = 15.0
WEBSOCKET_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


async def _deny(websocket: WebSocket, status: int, message: str) -> None:
    """The handshake's answer is a plain HTTP ``Status``, as for any other proxy error."""
    body = json.dumps(kube_status(status, message)).encode()
    await websocket.send_denial_response(
        Response(content=body, status_code=status, media_type="application/json")
    )


async def proxy_websocket(websocket: WebSocket, cluster_id: str, path: str) -> None:
    """Carry a kubectl WebSocket (exec, attach, port-forward) to the cluster as the caller."""
    context: K8sProxyContext = websocket.app.state.kaas_k8s
    try:
        identity, target = await identify(websocket, cluster_id)
    except KaasError as exc:
        await _deny(websocket, exc.status_code, exc.message)
        return
    try:
        subprotocols = valid_subprotocols(list(websocket.scope.get("subprotocols") or []))
    except ValueError as exc:
        await _deny(websocket, 400, str(exc))
        return
    location = await context.registry.lookup(cluster_id)
    if location is None:
        await _deny(websocket, 503, not_connected(identity))
        return
    k8s_path = target.partition("?")[0]
    url = internal_target_url(location.address, target, websocket=True)
    headers = hop_headers(identity, target, method="GET", key=context.assertion_key)
    started = time.monotonic()
    try:
        upstream = await connect_kube_websocket(
            url,
            additional_headers=headers,
            subprotocols=subprotocols,
            compression=None,
            proxy=None,
            open_timeout=WEBSOCKET_OPEN_TIMEOUT_SECONDS,
            max_size=WEBSOCKET_MAX_MESSAGE_BYTES,
            user_agent_header="kaas-k8s-proxy",
        )
    except InvalidStatus as exc:  # the tunnel server's or the apiserver's refusal: pass it on as it was
        refusal = exc.response
        media_type = refusal.headers.get("content-type", "application/json")
        await websocket.send_denial_response(
            Response(
                content=bytes(refusal.body or b""), status_code=refusal.status_code, media_type=media_type
            )
        )
        _log(
            identity,
            websocket,
            k8s_path,
            status=refusal.status_code,
            sent=0,
            started=started,
            outcome="refused",
        )
        return
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        await _deny(
            websocket, 503, f"the tunnel server of cluster {identity.cluster_name} cannot be reached: {exc}"
        )
        _log(identity, websocket, k8s_path, status=503, sent=0, started=started, outcome="unreachable")
        return
    outcome = "completed"
    try:
        await websocket.accept(subprotocol=upstream.subprotocol)
        outcome = await relay_websocket(websocket.receive, websocket.send, upstream)
    finally:
        await upstream.close()
        _log(identity, websocket, k8s_path, status=101, sent=0, started=started, outcome=outcome)


router.add_api_websocket_route(PROXY_PREFIX + "/{cluster_id}/{path:path}", proxy_websocket)
