"""The tunnel server's INTERNAL HTTP endpoint: the API's k8s proxy sends kubectl requests through it.

Owned by ``kaas_tunnel``; mounted by ``kaas_tunnel.server.TunnelServer`` on its own port (uvicorn in
the same event loop); its stream exchange (``_open_stream``, ``_exchange``, ``_websocket_relay``) is also
what the tunnel server's own k8s proxy (``kaas_tunnel.k8s_proxy``) runs for an agent it holds, and the
other processes' k8s proxies call this endpoint for agents held here. It serves the proxy and nothing
else: the contract, and why the caller's identity and cluster come as one signed assertion instead of path
segments and headers, is in ``kaas_core.internal_hop``::

    {METHOD} /internal/v1/proxy/{k8s path}?{query}
    X-Kaas-Proxy-Assertion: v1.<payload>.<signature>     (cluster, user, groups, method, target, expiry)

The path must be canonical (``agents.tunnel.paths``, 400 otherwise), the assertion must verify for exactly
this method and target (401 otherwise), and the request goes to the session of the cluster the assertion
names, never to one read from the path. The caller's user is sent to the cluster as ``kaas:<name>``.

The request body streams up the tunnel and the cluster's answer (status, headers, body) streams back,
never buffered whole (watches, huge lists). Client-supplied ``Authorization``, ``Impersonate-*``,
``X-Kaas-*``, ``X-Remote-*`` and hop-by-hop headers are dropped here (and again by the agent). Errors are
Kubernetes ``Status`` objects: 400 a non-canonical path, 401 a missing or bad assertion, 503 this process
holds no session of the cluster ("the agent of cluster X is not connected"), 502 the agent refused the dial
(its message), 504 the dial or the response head timed out.

A WebSocket handshake on the same path (kubectl exec, attach, port-forward, from the API's k8s proxy) opens
a stream whose request head says ``websocket``; the agent dials the apiserver's WebSocket and the messages
are relayed (``agents.tunnel.websocket``). The apiserver's refusal of the upgrade comes back as the HTTP
answer to the handshake (the ASGI denial-response extension), with its status and Status body.

``GET /metrics`` serves the server's Prometheus registry (``kaas_tunnel.metrics``) to
``Authorization: Bearer <KAAS_METRICS_TOKEN>`` only, and not at all when no metrics token is set; every
proxied request counts as one stream and its bytes up and down.

Raw ASGI rather than a Starlette endpoint, because the response must watch the client's disconnect while
the body streams: a client that goes away resets the stream at once, also while a watch is idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import Message, Receive, Scope, Send

from agents.tunnel import TunnelError
from agents.tunnel.connection import StreamClosedError, TunnelStream
from agents.tunnel.headers import RESPONSE_HOP_BY_HOP, RESTREAMED, dropped_from_request
from agents.tunnel.http import (
    HttpHeadError,
    HttpRequestHead,
    HttpResponseHead,
    ResponseHeadDecoder,
    encode_request_metadata,
)
from agents.tunnel.kube_status import kube_status
from agents.tunnel.paths import NonCanonicalPath, check_canonical_path, check_canonical_target
from agents.tunnel.websocket import (
    RELAYED_REFUSAL_HEADERS,
    SUBPROTOCOL_HEADER,
    MessageDecoder,
    MessageKind,
    encode_close,
    encode_message,
)
from kaas_core.internal_hop import (
    ASSERTION_HEADER,
    INTERNAL_PROXY_PREFIX,
    InvalidAssertion,
    verify_assertion,
)

if TYPE_CHECKING:
    from kaas_tunnel.metrics import TunnelMetrics
    from kaas_tunnel.server import AgentSession, TunnelServer

_ASSERTION_HEADER = ASSERTION_HEADER.lower().encode("latin-1")
HEALTH_PATH = "/internal/v1/healthz"
METRICS_PATH = "/metrics"
KAAS_USER_PREFIX = "kaas:"
ALLOWED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MAX_REFUSAL_BODY = 64 * 1024  # of an apiserver's refusal of a WebSocket upgrade (a Status object)
WEBSOCKET_CLOSE_SECONDS = 5.0  # how long a closing client waits for the other end's close


async def _status(send: Send, code: int, reason: str, message: str) -> None:
    body = json.dumps(kube_status(code, message, reason=reason)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": code,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _request_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    kept = []
    for name_bytes, value_bytes in raw:
        name = name_bytes.decode("latin-1")
        lower = name.lower()
        if dropped_from_request(lower) or lower in RESTREAMED:
            continue
        kept.append((name, value_bytes.decode("latin-1")))
    return kept


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        lower = name.lower()
        if lower == b"transfer-encoding":
            return True
        if lower == b"content-length":
            return value.strip() not in (b"", b"0")
    return False


class Refused(Exception):
    """A request the internal endpoint answers itself, with a Kubernetes ``Status``."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


