"""The tunnel server's INTERNAL HTTP endpoint: the API's k8s proxy sends kubectl requests through it.

Owned by ``provider.tunnel``; mounted by ``provider.tunnel.server.TunnelServer`` on its own port (uvicorn in
the same event loop). Contract::

    {METHOD} /internal/v1/clusters/{cluster_id}/proxy/{k8s path}?{query}
    Authorization: Bearer <TunnelSettings.internal_secret>
    X-Kaas-User: <kaas user name>          (sent to the cluster as "kaas:<name>")
    X-Kaas-Group: <group>                  (one header per group, e.g. kaas:authenticated, kaas:member)

The request body streams up the tunnel and the cluster's answer (status, headers, body) streams back,
never buffered whole (watches, huge lists). Client-supplied ``Authorization``, ``Impersonate-*``,
``X-Kaas-*``, ``X-Remote-*`` and hop-by-hop headers are dropped here (and again by the agent). Errors are
Kubernetes ``Status`` objects: 401 bad internal secret, 400 no user, 503 this process holds no session of
the cluster ("the agent of cluster X is not connected"), 502 the agent refused the dial (its message),
504 the dial or the response head timed out.

A WebSocket handshake on the same path (kubectl exec, attach, port-forward, from the API's k8s proxy) opens
a stream whose request head says ``websocket``; the agent dials the apiserver's WebSocket and the messages
are relayed (``agents.tunnel.websocket``). The apiserver's refusal of the upgrade comes back as the HTTP
answer to the handshake (the ASGI denial-response extension), with its status and Status body.

``GET /metrics`` (same ``Authorization``) serves the server's Prometheus registry
(``provider.tunnel.metrics``); every proxied request counts as one stream and its bytes up and down.

Raw ASGI rather than a Starlette endpoint, because the response must watch the client's disconnect while
the body streams: a client that goes away resets the stream at once, also while a watch is idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import Message, Receive, Scope, Send

from agents.forward import kube_status
from agents.runtime import StreamClosedError, TunnelStream
from agents.tunnel import TunnelError
from agents.tunnel.http import (
    HttpHeadError,
    HttpRequestHead,
    HttpResponseHead,
    ResponseHeadDecoder,
    encode_request_metadata,
)
from agents.tunnel.websocket import (
    RELAYED_REFUSAL_HEADERS,
    SUBPROTOCOL_HEADER,
    MessageDecoder,
    MessageKind,
    encode_close,
    encode_message,
)

if TYPE_CHECKING:
    from provider.tunnel.metrics import TunnelMetrics
    from provider.tunnel.server import AgentSession, TunnelServer

PROXY_PATH = re.compile(rb"^/internal/v1/clusters/(?P<cluster>[A-Za-z0-9._-]{1,64})/proxy(?P<path>/.*)?$")
HEALTH_PATH = "/internal/v1/healthz"
METRICS_PATH = "/metrics"
KAAS_USER_PREFIX = "kaas:"
ALLOWED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "authorization",
    }
)
DROPPED_PREFIXES = ("impersonate-", "x-kaas-", "x-remote-", "proxy-")
MAX_REFUSAL_BODY = 64 * 1024  # of an apiserver's refusal of a WebSocket upgrade (a Status object)
WEBSOCKET_CLOSE_SECONDS = 5.0  # how long a closing client waits for the other end's close
RESPONSE_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "te", "trailer", "trailers", "transfer-encoding", "upgrade"}
)


async def _status(send: Send, code: int, reason: str, message: str) -> None:
    body = json.dumps(kube_status(code, reason, message)).encode()
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
        if lower in HOP_BY_HOP or lower.startswith(DROPPED_PREFIXES):
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
    """Whom a proxied request is for and as whom, from its path and the API's headers."""

    cluster_id: str
    path: str  # the Kubernetes path with the query
    user: str
    groups: tuple[str, ...]
    live: AgentSession


def _authorized(scope: Scope, expected: bytes) -> bool:
    authorization = next((v for k, v in scope["headers"] if k.lower() == b"authorization"), b"")
    return hmac.compare_digest(authorization, expected)


def _target(server: TunnelServer, scope: Scope, *, methods: frozenset[str] | None = None) -> _Target:
    """The cluster, path and identity of a proxied request and its live session; ``Refused`` otherwise."""
    match = PROXY_PATH.match(scope.get("raw_path") or scope["path"].encode())
    if match is None:
        raise Refused(404, "NotFound", "no such internal endpoint")
    method = scope.get("method", "GET").upper()
    if methods is not None and method not in methods:
        raise Refused(405, "MethodNotAllowed", f"method {method} is not proxied")
    cluster_id = match.group("cluster").decode()
    raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
    user = next((v.decode("latin-1") for k, v in raw_headers if k.lower() == b"x-kaas-user"), "").strip()
    groups = tuple(v.decode("latin-1").strip() for k, v in raw_headers if k.lower() == b"x-kaas-group")
    if not user:
        raise Refused(400, "BadRequest", "X-Kaas-User is required")
    path = (match.group("path") or b"/").decode("latin-1")
    if scope.get("query_string"):
        path += "?" + scope["query_string"].decode("latin-1")
    live = server.session_for(cluster_id)
    if live is None:
        raise Refused(503, "ServiceUnavailable", f"the agent of cluster {cluster_id} is not connected")
    return _Target(cluster_id=cluster_id, path=path, user=user, groups=groups, live=live)


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
    expected = ("Bearer " + settings.internal_secret.get_secret_value()).encode()

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
        if not _authorized(scope, expected):
            await _status(send, 401, "Unauthorized", "the internal tunnel endpoint needs the internal secret")
            return
        if scope["path"] == METRICS_PATH and scope["method"] == "GET":
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
) -> None:
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
    body = json.dumps(kube_status(code, reason, message)).encode()
    await _deny(send, code, [(b"content-type", b"application/json")], body)


async def websocket_exchange(server: TunnelServer, scope: Scope, receive: Receive, send: Send) -> None:
    """One WebSocket from the API's k8s proxy, carried to the cluster's apiserver by its agent."""
    settings = server.settings
    expected = ("Bearer " + settings.internal_secret.get_secret_value()).encode()
    if (await receive())["type"] != "websocket.connect":
        return
    subprotocols: list[str] = list(scope.get("subprotocols") or [])
    try:
        if not _authorized(scope, expected):
            raise Refused(401, "Unauthorized", "the internal tunnel endpoint needs the internal secret")
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
