"""The asyncio driver of ``agents.tunnel.TunnelSession`` that both ends of the tunnel run.

Owned by the tunnel package, beside the pure protocol it drives: the agent (``agents.runtime``) and kaas's
tunnel server (``kaas_tunnel``) both use ``TunnelConnection`` and its ``TunnelStream``s, and neither end
imports the other. One reader task feeds WebSocket messages to the session and dispatches its events; one
writer task sends whatever the session queued; one ticker calls ``tick`` when the session's next deadline
falls due (a ping, a sync, a timeout: every twenty seconds or so at rest, not every second, so ten
thousand idle sessions cost a loop little; an opened stream re-arms it for its dial timeout). Stream
operations are synchronous calls on the session plus a wake-up of the writer, so a stream can be reset from a
``finally`` block even while its task is being cancelled. Flow control is per stream: a ``write`` waits
only for its own stream's window, a ``read`` grants credit back only for what it returns, so a stalled
consumer exhausts its own window and nothing else; buffers are bounded by the windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

from agents.tunnel.errors import TunnelError
from agents.tunnel.events import (
    DialAccepted,
    DialFailed,
    DialRequested,
    HelloReceived,
    PeerDead,
    ProtocolError,
    SessionClosed,
    StreamData,
    StreamEnded,
    StreamReset,
    WindowAvailable,
)
from agents.tunnel.frames import DEFAULT_MAX_FRAME_SIZE
from agents.tunnel.protocol import TunnelSession

logger = logging.getLogger(__name__)

# The ticker never sleeps less than this: a deadline that stays due (it cannot) would not spin the loop.
MIN_TICK_SECONDS = 0.01
# A WebSocket message is one frame: header plus at most max_frame_size of payload.
WEBSOCKET_MAX_MESSAGE = DEFAULT_MAX_FRAME_SIZE + 1024


class RedactAuthorization(logging.Filter):
    """websockets logs every handshake header at DEBUG: never let a bearer token reach a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record we cannot format is none of our business
            return True
        if "authorization:" in message.lower() or "bearer " in message.lower():
            record.msg, record.args = "[a header carrying a credential, redacted]", ()
        return True


def websockets_logger(name: str) -> logging.Logger:
    """A logger for a websockets connection that redacts credentials."""
    redacting = logging.getLogger(name)
    if not any(isinstance(f, RedactAuthorization) for f in redacting.filters):
        redacting.addFilter(RedactAuthorization())
    return redacting


class StreamClosedError(Exception):
    """The stream was reset (by the peer, locally, or because the tunnel went away)."""


async def _send_together(websocket: Connection, payloads: list[bytes]) -> None:
    """Several frames, each its own WebSocket message as the wire format says, in one socket write.

    A small proxied request queues a few frames at once (DIAL_ACK and the response head, the body and FIN):
    sent one by one, each was a ``send`` syscall and, on loopback, a wake-up of the peer. ``send_context``
    is websockets' documented way to write through the protocol from user code (state checks, flow
    control, closing on errors); joining its output is the only thing added.
    """
    async with websocket.send_context():
        for payload in payloads:
            websocket.protocol.send_binary(payload)
        chunks = websocket.protocol.data_to_send()
        if all(chunks):  # an empty chunk means "half-close": let send_context's own write handle that
            websocket.transport.write(b"".join(chunks))
        else:
            for chunk in chunks:
                if chunk:
                    websocket.transport.write(chunk)
                elif websocket.transport.can_write_eof():
                    websocket.transport.write_eof()