@dataclass(frozen=True)
class _Target:
    """Whom a proxied request is for and as whom: what the API's signed assertion says."""

    cluster_id: str
    path: str  # the Kubernetes path with the query
    user: str
    groups: tuple[str, ...]
    live: AgentSession


def _bearer_matches(scope: Scope, expected: bytes) -> bool:
    authorization = next((v for k, v in scope["headers"] if k.lower() == b"authorization"), b"")
    return hmac.compare_digest(authorization, expected)


def _target(server: TunnelServer, scope: Scope, *, methods: frozenset[str] | None = None) -> _Target:
    """The cluster, path and identity of a proxied request and its live session; ``Refused`` otherwise.

    The cluster is the one the API signed for, never one read from the path: the path only says what to
    ask the cluster's apiserver, and must be canonical and exactly the target that was signed.
    """
    raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    if not raw_path.startswith(INTERNAL_PROXY_PREFIX + "/"):
        raise Refused(404, "NotFound", "no such internal endpoint")
    method = scope.get("method", "GET").upper()
    if methods is not None and method not in methods:
        raise Refused(405, "MethodNotAllowed", f"method {method} is not proxied")
    query = scope.get("query_string", b"").decode("latin-1")
    target = raw_path[len(INTERNAL_PROXY_PREFIX) :] + ("?" + query if query else "")
    try:
        check_canonical_path(raw_path)
        check_canonical_target(target)
    except NonCanonicalPath as exc:
        raise Refused(400, "BadRequest", f"refused a non-canonical request path: {exc}") from exc
    value = next((v for k, v in scope["headers"] if k.lower() == _ASSERTION_HEADER), b"")
    try:
        assertion = verify_assertion(
            value.decode("latin-1"), server.assertion_key, method=method, target=target
        )
    except InvalidAssertion as exc:
        raise Refused(401, "Unauthorized", f"the internal endpoint refused the request: {exc}") from exc
    live = server.session_for(assertion.cluster_id)
    if live is None:
        raise Refused(
            503, "ServiceUnavailable", f"the agent of cluster {assertion.cluster_id} is not connected"
        )
    return _Target(
        cluster_id=assertion.cluster_id,
        path=target,
        user=assertion.user,
        groups=assertion.groups,
        live=live,
    )


async def _open_stream(
    server: TunnelServer,
    target: _Target,
    *,
    method: str,
    headers: tuple[tuple[str, str], ...],
    body: bool = False,
    websocket: bool = False,
) -> TunnelStream:
    """DIAL the cluster's agent with the request head; its failures become ``Refused``."""
    cluster_id = target.cluster_id
    try:
        metadata = encode_request_metadata(
            HttpRequestHead(
                method=method,
                path=target.path,
                user=KAAS_USER_PREFIX + target.user,
                groups=target.groups,
                headers=headers,
                body=body,
                websocket=websocket,
            )
        )
        return await target.live.connection.open_stream(
            metadata, timeout=server.settings.dial_timeout_seconds
        )
    except HttpHeadError as exc:
        raise Refused(431, "RequestHeaderFieldsTooLarge", str(exc)) from exc
    except TimeoutError as exc:
        raise Refused(504, "Timeout", f"the agent of cluster {cluster_id} did not answer in time") from exc
    except StreamClosedError as exc:
        raise Refused(502, "BadGateway", f"the agent of cluster {cluster_id} refused: {exc}") from exc
    except TunnelError as exc:
        raise Refused(
            503, "ServiceUnavailable", f"the agent of cluster {cluster_id} is not connected ({exc})"
        ) from exc


@contextlib.contextmanager
def _counted(metrics: TunnelMetrics) -> Iterator[None]:
    """One proxied stream in the metrics, open while the block runs."""
    metrics.streams_opened.inc()
    metrics.streams_open.inc()
    try:
        yield
    finally:
        metrics.streams_open.dec()


async def _read_head(
    stream: TunnelStream, *, cluster_id: str, timeout: float, metrics: TunnelMetrics
) -> tuple[HttpResponseHead, bytes]:
    """The agent's response head and the body bytes that came with it; a failure resets the stream and
    becomes ``Refused`` (504 no head in time, 502 a broken one)."""
    decoder = ResponseHeadDecoder()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while True:
            chunk = await asyncio.wait_for(stream.read(), max(deadline - loop.time(), 0.001))
            metrics.bytes_down.inc(len(chunk))
            if not chunk:
                decoder.end_of_stream()
            result = decoder.feed(chunk)
            if result is not None:
                return result
    except TimeoutError as exc:
        stream.reset("no response head in time")
        raise Refused(504, "Timeout", f"the cluster {cluster_id} did not answer in time") from exc
    except (StreamClosedError, HttpHeadError) as exc:
        stream.reset(f"bad response: {exc}")
        raise Refused(502, "BadGateway", f"the agent of cluster {cluster_id} failed: {exc}") from exc


