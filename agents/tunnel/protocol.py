"""The kaas tunnel protocol as a pure state machine: bytes in, events and bytes out, no I/O.

Owned by ``agents.tunnel``. Called by the two asyncio wrappers, which are thin: the in-cluster agent (role
``"agent"``, it dials out to kaas over one WebSocket) and kaas's tunnel server (role ``"server"``, it
carries every proxied kubectl request to that cluster's apiserver). Modelled on python-websockets'
``protocol.py``: no sockets, no asyncio, no clock reads; every method that cares about time takes ``now``
(seconds from any monotonic clock, the same clock for every call of one session).

The session multiplexes streams over one WebSocket. The server opens a stream with ``open_stream`` (DIAL with
JSON metadata: target, method, path, headers...); the agent answers ``accept_dial`` or ``reject_dial``
(the message reaches the caller as ``DialFailed``). Stream ids are never reused: the server's are odd, the
agent's even, both strictly increasing. Each stream has its own credit-based flow control: ``send`` queues at
most the peer's window and returns how much it took, ``consume`` tells the peer the application processed
bytes (WINDOW_UPDATE). A peer that sends beyond its window is a protocol error, so memory stays bounded per
stream and a stalled ``kubectl logs -f`` never blocks the other streams. PING/PONG keep the connection alive
and ``check_timeouts`` declares a silent peer dead; STREAMS_SYNC lets each side drop stream ids the other
forgot, so nothing leaks.

Keep-alive deadlines tolerate a starved event loop. ``next_deadline`` says when ``tick`` next has work; a
tick that runs later than that was held up by this side (CPU contention, a blocking call, the GIL), and
its lateness is credited to the peer: the dead-peer timeout counts only silence this side was awake to
hear, so a loop that stalls for a minute does not then blame the peer for that minute. And the peer is
declared dead only once ``dead_peer_pings`` pings went out unanswered, so it was asked before it is judged.

Intended wrapper loop (one per WebSocket; both roles look the same)::

    session = TunnelSession(role="agent", now=loop.time(), info={"cluster_id": ..., "agent_version": ...})
    await flush()                                   # sends our HELLO
    async for message in websocket:                 # plus a timer task calling tick() at next_deadline
        session.receive_data(message, now=loop.time())
        for event in session.events():
            dispatch(event)                         # DialRequested -> connect to the apiserver, then
                                                    # accept_dial/reject_dial; StreamData -> hand to the
                                                    # stream's writer, consume() once written; ...
        await flush()
        if session.closed:
            await websocket.close()

    async def flush():
        for payload in session.data_to_send():
            await websocket.send(payload)           # one binary message per frame

A stream's writer loops ``n = session.send(stream_id, chunk)``; when ``n < len(chunk)`` it waits for the
stream's ``WindowAvailable`` event before sending the rest. That wait is per stream, which is the point.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

from agents.tunnel.errors import (
    ProtocolViolation,
    StreamIdsExhaustedError,
    StreamStateError,
    TooManyStreamsError,
    TunnelClosedError,
    TunnelNotReadyError,
    UnknownStreamError,
    UnsupportedVersion,
)
from agents.tunnel.events import (
    DialAccepted,
    DialFailed,
    DialRequested,
    Event,
    HelloReceived,
    PeerDead,
    PongReceived,
    ProtocolError,
    SessionClosed,
    StreamData,
    StreamEnded,
    StreamReset,
    WindowAvailable,
)
from agents.tunnel.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    MAX_STREAM_ID,
    MAX_U32,
    MIN_MAX_FRAME_SIZE,
    SUPPORTED_VERSIONS,
    Flag,
    Frame,
    FrameType,
    decode_frame,
    decode_json_object,
    decode_message,
    decode_sync,
    decode_u32,
    encode_frame,
    encode_json,
    encode_message,
    encode_sync_chunks,
    encode_u32,
)

Role = Literal["server", "agent"]

DEFAULT_INITIAL_WINDOW = 256 * 1024
DEFAULT_MAX_BUFFERED_PER_STREAM = 1024 * 1024
DEFAULT_MAX_STREAMS = 1024
DEFAULT_PING_INTERVAL = 20.0
DEFAULT_DEAD_PEER_TIMEOUT = 60.0
DEFAULT_DEAD_PEER_PINGS = 2
DEFAULT_SYNC_INTERVAL = 30.0
DEFAULT_DIAL_TIMEOUT = 30.0

RECONCILED_MESSAGE = "stream unknown to the peer (dropped by stream reconciliation)"


class _State(enum.Enum):
    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"


class _StreamState(enum.Enum):
    DIALING = "dialing"  # this side sent DIAL and waits for DIAL_ACK / DIAL_ERROR
    ACCEPTING = "accepting"  # the peer sent DIAL; the application has not answered yet
    OPEN = "open"


@dataclass(slots=True)
class _Stream:
    stream_id: int
    opened_locally: bool
    state: _StreamState
    opened_at: float
    send_window: int  # bytes this side may still send
    recv_window: int  # bytes the peer may still send
    unconsumed: int = 0  # delivered as StreamData, not yet consume()d
    pending_update: int = 0  # consumed, not yet granted back with WINDOW_UPDATE
    local_closed: bool = False
    remote_closed: bool = False


class TunnelSession:
    """One end of one tunnel connection. Not thread-safe; drive it from one task.

    Limits (all keyword arguments, all enforced on what the peer sends):

    - ``max_frame_size``: the largest frame payload this side accepts; bigger is a protocol error. Outgoing
      DATA is cut to the peer's advertised maximum.
    - ``initial_window``: the credit this side grants each new stream. ``max_buffered_per_stream`` is the
      hard cap of unconsumed bytes one stream may hold here; the granted window never exceeds it.
    - ``max_streams``: concurrent streams; a DIAL beyond it is refused with DIAL_ERROR, ``open_stream``
      beyond this side's or the peer's limit raises ``TooManyStreamsError``.
    - ``ping_interval`` / ``dead_peer_timeout`` / ``dead_peer_pings``: ``tick`` pings every interval;
      nothing received for the timeout (of this side's awake time: see the module docstring) while at least
      ``dead_peer_pings`` pings went unanswered means ``PeerDead`` and the session closes.
    - ``sync_interval``: how often ``tick`` sends STREAMS_SYNC. ``dial_timeout``: a DIAL unanswered this
      long fails with ``DialFailed`` and is reset.
    """

    def __init__(
        self,
        *,
        role: Role,
        now: float,
        info: Mapping[str, Any] | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        initial_window: int = DEFAULT_INITIAL_WINDOW,
        max_buffered_per_stream: int = DEFAULT_MAX_BUFFERED_PER_STREAM,
        max_streams: int = DEFAULT_MAX_STREAMS,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        dead_peer_timeout: float = DEFAULT_DEAD_PEER_TIMEOUT,
        dead_peer_pings: int = DEFAULT_DEAD_PEER_PINGS,
        sync_interval: float = DEFAULT_SYNC_INTERVAL,
        dial_timeout: float = DEFAULT_DIAL_TIMEOUT,
    ) -> None:
        if role not in ("server", "agent"):
            raise ValueError(f"role must be 'server' or 'agent', not {role!r}")
        if not MIN_MAX_FRAME_SIZE <= max_frame_size <= MAX_U32:
            raise ValueError(f"max_frame_size must be between {MIN_MAX_FRAME_SIZE} and {MAX_U32}")
        if not 0 < initial_window <= max_buffered_per_stream <= MAX_U32:
            raise ValueError("need 0 < initial_window <= max_buffered_per_stream < 2**32")
        if max_streams < 1:
            raise ValueError("max_streams must be at least 1")
        if not 0 < ping_interval < dead_peer_timeout:
            raise ValueError("need 0 < ping_interval < dead_peer_timeout")
        if dead_peer_pings < 1 or dead_peer_pings * ping_interval >= dead_peer_timeout:
            # the pings that must go unanswered have to fit in the timeout, or the deadline passes unasked
            raise ValueError(
                "need 1 <= dead_peer_pings and dead_peer_pings * ping_interval < dead_peer_timeout"
            )
        if sync_interval <= 0 or dial_timeout <= 0:
            raise ValueError("sync_interval and dial_timeout must be positive")
        self.role: Role = role
        self.max_frame_size = max_frame_size
        self.initial_window = initial_window
        self.max_buffered_per_stream = max_buffered_per_stream
        self.max_streams = max_streams
        self.ping_interval = ping_interval
        self.dead_peer_timeout = dead_peer_timeout
        self.dead_peer_pings = dead_peer_pings
        self.sync_interval = sync_interval
        self.dial_timeout = dial_timeout

        self.version: int | None = None
        self.peer_info: dict[str, Any] = {}
        self.closed_reason: str | None = None
        self.rtt: float | None = None
        self._state = _State.HANDSHAKE
        self._peer_role: Role = "agent" if role == "server" else "server"
        self._peer_max_frame_size = MIN_MAX_FRAME_SIZE
        self._peer_initial_window = 0
        self._peer_max_streams = 1
        self._streams: dict[int, _Stream] = {}
        self._next_local_id = 1 if role == "server" else 2
        self._highest_peer_id = 0
        self._events: list[Event] = []
        self._outgoing: list[bytes] = []
        self._last_received = now
        self._last_ping_sent = now
        self._last_sync_sent = now
        # this side's own lateness since the last frame received: silence the peer is not blamed for
        self._stall_credit = 0.0
        self._pings_unanswered = 0  # pings sent since the last frame received
        self.stalled_seconds = 0.0  # all lateness of tick() so far (metrics, tests)
        self._ping_counter = 0
        self._outstanding_ping: tuple[bytes, float] | None = None
        self._sync_tally: set[int] | None = None
        self._sync_high_water = 0
        self._handlers: dict[FrameType, Callable[[Frame, float], None]] = {
            FrameType.HELLO: self._on_hello,
            FrameType.DIAL: self._on_dial,
            FrameType.DIAL_ACK: self._on_dial_ack,
            FrameType.DIAL_ERROR: self._on_dial_error,
            FrameType.DATA: self._on_data,
            FrameType.WINDOW_UPDATE: self._on_window_update,
            FrameType.CLOSE: self._on_close,
            FrameType.RESET: self._on_reset,
            FrameType.PING: self._on_ping,
            FrameType.PONG: self._on_pong,
            FrameType.STREAMS_SYNC: self._on_streams_sync,
            FrameType.GOAWAY: self._on_goaway,
        }

        hello = encode_json(
            {
                "versions": list(SUPPORTED_VERSIONS),
                "role": role,
                "info": dict(info or {}),
                "max_frame_size": max_frame_size,
                "initial_window": initial_window,
                "max_streams": max_streams,
            }
        )
        if len(hello) > MIN_MAX_FRAME_SIZE:
            raise ValueError(f"HELLO info is too large: {len(hello)} bytes, at most {MIN_MAX_FRAME_SIZE}")
        self._queue(Frame(type=FrameType.HELLO, payload=hello))

    # --- what the wrapper reads -----------------------------------------------------------------------

    def events(self) -> list[Event]:
        """Events since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[bytes]:
        """Payloads of WebSocket binary messages to send, in order, since the last call."""
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    @property
    def is_open(self) -> bool:
        """The handshake completed and the session is not closed: streams can be opened."""
        return self._state is _State.OPEN

    @property
    def closed(self) -> bool:
        """The session is over; flush ``data_to_send()`` (it may hold GOAWAY) and close the WebSocket."""
        return self._state is _State.CLOSED

    @property
    def open_stream_ids(self) -> frozenset[int]:
        return frozenset(self._streams)

    @property
    def next_deadline(self) -> float:
        """When ``tick`` next has something to do (a ping, a sync, a timeout); ``inf`` once closed.

        The wrapper calls ``tick`` at this time, or earlier (a tick before it does no harm); it asks again
        after every call that may bring it closer (``open_stream``). A tick later than this is lateness of
        this side, credited to the peer.
        """
        if self._state is _State.CLOSED:
            return float("inf")
        deadline = self._last_received + self._stall_credit + self.dead_peer_timeout
        if self._state is _State.HANDSHAKE:
            return deadline
        deadline = min(
            deadline, self._last_ping_sent + self.ping_interval, self._last_sync_sent + self.sync_interval
        )
        for stream in self._streams.values():
            if stream.state is _StreamState.DIALING:
                deadline = min(deadline, stream.opened_at + self.dial_timeout)
        return deadline

    def send_window(self, stream_id: int) -> int:
        """How many bytes ``send`` would accept on this stream right now."""
        return self._local_stream(stream_id).send_window

    # --- input ------------------------------------------------------------------------------------------

    def receive_data(self, payload: bytes, *, now: float) -> None:
        """Feed one received WebSocket binary message. Never raises for bad input: see ``ProtocolError``."""
        if self._state is _State.CLOSED:
            return
        self._last_received = now
        self._stall_credit = 0.0
        self._pings_unanswered = 0
        try:
            frame = decode_frame(payload, max_payload=self.max_frame_size)
            self._handle(frame, now)
        except ProtocolViolation as exc:
            self._fail(str(exc))

    def tick(self, *, now: float) -> None:
        """Timers: dead peer and dial timeouts, then PING and STREAMS_SYNC when due.

        Call it at ``next_deadline``. Running later than that is this side's own lateness: it is added to
        ``stalled_seconds`` and not counted as the peer's silence.
        """
        # What was due first, judged on everything received so far: running after it is our lateness.
        late = now - self.next_deadline
        if late > 0 and self._state is not _State.CLOSED:
            self._stall_credit += late
            self.stalled_seconds += late
        self.check_timeouts(now=now)
        if self._state is _State.OPEN:
            if now - self._last_ping_sent >= self.ping_interval:
                self._send_ping(now)
            if now - self._last_sync_sent >= self.sync_interval:
                self._send_sync(now)

    def check_timeouts(self, *, now: float) -> None:
        """Close the session with ``PeerDead`` after ``dead_peer_timeout`` of silence (less this side's
        credited lateness) with ``dead_peer_pings`` pings unanswered; fail stale dials."""
        if self._state is _State.CLOSED:
            return
        silence = now - self._last_received - self._stall_credit
        asked = self._state is _State.HANDSHAKE or self._pings_unanswered >= self.dead_peer_pings
        if silence >= self.dead_peer_timeout and asked:
            reason = (
                f"no traffic from the peer for {silence:.1f}s (dead peer timeout {self.dead_peer_timeout}s)"
            )
            if self._stall_credit > 0:
                reason += f"; {self._stall_credit:.1f}s more while this side ran late, not counted"
            self._events.append(PeerDead(silence=silence))
            self._queue(Frame(type=FrameType.GOAWAY, payload=encode_message(reason)))
            self._shutdown(f"tunnel peer dead: {reason}")
            return
        for stream in list(self._streams.values()):
            if stream.state is _StreamState.DIALING and now - stream.opened_at >= self.dial_timeout:
                message = f"dial timed out after {self.dial_timeout}s without an answer from the peer"
                self._queue(
                    Frame(type=FrameType.RESET, stream_id=stream.stream_id, payload=encode_message(message))
                )
                del self._streams[stream.stream_id]
                self._events.append(DialFailed(stream_id=stream.stream_id, message=message))

    # --- application commands ------------------------------------------------------------------------------

    def open_stream(self, metadata: Mapping[str, Any], *, now: float) -> int:
        """Send DIAL with JSON ``metadata``; returns the new stream id. Data may be sent before the ACK."""
        self._require_open()
        limit = min(self.max_streams, self._peer_max_streams)
        if len(self._streams) >= limit:
            raise TooManyStreamsError(f"{len(self._streams)} streams open, the limit is {limit}")
        stream_id = self._next_local_id
        if stream_id > MAX_STREAM_ID:
            raise StreamIdsExhaustedError("every stream id of this session was used; open a new session")
        payload = encode_json(dict(metadata))
        if len(payload) > self._peer_max_frame_size:
            raise ValueError(f"dial metadata of {len(payload)} bytes exceeds the peer's maximum frame size")
        self._next_local_id += 2
        self._streams[stream_id] = _Stream(
            stream_id=stream_id,
            opened_locally=True,
            state=_StreamState.DIALING,
            opened_at=now,
            send_window=self._peer_initial_window,
            recv_window=self.initial_window,
        )
        self._queue(Frame(type=FrameType.DIAL, stream_id=stream_id, payload=payload))
        return stream_id

    def accept_dial(self, stream_id: int) -> None:
        stream = self._pending_dial(stream_id)
        stream.state = _StreamState.OPEN
        self._queue(Frame(type=FrameType.DIAL_ACK, stream_id=stream_id))

    def reject_dial(self, stream_id: int, message: str) -> None:
        """Refuse a dial; ``message`` reaches the caller (e.g. "connection refused by the apiserver")."""
        self._pending_dial(stream_id)
        del self._streams[stream_id]
        self._queue(Frame(type=FrameType.DIAL_ERROR, stream_id=stream_id, payload=encode_message(message)))

    def send(self, stream_id: int, data: bytes) -> int:
        """Queue up to the peer's window of ``data``; returns how many bytes were taken (maybe 0)."""
        self._require_open()
        stream = self._local_stream(stream_id)
        if stream.state is _StreamState.ACCEPTING:
            raise StreamStateError(f"stream {stream_id}: accept the dial before sending")
        if stream.local_closed:
            raise StreamStateError(f"stream {stream_id} is closed for sending")
        taken = min(len(data), stream.send_window)
        chunk_size = self._peer_max_frame_size
        for start in range(0, taken, chunk_size):
            chunk = bytes(data[start : min(start + chunk_size, taken)])
            self._queue(Frame(type=FrameType.DATA, stream_id=stream_id, payload=chunk))
        stream.send_window -= taken
        return taken

    def consume(self, stream_id: int, n: int) -> None:
        """The application processed ``n`` bytes of this stream; grant them back to the peer (batched)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # ended or reset meanwhile: nobody needs the credit any more
        if not 0 <= n <= stream.unconsumed:
            raise StreamStateError(
                f"stream {stream_id}: consume({n}) but {stream.unconsumed} bytes unconsumed"
            )
        stream.unconsumed -= n
        stream.pending_update += n
        # Batch small grants; the peer keeps more than 3/4 of the window meanwhile, so it never stalls.
        if stream.remote_closed or stream.pending_update < max(1, self.initial_window // 4):
            return
        grant = min(
            stream.pending_update, self.max_buffered_per_stream - stream.unconsumed - stream.recv_window
        )
        if grant > 0:
            stream.recv_window += grant
            stream.pending_update -= grant
            self._queue(Frame(type=FrameType.WINDOW_UPDATE, stream_id=stream_id, payload=encode_u32(grant)))

    def close_stream(self, stream_id: int) -> None:
        """Half-close: this side sends no more data. The stream ends once both sides closed. Idempotent."""
        self._require_open()
        stream = self._local_stream(stream_id)
        if stream.state is _StreamState.ACCEPTING:
            raise StreamStateError(f"stream {stream_id}: accept or reject the dial first")
        if stream.local_closed:
            return
        stream.local_closed = True
        self._queue(Frame(type=FrameType.CLOSE, stream_id=stream_id))
        if stream.remote_closed:
            del self._streams[stream_id]

    def reset_stream(self, stream_id: int, message: str) -> None:
        """Abort a stream now; ``message`` reaches the peer. A stream that is already gone is ignored."""
        stream = self._streams.pop(stream_id, None)
        if stream is None or self._state is _State.CLOSED:
            return
        frame_type = FrameType.DIAL_ERROR if stream.state is _StreamState.ACCEPTING else FrameType.RESET
        self._queue(Frame(type=frame_type, stream_id=stream_id, payload=encode_message(message)))

    def close(self, message: str = "session closed") -> None:
        """End the session: GOAWAY to the peer, every stream reset locally. Idempotent."""
        if self._state is _State.CLOSED:
            return
        self._queue(Frame(type=FrameType.GOAWAY, payload=encode_message(message)))
        self._events.append(SessionClosed(message=message, by_peer=False))
        self._shutdown(f"tunnel closed: {message}")

    # --- frame handling -------------------------------------------------------------------------------------

    def _handle(self, frame: Frame, now: float) -> None:
        if self._state is _State.HANDSHAKE and frame.type not in (FrameType.HELLO, FrameType.GOAWAY):
            raise ProtocolViolation(f"expected HELLO first, got {frame.type.name}")
        self._handlers[frame.type](frame, now)

    def _on_hello(self, frame: Frame, now: float) -> None:
        if self._state is not _State.HANDSHAKE:
            raise ProtocolViolation("duplicate HELLO")
        hello = decode_json_object(frame.payload, what="HELLO")
        versions = hello.get("versions")
        if not isinstance(versions, list) or not all(_is_int(v) for v in versions):
            raise ProtocolViolation("HELLO must list the peer's protocol versions as integers")
        common = set(SUPPORTED_VERSIONS) & set(versions)
        if not common:
            raise UnsupportedVersion(
                f"unsupported tunnel protocol version: the peer speaks {sorted(versions)}, "
                f"this side speaks {list(SUPPORTED_VERSIONS)}"
            )
        if hello.get("role") != self._peer_role:
            raise ProtocolViolation(f"peer says it is {hello.get('role')!r}, expected {self._peer_role!r}")
        info = hello.get("info", {})
        max_frame_size = hello.get("max_frame_size")
        initial_window = hello.get("initial_window")
        max_streams = hello.get("max_streams")
        if not isinstance(info, dict):
            raise ProtocolViolation("HELLO info must be a JSON object")
        if not _is_int(max_frame_size) or not MIN_MAX_FRAME_SIZE <= max_frame_size <= MAX_U32:
            raise ProtocolViolation(f"HELLO max_frame_size must be an integer >= {MIN_MAX_FRAME_SIZE}")
        if not _is_int(initial_window) or not 0 < initial_window <= MAX_U32:
            raise ProtocolViolation("HELLO initial_window must be a positive 32-bit integer")
        if not _is_int(max_streams) or max_streams < 1:
            raise ProtocolViolation("HELLO max_streams must be a positive integer")
        self.version = max(common)
        self.peer_info = info
        self._peer_max_frame_size = max_frame_size
        self._peer_initial_window = initial_window
        self._peer_max_streams = max_streams
        self._state = _State.OPEN
        self._events.append(HelloReceived(version=self.version, info=info))

    def _on_dial(self, frame: Frame, now: float) -> None:
        stream_id = frame.stream_id
        if self._is_local_id(stream_id):
            raise ProtocolViolation(f"the peer opened stream {stream_id}, an id reserved for this side")
        if stream_id <= self._highest_peer_id:
            raise ProtocolViolation(
                f"stream id {stream_id} reused: ids must increase (last was {self._highest_peer_id})"
            )
        self._highest_peer_id = stream_id
        metadata = decode_json_object(frame.payload, what="DIAL")
        if len(self._streams) >= self.max_streams:
            message = f"too many streams: this side allows {self.max_streams} at once"
            self._queue(
                Frame(type=FrameType.DIAL_ERROR, stream_id=stream_id, payload=encode_message(message))
            )
            return
        self._streams[stream_id] = _Stream(
            stream_id=stream_id,
            opened_locally=False,
            state=_StreamState.ACCEPTING,
            opened_at=now,
            send_window=self._peer_initial_window,
            recv_window=self.initial_window,
        )
        self._events.append(DialRequested(stream_id=stream_id, metadata=metadata))

    def _on_dial_ack(self, frame: Frame, now: float) -> None:
        stream = self._stream_for(frame)
        if stream is None:
            return
        if stream.state is not _StreamState.DIALING:
            raise ProtocolViolation(f"unexpected DIAL_ACK for stream {stream.stream_id}")
        stream.state = _StreamState.OPEN
        self._events.append(DialAccepted(stream_id=stream.stream_id))

    def _on_dial_error(self, frame: Frame, now: float) -> None:
        stream = self._stream_for(frame)
        if stream is None:
            return
        if stream.state is not _StreamState.DIALING:
            raise ProtocolViolation(f"unexpected DIAL_ERROR for stream {stream.stream_id}")
        del self._streams[stream.stream_id]
        self._events.append(DialFailed(stream_id=stream.stream_id, message=decode_message(frame.payload)))

    def _on_data(self, frame: Frame, now: float) -> None:
        stream = self._stream_for(frame)
        if stream is None:
            return  # a stream this side reset: data in flight is dropped
        if stream.state is _StreamState.DIALING:
            raise ProtocolViolation(f"DATA on stream {stream.stream_id} before its DIAL_ACK")
        if stream.remote_closed:
            raise ProtocolViolation(f"DATA on stream {stream.stream_id} after the peer closed it")
        size = len(frame.payload)
        if size > stream.recv_window:
            raise ProtocolViolation(
                f"flow control violation on stream {stream.stream_id}: {size} bytes sent with a window of "
                f"{stream.recv_window}"
            )
        if stream.unconsumed + size > self.max_buffered_per_stream:
            raise ProtocolViolation(
                f"stream {stream.stream_id} exceeds {self.max_buffered_per_stream} buffered bytes"
            )
        stream.recv_window -= size
        stream.unconsumed += size
        if size:
            self._events.append(StreamData(stream_id=stream.stream_id, data=frame.payload))

    def _on_window_update(self, frame: Frame, now: float) -> None:
        stream = self._stream_for(frame)
        if stream is None:
            return
        increment = decode_u32(frame.payload)
        if increment == 0:
            raise ProtocolViolation(f"WINDOW_UPDATE of 0 on stream {stream.stream_id}")
        if stream.send_window + increment > MAX_U32:
            raise ProtocolViolation(f"window overflow on stream {stream.stream_id}")
        stream.send_window += increment
        if not stream.local_closed:
            self._events.append(WindowAvailable(stream_id=stream.stream_id, window=stream.send_window))

    def _on_close(self, frame: Frame, now: float) -> None:
        stream = self._stream_for(frame)
        if stream is None:
            return
        if stream.state is _StreamState.DIALING:
            raise ProtocolViolation(f"CLOSE on stream {stream.stream_id} before its DIAL_ACK")
        if stream.remote_closed:
            raise ProtocolViolation(f"duplicate CLOSE on stream {stream.stream_id}")
        stream.remote_closed = True
        self._events.append(StreamEnded(stream_id=stream.stream_id))
        if stream.local_closed:
            del self._streams[stream.stream_id]

    def _on_reset(self, frame: Frame, now: float) -> None:
        stream = self._stream_for(frame)
        if stream is None:
            return
        del self._streams[stream.stream_id]
        message = decode_message(frame.payload)
        if stream.state is _StreamState.DIALING:
            self._events.append(DialFailed(stream_id=stream.stream_id, message=message))
        else:
            self._events.append(StreamReset(stream_id=stream.stream_id, message=message, by_peer=True))

    def _on_ping(self, frame: Frame, now: float) -> None:
        self._queue(Frame(type=FrameType.PONG, payload=frame.payload))

    def _on_pong(self, frame: Frame, now: float) -> None:
        if self._outstanding_ping is None or self._outstanding_ping[0] != frame.payload:
            return  # an answer to a ping superseded by a newer one
        rtt = now - self._outstanding_ping[1]
        self.rtt = rtt
        self._outstanding_ping = None
        self._events.append(PongReceived(rtt=rtt))

    def _on_streams_sync(self, frame: Frame, now: float) -> None:
        high_water, stream_ids = decode_sync(frame.payload)
        if frame.flags & Flag.SYNC_FIRST:
            self._sync_tally = set()
            self._sync_high_water = high_water
        elif self._sync_tally is None:
            raise ProtocolViolation("STREAMS_SYNC continuation without a first frame")
        # Only ids this side knows are kept, so the tally is bounded by our own stream table.
        self._sync_tally.update(i for i in stream_ids if i in self._streams)
        if frame.flags & Flag.SYNC_LAST:
            known, self._sync_tally = self._sync_tally, None
            self._reconcile(high_water=self._sync_high_water, known_to_peer=known)

    def _reconcile(self, *, high_water: int, known_to_peer: set[int]) -> None:
        """Drop every stream the peer does not know although it must have seen it (see the docs)."""
        for stream_id, stream in list(self._streams.items()):
            if stream_id in known_to_peer:
                continue
            if stream.opened_locally and stream_id > high_water:
                continue  # our DIAL was still in flight when the peer took its snapshot
            del self._streams[stream_id]
            if stream.state is _StreamState.DIALING:
                self._events.append(DialFailed(stream_id=stream_id, message=RECONCILED_MESSAGE))
            else:
                self._events.append(
                    StreamReset(stream_id=stream_id, message=RECONCILED_MESSAGE, by_peer=False)
                )

    def _on_goaway(self, frame: Frame, now: float) -> None:
        message = decode_message(frame.payload)
        self._events.append(SessionClosed(message=message, by_peer=True))
        self._shutdown(f"tunnel closed by the peer: {message}")

    # --- helpers ---------------------------------------------------------------------------------------

    def _queue(self, frame: Frame) -> None:
        self._outgoing.append(encode_frame(frame))

    def _send_ping(self, now: float) -> None:
        self._ping_counter += 1
        nonce = struct.pack("!Q", self._ping_counter)
        self._outstanding_ping = (nonce, now)
        self._last_ping_sent = now
        self._pings_unanswered += 1
        self._queue(Frame(type=FrameType.PING, payload=nonce))

    def _send_sync(self, now: float) -> None:
        self._last_sync_sent = now
        for frame in encode_sync_chunks(
            high_water=self._highest_peer_id,
            stream_ids=self._streams,
            max_payload=self._peer_max_frame_size,
        ):
            self._queue(frame)

    def send_streams_sync(self, *, now: float) -> None:
        """Send STREAMS_SYNC now (``tick`` does it every ``sync_interval``)."""
        self._require_open()
        self._send_sync(now)

    def ping(self, *, now: float) -> None:
        """Send PING now (``tick`` does it every ``ping_interval``); the answer is ``PongReceived``."""
        self._require_open()
        self._send_ping(now)

    def _fail(self, message: str) -> None:
        self._events.append(ProtocolError(message=message))
        self._queue(Frame(type=FrameType.GOAWAY, payload=encode_message(f"protocol error: {message}")))
        self._shutdown(f"tunnel protocol error: {message}")

    def _shutdown(self, reason: str) -> None:
        """Close the session; every stream's owner hears about it through DialFailed or StreamReset."""
        self._state = _State.CLOSED
        self.closed_reason = reason
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            if stream.state is _StreamState.DIALING:
                self._events.append(DialFailed(stream_id=stream.stream_id, message=reason))
            else:
                self._events.append(StreamReset(stream_id=stream.stream_id, message=reason, by_peer=False))

    def _require_open(self) -> None:
        if self._state is _State.CLOSED:
            raise TunnelClosedError(self.closed_reason or "tunnel closed")
        if self._state is _State.HANDSHAKE:
            raise TunnelNotReadyError("the tunnel handshake has not completed yet")

    def _local_stream(self, stream_id: int) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise UnknownStreamError(f"no open stream {stream_id}")
        return stream

    def _pending_dial(self, stream_id: int) -> _Stream:
        self._require_open()
        stream = self._local_stream(stream_id)
        if stream.state is not _StreamState.ACCEPTING:
            raise StreamStateError(f"stream {stream_id} is not a dial waiting for an answer")
        return stream

    def _is_local_id(self, stream_id: int) -> bool:
        return stream_id % 2 == self._next_local_id % 2

    def _stream_for(self, frame: Frame) -> _Stream | None:
        """The stream a frame addresses; None for one that existed and is gone (frames in flight)."""
        stream = self._streams.get(frame.stream_id)
        if stream is not None:
            return stream
        existed = (
            frame.stream_id < self._next_local_id
            if self._is_local_id(frame.stream_id)
            else frame.stream_id <= self._highest_peer_id
        )
        if not existed:
            raise ProtocolViolation(
                f"{frame.type.name} frame for stream {frame.stream_id}, which was never opened"
            )
        return None


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
