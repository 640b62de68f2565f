"""Relaying one WebSocket between an ASGI client and an upstream ``websockets`` connection.

Owned by ``kaas_core``; used by both k8s proxies (``kaas_api.k8s.proxy`` for the API's path and
``kaas_tunnel.k8s_proxy`` for the tunnel server's own): ``kubectl exec``, ``attach`` and ``port-forward``
are WebSockets through either, and both must close each side with the code the other side closed with.
They kept a copy each; a fix in one (a close code, the wait for the cluster's close) missed the other.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import Receive, Send
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

CLOSE_WAIT_SECONDS = 5.0  # after the client closed, how long the cluster's close may take to come back
# codes an endpoint must never send in a close frame (RFC 6455 7.4.1): "no code", "abnormal", "TLS failure"
_RESERVED_CLOSE_CODES = frozenset({1005, 1006, 1015})


def close_code(code: int | None) -> int:
    """The code to close the other side with: the one received when it may be sent, else 1000."""
    if code is None or code < 1000 or code in _RESERVED_CLOSE_CODES or code >= 5000:
        return 1000
    return code


async def relay_websocket(receive: Receive, send: Send, upstream: ClientConnection) -> str:
    """Messages both ways until one side closes; the other is closed with the same code. ``receive`` and
    ``send`` are the accepted client WebSocket's (ASGI, or a Starlette ``WebSocket``'s methods). Returns
    ``completed`` (the cluster closed first) or ``client-closed``."""

    async def down() -> None:  # cluster → client
        with contextlib.suppress(ConnectionClosed):
            async for message in upstream:
                if isinstance(message, str):
                    await send({"type": "websocket.send", "text": message})
                else:
                    await send({"type": "websocket.send", "bytes": message})
        await send(
            {
                "type": "websocket.close",
                "code": close_code(upstream.close_code),
                "reason": upstream.close_reason or "",
            }
        )

    async def up() -> None:  # client → cluster
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                await upstream.close(close_code(message.get("code")), message.get("reason") or "")
                return
            if message.get("bytes") is not None:
                await upstream.send(message["bytes"])
            elif message.get("text") is not None:
                await upstream.send(message["text"])

    downward = asyncio.create_task(down())
    upward = asyncio.create_task(up())
    try:
        done, _ = await asyncio.wait({downward, upward}, return_when=asyncio.FIRST_COMPLETED)
        if upward in done and not downward.done():
            await asyncio.wait({downward}, timeout=CLOSE_WAIT_SECONDS)  # the cluster's close comes back
            return "client-closed"
        return "completed"
    finally:
        for task in (downward, upward):
            task.cancel()
        await asyncio.gather(downward, upward, return_exceptions=True)
