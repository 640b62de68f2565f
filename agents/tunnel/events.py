"""What a ``TunnelSession`` reports to its application: typed, immutable events.

Owned by ``agents.tunnel``; produced by ``agents.tunnel.protocol`` and read (via ``TunnelSession.events()``)
by the asyncio wrappers: the agent and the tunnel server. Each event is a plain frozen dataclass; match on
the class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class HelloReceived:
    """The peer's HELLO arrived and a common version was agreed; streams may be opened now."""

    version: int
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DialRequested:
    """The peer opened a stream; answer with ``accept_dial`` or ``reject_dial``."""

    stream_id: int
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DialAccepted:
    stream_id: int


@dataclass(frozen=True, slots=True)
class DialFailed:
    """A stream this side opened was refused (by the peer, or locally by a dial timeout); it is gone."""

    stream_id: int
    message: str


@dataclass(frozen=True, slots=True)
class StreamData:
    """Bytes for the application; call ``consume(stream_id, len(data))`` once they are processed."""

    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer half-closed the stream: no more data will arrive on it."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The stream is gone, abruptly. ``by_peer`` is False when this side reset it (reconciliation, close)."""

    stream_id: int
    message: str
    by_peer: bool


@dataclass(frozen=True, slots=True)
class WindowAvailable:
    """The peer granted more credit: ``send`` on this stream can accept up to ``window`` bytes now."""

    stream_id: int
    window: int


@dataclass(frozen=True, slots=True)
class PongReceived:
    rtt: float


@dataclass(frozen=True, slots=True)
class PeerDead:
    """Nothing arrived from the peer for ``silence`` seconds; the session is closed."""

    silence: float


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The peer broke the protocol; GOAWAY with ``message`` is queued and the session is closed."""

    message: str


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """The session ended: the peer sent GOAWAY (``by_peer``) or this side called ``close()``."""

    message: str
    by_peer: bool


Event = (
    HelloReceived
    | DialRequested
    | DialAccepted
    | DialFailed
    | StreamData
    | StreamEnded
    | StreamReset
    | WindowAvailable
    | PongReceived
    | PeerDead
    | ProtocolError
    | SessionClosed
)