def internal_app(server: TunnelServer) -> Any:
    """The ASGI app of the internal endpoint, bound to one ``TunnelServer``."""
    settings = server.settings
    metrics_token = settings.metrics_token.get_secret_value() if settings.metrics_token else None

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await websocket_exchange(server, scope, receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] == HEALTH_PATH:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        if scope["path"] == METRICS_PATH and scope["method"] == "GET":
            if metrics_token is None:
                await _status(send, 404, "NotFound", "metrics are served only with KAAS_METRICS_TOKEN set")
                return
            if not _bearer_matches(scope, ("Bearer " + metrics_token).encode()):
                await _status(send, 401, "Unauthorized", "the metrics endpoint needs the metrics token")
                return
            # off the event loop: in the embedded mode the registry also holds the API's database queries
            body = await asyncio.to_thread(generate_latest, server.metrics.registry)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", CONTENT_TYPE_LATEST.encode()),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        raw_headers: list[tuple[bytes, bytes]] = list(scope["headers"])
        has_body = _has_body(raw_headers)
        try:
            target = _target(server, scope, methods=ALLOWED_METHODS)
            stream = await _open_stream(
                server,
                target,
                method=scope["method"].upper(),
                headers=tuple(_request_headers(raw_headers)),
                body=has_body,
            )
        except Refused as refused:
            await _status(send, refused.code, refused.reason, refused.message)
            return
        with _counted(server.metrics):
            await _exchange(
                stream,
                receive,
                send,
                has_body=has_body,
                cluster_id=target.cluster_id,
                head_timeout=settings.response_head_timeout_seconds,
                metrics=server.metrics,
            )

    return app


async def _pump_request(
    stream: TunnelStream,
    receive: Receive,
    *,
    has_body: bool,
    disconnected: asyncio.Event,
    metrics: TunnelMetrics,
) -> None:
    """Send the request body up the stream, then wait for the client to go away."""
    more = has_body
    if not has_body:
        stream.close_write()
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            disconnected.set()
            return
        if more and message["type"] == "http.request":
            body = message.get("body", b"")
            if body:
                await stream.write(body)
                metrics.bytes_up.inc(len(body))
            if not message.get("more_body", False):
                more = False
                stream.close_write()


async def _exchange(
    stream: TunnelStream,
    receive: Receive,
    send: Send,
    *,
    has_body: bool,
    cluster_id: str,
    head_timeout: float,
    metrics: TunnelMetrics,
) -> bool:
    """Relay one exchange; True when the answer went out whole, False when the client went away first."""
    disconnected = asyncio.Event()
    pump = asyncio.create_task(
        _pump_request(stream, receive, has_body=has_body, disconnected=disconnected, metrics=metrics)
    )
    relay = asyncio.create_task(
        _relay_response(stream, send, cluster_id=cluster_id, head_timeout=head_timeout, metrics=metrics)
    )
    gone = asyncio.create_task(disconnected.wait())
    finished = False
    try:
        await asyncio.wait({relay, gone}, return_when=asyncio.FIRST_COMPLETED)
        if relay.done():
            relay.result()
            finished = True
    finally:
        for task in (pump, relay, gone):
            task.cancel()
        await asyncio.gather(pump, relay, gone, return_exceptions=True)
        if not finished:
            stream.reset("the kaas client went away")
    return finished


async def _relay_response(
    stream: TunnelStream, send: Send, *, cluster_id: str, head_timeout: float, metrics: TunnelMetrics
) -> None:
    try:
        head, rest = await _read_head(stream, cluster_id=cluster_id, timeout=head_timeout, metrics=metrics)
    except Refused as refused:
        await _status(send, refused.code, refused.reason, refused.message)
        return
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in head.headers
        if name.lower() not in RESPONSE_HOP_BY_HOP
    ]
    await send({"type": "http.response.start", "status": head.status, "headers": headers})
    if rest:
        await send({"type": "http.response.body", "body": rest, "more_body": True})
    try:
        while chunk := await stream.read():
            metrics.bytes_down.inc(len(chunk))
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except StreamClosedError:
        # The body broke off after the head went out: the only honest signal left is an aborted response
        # (raising makes the server drop the connection instead of ending the body cleanly).
        raise
    await send({"type": "http.response.body", "body": b"", "more_body": False})