class WebSocketLike(Protocol):
    """What the driver needs from a websockets connection (client or server side)."""

    async def send(self, message: bytes) -> None: ...

    async def recv(self) -> str | bytes: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class TunnelStream:
    """One multiplexed stream: ``read`` / ``write`` / ``close_write`` / ``reset``; bounded by its window."""

    def __init__(self, connection: TunnelConnection, stream_id: int) -> None:
        self.stream_id = stream_id
        self._connection = connection
        self._inbound: deque[bytes] = deque()
        self._data_ready = asyncio.Event()
        self._window_ready = asyncio.Event()
        self._ended = False
        self._reset_message: str | None = None
        self._write_closed = False
        self._reset_event = asyncio.Event()
        self.dial_result: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def is_reset(self) -> bool:
        return self._reset_message is not None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet read (bounded by the window this side granted)."""
        return sum(len(chunk) for chunk in self._inbound)

    # --- called by the connection's dispatcher ---

    def _on_data(self, data: bytes) -> None:
        self._inbound.append(data)
        self._data_ready.set()

    def _on_ended(self) -> None:
        self._ended = True
        self._data_ready.set()

    def _on_reset(self, message: str) -> None:
        if self._reset_message is None:
            self._reset_message = message
        self._reset_event.set()
        self._data_ready.set()
        self._window_ready.set()
        if not self.dial_result.done():
            self.dial_result.set_exception(StreamClosedError(message))
            self.dial_result.exception()  # retrieved: nobody may be waiting for it

    def _on_window(self) -> None:
        self._window_ready.set()

    # --- the application's side ---

    async def wait_reset(self) -> str:
        """Return the reason once the stream is reset (to stop work nobody waits for any more)."""
        await self._reset_event.wait()
        return self._reset_message or ""

    async def read(self) -> bytes:
        """The next chunk of data, ``b""`` once the peer half-closed; ``StreamClosedError`` if reset."""
        while True:
            if self._inbound:
                chunk = self._inbound.popleft()
                self._connection._consume(self.stream_id, len(chunk))
                return chunk
            if self._reset_message is not None:
                raise StreamClosedError(self._reset_message)
            if self._ended:
                return b""
            self._data_ready.clear()
            await self._data_ready.wait()

    async def write(self, data: bytes) -> None:
        """Send all of ``data``, waiting for this stream's window as often as needed."""
        view = memoryview(data)
        while view:
            if self._reset_message is not None:
                raise StreamClosedError(self._reset_message)
            self._window_ready.clear()
            try:
                taken = self._connection.session.send(self.stream_id, bytes(view))
            except TunnelError as exc:
                raise StreamClosedError(self._reset_message or str(exc)) from exc
            self._connection._wake_writer()
            view = view[taken:]
            if view:
                await self._window_ready.wait()

    def close_write(self) -> None:
        """Half-close: no more data from this side. Idempotent; ignored on a reset stream."""
        if self._write_closed or self._reset_message is not None:
            return
        self._write_closed = True
        with contextlib.suppress(TunnelError):
            self._connection.session.close_stream(self.stream_id)
        self._connection._after_local_close(self)

    def reset(self, message: str) -> None:
        """Abort the stream now; the peer hears ``message``. Safe in ``finally`` blocks and when gone."""
        if self._reset_message is None:
            self._connection.session.reset_stream(self.stream_id, message)
            self._on_reset(message)
            self._connection._forget(self)


DialHandler = Callable[["TunnelConnection", TunnelStream, dict[str, Any]], Awaitable[None]]


