"""The agent's half of a tunnelled WebSocket (kubectl exec, attach, port-forward): dial the apiserver's
WebSocket as the kaas user, then relay messages between it and the tunnel stream.

Owned by ``agents``; called by ``agents.runtime`` for a DIAL whose request head says ``websocket``. The
framing on the stream is ``agents.tunnel.websocket``'s. As for plain requests, the agent dials only its
own apiserver, with its own credentials and ``Impersonate-User``/``Impersonate-Group`` for the kaas user;
of the client's headers only the requested subprotocols go on (never its Authorization or Impersonate-*).
The apiserver's refusal of the upgrade (401, 403, 404: RBAC decides who may exec) is relayed as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from agents.forward import (
    ApiserverForwarder,
    InvalidForwardRequest,
    validate_target,
)
from agents.tunnel.connection import StreamClosedError, TunnelStream
from agents.tunnel.http import HttpRequestHead, encode_response_head
from agents.tunnel.kube_status import kube_status
from agents.tunnel.websocket import (
    DEFAULT_MAX_MESSAGE_BYTES,
    RELAYED_REFUSAL_HEADERS,
    SUBPROTOCOL_HEADER,
    MessageDecoder,
    MessageKind,
    WebSocketRelayError,
    encode_close,
    encode_message,
    parse_subprotocols,
)
from agents.tunnel.ws_client import connect_kube_websocket

logger = logging.getLogger(__name__)

OPEN_TIMEOUT_SECONDS = 10.0
CLOSE_TIMEOUT_SECONDS = 5.0
_RESERVED_CLOSE_CODES = frozenset({1005, 1006, 1015})  # may be reported, never sent


def _sendable_close_code(code: int | None) -> int:
    if code is None or code < 1000 or code in _RESERVED_CLOSE_CODES or code >= 5000:
        return 1000
    return code


async def _answer(stream: TunnelStream, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    await stream.write(encode_response_head(status, [*headers, ("content-length", str(len(body)))]))
    if body:
        await stream.write(body)
    stream.close_write()


async def _refuse(stream: TunnelStream, status: int, reason: str, message: str) -> None:
    body = json.dumps(kube_status(status, message, reason=reason)).encode()
    await _answer(stream, status, [("content-type", "application/json")], body)


def websocket_url(base_url: str, target: str) -> str:
    """``https://host:6443`` + ``/api/...`` → ``wss://host:6443/api/...`` (``http`` → ``ws``)."""
    if base_url.startswith("https://"):
        return "wss://" + base_url.removeprefix("https://") + target
    return "ws://" + base_url.removeprefix("http://") + target


async def serve_websocket(forwarder: ApiserverForwarder, stream: TunnelStream, head: HttpRequestHead) -> None:
    """Answer one tunnelled WebSocket upgrade; the stream is accepted and is always closed at the end."""
    try:
        target = validate_target(head.path)
        headers = forwarder.identity_headers(head.user, head.groups)
    except InvalidForwardRequest as exc:
        await _refuse(stream, exc.status, exc.reason, str(exc))
        return
    subprotocols = parse_subprotocols(v for n, v in head.headers if n.lower() == SUBPROTOCOL_HEADER.lower())
    apiserver = forwarder.connection
    url = websocket_url(apiserver.base_url, target)
    try:
        upstream = await connect_kube_websocket(
            url,
            additional_headers=headers,
            subprotocols=subprotocols,
            ssl=apiserver.ssl_context if url.startswith("wss://") else None,
            compression=None,
            proxy=None,  # never an HTTPS_PROXY: only the apiserver
            user_agent_header="kaas-agent",
            open_timeout=OPEN_TIMEOUT_SECONDS,
            close_timeout=CLOSE_TIMEOUT_SECONDS,
            max_size=DEFAULT_MAX_MESSAGE_BYTES,
        )
    except InvalidStatus as exc:
        refusal = exc.response
        kept = [(n, v) for n, v in refusal.headers.raw_items() if n.lower() in RELAYED_REFUSAL_HEADERS]
        await _answer(stream, refusal.status_code, kept, bytes(refusal.body or b""))
        return
    except ValueError as exc:  # a subprotocol that could split the header: kaas's proxy refuses it first
        await _refuse(stream, 400, "BadRequest", str(exc))
        return
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        await _refuse(stream, 502, "ServiceUnavailable", f"the cluster's apiserver WebSocket failed: {exc}")
        return
    try:
        chosen = [(SUBPROTOCOL_HEADER, upstream.subprotocol)] if upstream.subprotocol else []
        await stream.write(encode_response_head(101, chosen))
        await relay(upstream, stream)
    finally:
        with contextlib.suppress(Exception):
            await upstream.close()


async def relay(upstream: ClientConnection, stream: TunnelStream) -> None:
    """Messages both ways until either side closes; the other side is then closed with the same code."""

    async def down() -> None:  # apiserver → kaas
        try:
            async for message in upstream:
                if isinstance(message, str):
                    await stream.write(encode_message(MessageKind.TEXT, message.encode()))
                else:
                    await stream.write(encode_message(MessageKind.BINARY, message))
        except ConnectionClosed:
            pass
        code = _sendable_close_code(upstream.close_code)
        await stream.write(encode_close(code, upstream.close_reason or ""))
        stream.close_write()

    async def up() -> None:  # kaas → apiserver
        decoder = MessageDecoder()
        while chunk := await stream.read():
            for message in decoder.feed(chunk):
                if message.kind is MessageKind.CLOSE:
                    await upstream.close(_sendable_close_code(message.close_code), message.close_reason)
                    return
                if message.kind is MessageKind.TEXT:
                    await upstream.send(message.payload.decode("utf-8", errors="replace"))
                else:
                    await upstream.send(message.payload)
        await upstream.close()  # kaas ended the stream without a CLOSE: its client is gone

    downward = asyncio.create_task(down())
    upward = asyncio.create_task(up())
    try:
        done, _ = await asyncio.wait({downward, upward}, return_when=asyncio.FIRST_COMPLETED)
        if upward in done and upward.exception() is None:
            # the client closed: the apiserver answers the close, then ``down`` ends by itself
            await asyncio.wait({downward}, timeout=CLOSE_TIMEOUT_SECONDS)
        for task in done:
            error = task.exception()
            if isinstance(error, WebSocketRelayError):
                stream.reset(str(error))
            elif error is not None and not isinstance(error, StreamClosedError | ConnectionClosed):
                logger.warning("tunnelled WebSocket failed: %s", error)
                stream.reset(f"the WebSocket relay failed: {error}")
    finally:
        for task in (downward, upward):
            task.cancel()
        await asyncio.gather(downward, upward, return_exceptions=True)