# --- WebSocket upgrades -----------------------------------------------------------------------------------


async def _deny(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """Answer a WebSocket handshake with a plain HTTP response (the ASGI denial-response extension)."""
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


async def _deny_status(send: Send, code: int, reason: str, message: str) -> None:
    body = json.dumps(kube_status(code, message, reason=reason)).encode()
    await _deny(send, code, [(b"content-type", b"application/json")], body)


async def websocket_exchange(server: TunnelServer, scope: Scope, receive: Receive, send: Send) -> None:
    """One WebSocket from the API's k8s proxy, carried to the cluster's apiserver by its agent."""
    settings = server.settings
    if (await receive())["type"] != "websocket.connect":
        return
    subprotocols: list[str] = list(scope.get("subprotocols") or [])
    try:
        target = _target(server, scope)
        stream = await _open_stream(
            server,
            target,
            method="GET",
            headers=((SUBPROTOCOL_HEADER, ", ".join(subprotocols)),) if subprotocols else (),
            websocket=True,
        )
    except Refused as refused:
        await _deny_status(send, refused.code, refused.reason, refused.message)
        return
    with _counted(server.metrics):
        await _websocket_relay(
            stream,
            receive,
            send,
            cluster_id=target.cluster_id,
            head_timeout=settings.response_head_timeout_seconds,
            metrics=server.metrics,
        )


async def _websocket_relay(
    stream: TunnelStream,
    receive: Receive,
    send: Send,
    *,
    cluster_id: str,
    head_timeout: float,
    metrics: TunnelMetrics,
) -> None:
    try:
        head, rest = await _read_head(stream, cluster_id=cluster_id, timeout=head_timeout, metrics=metrics)
    except Refused as refused:
        await _deny_status(send, refused.code, refused.reason, refused.message)
        return
    if head.status != 101:  # the apiserver refused the upgrade: its answer, as it was
        body = bytearray(rest)
        with contextlib.suppress(StreamClosedError):
            while len(body) < MAX_REFUSAL_BODY and (chunk := await stream.read()):
                body += chunk
        headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in head.headers
            if name.lower() in RELAYED_REFUSAL_HEADERS
        ]
        await _deny(send, head.status, headers, bytes(body[:MAX_REFUSAL_BODY]))
        stream.close_write()
        return
    chosen = next((v for n, v in head.headers if n.lower() == SUBPROTOCOL_HEADER.lower()), None)
    await send({"type": "websocket.accept", "subprotocol": chosen})
    decoder = MessageDecoder()

    async def down() -> None:  # agent → API; bytes counted as read off the stream, as for HTTP
        pending = rest  # counted with the head
        while True:
            for message in decoder.feed(pending):
                if message.kind is MessageKind.CLOSE:
                    await send(
                        {
                            "type": "websocket.close",
                            "code": message.close_code,
                            "reason": message.close_reason,
                        }
                    )
                    return
                if message.kind is MessageKind.TEXT:
                    await send(
                        {"type": "websocket.send", "text": message.payload.decode("utf-8", errors="replace")}
                    )
                else:
                    await send({"type": "websocket.send", "bytes": message.payload})
            pending = await stream.read()
            metrics.bytes_down.inc(len(pending))
            if not pending:
                await send({"type": "websocket.close", "code": 1011, "reason": "the agent ended the stream"})
                return

    async def up() -> None:  # API → agent
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                await stream.write(
                    encode_close(message.get("code", 1000) or 1000, message.get("reason") or "")
                )
                stream.close_write()
                return
            if message["type"] != "websocket.receive":
                continue
            if message.get("bytes") is not None:
                payload = message["bytes"]
                await stream.write(encode_message(MessageKind.BINARY, payload))
            else:
                payload = (message.get("text") or "").encode()
                await stream.write(encode_message(MessageKind.TEXT, payload))
            metrics.bytes_up.inc(len(payload))

    downward = asyncio.create_task(down())
    upward = asyncio.create_task(up())
    try:
        done, _ = await asyncio.wait({downward, upward}, return_when=asyncio.FIRST_COMPLETED)
        if upward in done and upward.exception() is None:
            await asyncio.wait({downward}, timeout=WEBSOCKET_CLOSE_SECONDS)  # the close comes back
        for task in done:
            error = task.exception()
            if error is not None and not isinstance(error, StreamClosedError):
                stream.reset(f"the WebSocket relay failed: {error}")
    finally:
        for task in (downward, upward):
            task.cancel()
        await asyncio.gather(downward, upward, return_exceptions=True)
