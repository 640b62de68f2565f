"""A real uvicorn server in the test's event loop, built by ``server_config``, and a raw-socket client that
may misbehave (oversize heads, trickled bytes), reading the answer while it still sends."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from kaas_core.serving.limits import HttpLimits, server_config

BOUND_SECONDS = 10.0  # no exchange in these tests may take longer than this


@asynccontextmanager
async def serving(app: ASGIApp, *, limits: HttpLimits, **options: Any) -> AsyncIterator[int]:
    """Serve ``app`` on 127.0.0.1 with ``limits`` until the block ends; yields the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = server_config(
        app,
        limits=limits,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
        **options,
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await server.shutdown(sockets=[sock])
        sock.close()


@dataclass
class Answer:
    """What came back on one connection until the server closed it."""

    raw: bytes
    sent: int  # bytes of the request the server took before it closed
    sent_before_answer: int  # ... before the first byte of the answer came
    answered_after: float  # seconds from connecting to the first byte of the answer (or to the close)
    reset: bool  # the connection ended with a reset rather than a clean close

    @property
    def status(self) -> int:
        return int(self.raw.split(b" ", 2)[1])

    @property
    def head(self) -> bytes:
        return self.raw.split(b"\r\n\r\n", 1)[0].lower()

    @property
    def json(self) -> Any:
        return json.loads(self.raw.split(b"\r\n\r\n", 1)[1])


async def exchange(
    port: int, pieces: Sequence[bytes], *, pause: float = 0.0, bound: float = BOUND_SECONDS
) -> Answer:
    """Send ``pieces`` (``pause`` seconds apart) while reading, until the server closes; bounded."""
    started = time.monotonic()
    answered_after = -1.0
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()
    reset = False
    sent = 0
    sent_before_answer = -1

    async def read() -> None:
        nonlocal reset, sent_before_answer, answered_after
        try:
            while chunk := await reader.read(65536):
                if not received:
                    sent_before_answer = sent
                    answered_after = time.monotonic() - started
                received.extend(chunk)
        except ConnectionError:
            reset = True
        if answered_after < 0:
            answered_after = time.monotonic() - started

    reading = asyncio.create_task(read())
    try:
        async with asyncio.timeout(bound):
            for index, piece in enumerate(pieces):
                if reading.done():
                    break
                if index and pause:
                    await asyncio.sleep(pause)
                try:
                    writer.write(piece)
                    await writer.drain()
                except ConnectionError:
                    break
                sent += len(piece)
            await reading
    finally:
        reading.cancel()
        with suppress(asyncio.CancelledError):
            await reading
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()
    return Answer(
        raw=bytes(received),
        sent=sent,
        sent_before_answer=sent_before_answer,
        answered_after=answered_after,
        reset=reset,
    )


@dataclass
class RecordingApp:
    """Reads each request's whole body, answers 200 with its length; records what it saw."""

    bodies: list[int] = field(default_factory=list)
    disconnects: int = 0
    first_piece: asyncio.Event = field(default_factory=asyncio.Event)
    delay_before_reading: float = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        if self.delay_before_reading:
            await asyncio.sleep(self.delay_before_reading)
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnects += 1
                return
            size += len(message.get("body", b""))
            if size:
                self.first_piece.set()
            if not message.get("more_body", False):
                break
        self.bodies.append(size)
        body = str(size).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def chunked(*pieces: bytes) -> list[bytes]:
    """``pieces`` framed as HTTP/1.1 chunks, the last one closing the body."""
    return [b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces] + [b"0\r\n\r\n"]