class TunnelConnection:
    """Drives one ``TunnelSession`` over one WebSocket; both kaas and the agent use it.

    ``on_dial`` runs in its own task for every stream the peer opens (after ``accept`` by the handler,
    which must call ``connection.accept(stream)`` or ``connection.reject(stream, message)``). ``run``
    returns when the session ends for any reason; every stream is then reset and every handler cancelled.
    """

    def __init__(
        self,
        websocket: WebSocketLike,
        session: TunnelSession,
        *,
        on_dial: DialHandler | None = None,
        name: str = "tunnel",
    ) -> None:
        self.websocket = websocket
        self.session = session
        self.name = name
        self.hello = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_reason: str | None = None
        self._on_dial = on_dial
        self._streams: dict[int, TunnelStream] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._rearm = asyncio.Event()  # the session's next deadline may have come closer
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop = asyncio.get_running_loop()
        self.max_buffered_seen = 0  # high-water mark of bytes held by any one stream (tests, metrics)

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    # --- lifecycle ---

    async def run(self) -> None:
        """Serve until the session or the WebSocket ends; then clean up every stream and handler."""
        writer = asyncio.create_task(self._write_loop(), name=f"{self.name}-writer")
        ticker = asyncio.create_task(self._tick_loop(), name=f"{self.name}-ticker")
        self._wake_writer()  # our HELLO
        try:
            await self._read_loop()
        finally:
            if not self.session.closed:
                self.session.close(self.close_reason or "connection lost")
            self._dispatch()
            ticker.cancel()
            self._wake_writer()
            # Flush what is left (GOAWAY) briefly; a dead socket must not hold us up.
            with contextlib.suppress(asyncio.TimeoutError, ConnectionClosed, OSError):
                await asyncio.wait_for(asyncio.shield(writer), timeout=2.0)
            writer.cancel()
            handlers = list(self._handlers)
            for task in handlers:
                task.cancel()
            await asyncio.gather(writer, ticker, *handlers, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.websocket.close(1000, (self.close_reason or "")[:120]), 5.0)
            self.closed.set()

    def close(self, reason: str) -> None:
        """End the session (GOAWAY with ``reason``); ``run`` then returns."""
        if self.close_reason is None:
            self.close_reason = reason
        self.session.close(reason)
        self._dispatch()
        self._wake_writer()

    async def open_stream(self, metadata: dict[str, Any], *, timeout: float) -> TunnelStream:
        """DIAL and wait for the peer's answer: the stream, ``StreamClosedError`` (refused) or a timeout."""
        stream_id = self.session.open_stream(metadata, now=self._loop.time())
        stream = TunnelStream(self, stream_id)
        self._streams[stream_id] = stream
        self._rearm.set()  # its dial timeout is a deadline too
        self._wake_writer()
        try:
            await asyncio.wait_for(asyncio.shield(stream.dial_result), timeout)
        except BaseException:
            stream.reset("dial abandoned by the caller")
            raise
        return stream

    def accept(self, stream: TunnelStream) -> None:
        self.session.accept_dial(stream.stream_id)
        self._wake_writer()

    def reject(self, stream: TunnelStream, message: str) -> None:
        with contextlib.suppress(TunnelError):
            self.session.reject_dial(stream.stream_id, message)
        stream._on_reset(message)
        self._forget(stream)
        self._wake_writer()

    # --- internals used by TunnelStream ---

    def _consume(self, stream_id: int, n: int) -> None:
        with contextlib.suppress(TunnelError):
            self.session.consume(stream_id, n)
        self._wake_writer()

    def _after_local_close(self, stream: TunnelStream) -> None:
        if stream.stream_id not in self.session.open_stream_ids:
            self._forget(stream)
        self._wake_writer()

    def _forget(self, stream: TunnelStream) -> None:
        self._streams.pop(stream.stream_id, None)
        self._wake_writer()

    def _wake_writer(self) -> None:
        self._idle.clear()
        self._wake.set()

    # --- the three tasks ---

    async def _read_loop(self) -> None:
        try:
            while not self.session.closed:
                message = await self.websocket.recv()
                if isinstance(message, str):
                    self.close("protocol error: text message on the tunnel")
                    return
                self.session.receive_data(message, now=self._loop.time())
                self._dispatch()
                self._wake_writer()
        except ConnectionClosed as exc:
            if self.close_reason is None:
                self.close_reason = f"the WebSocket closed ({exc})"

    async def _write_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                payloads = self.session.data_to_send()
                if len(payloads) > 1 and isinstance(self.websocket, Connection):
                    await _send_together(self.websocket, payloads)
                else:
                    for payload in payloads:
                        await self.websocket.send(payload)
                if not self._wake.is_set():
                    self._idle.set()
                if self.session.closed and not self._wake.is_set():
                    # GOAWAY is out: close the socket so the reader (blocked in recv) returns too.
                    await self.websocket.close(1000, (self.close_reason or "tunnel closed")[:120])
                    return
        except (ConnectionClosed, OSError) as exc:
            if self.close_reason is None:
                self.close_reason = f"the WebSocket closed ({exc})"
            self._idle.set()
            # Unblock the reader too: the socket is unusable.
            with contextlib.suppress(Exception):
                await self.websocket.close(1011, "write failed")

    async def _tick_loop(self) -> None:
        loop = self._loop
        while not self.session.closed:
            self._rearm.clear()
            delay = max(self.session.next_deadline - loop.time(), MIN_TICK_SECONDS)
            try:
                async with asyncio.timeout(delay):
                    await self._rearm.wait()
                continue  # a nearer deadline may have appeared: compute the sleep again
            except TimeoutError:
                pass
            self.session.tick(now=loop.time())
            self._dispatch()
            self._wake_writer()
            if self.session.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._idle.wait(), 2.0)
                with contextlib.suppress(Exception):
                    await self.websocket.close(1000, "tunnel session closed")

    def _dispatch(self) -> None:
        for event in self.session.events():
            if isinstance(event, HelloReceived):
                self.hello.set()
            elif isinstance(event, DialRequested):
                stream = TunnelStream(self, event.stream_id)
                self._streams[event.stream_id] = stream
                if self._on_dial is None:
                    self.reject(stream, "this side accepts no streams")
                    continue
                task = asyncio.create_task(
                    self._run_handler(stream, event.metadata), name=f"{self.name}-stream-{event.stream_id}"
                )
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)
            elif isinstance(event, DialAccepted):
                opened = self._streams.get(event.stream_id)
                if opened is not None and not opened.dial_result.done():
                    opened.dial_result.set_result(None)
            elif isinstance(event, DialFailed | StreamReset):
                gone = self._streams.pop(event.stream_id, None)
                if gone is not None:
                    gone._on_reset(event.message)
            elif isinstance(event, StreamData):
                target = self._streams.get(event.stream_id)
                if target is not None:
                    target._on_data(event.data)
                    self.max_buffered_seen = max(self.max_buffered_seen, target.buffered)
            elif isinstance(event, StreamEnded):
                ended = self._streams.get(event.stream_id)
                if ended is not None:
                    ended._on_ended()
                    if event.stream_id not in self.session.open_stream_ids:
                        self._streams.pop(event.stream_id, None)
            elif isinstance(event, WindowAvailable):
                windowed = self._streams.get(event.stream_id)
                if windowed is not None:
                    windowed._on_window()
            elif isinstance(event, SessionClosed | PeerDead | ProtocolError):
                if self.close_reason is None:
                    self.close_reason = getattr(event, "message", None) or f"peer silent ({event})"

    async def _run_handler(self, stream: TunnelStream, metadata: dict[str, Any]) -> None:
        assert self._on_dial is not None
        try:
            await self._on_dial(self, stream, metadata)
        except StreamClosedError:
            pass
        except Exception as exc:
            logger.exception("%s: stream %d handler failed", self.name, stream.stream_id)
            stream.reset(f"internal error: {type(exc).__name__}")
        finally:
            if stream.stream_id in self._streams and stream.is_reset:
                self._forget(stream)
