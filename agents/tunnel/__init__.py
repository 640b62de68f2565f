"""The kaas tunnel: one WebSocket from a cluster's agent to kaas, multiplexing kubectl streams.

``protocol.TunnelSession`` is the pure state machine (no I/O) both ends run; ``frames`` is its wire codec,
``events`` what it reports, ``errors`` what it raises. The asyncio wrappers (the agent's dialer and kaas's
tunnel server) drive it. Standard library only.
"""

from agents.tunnel.errors import (
    FrameError,
    ProtocolViolation,
    StreamIdsExhaustedError,
    StreamStateError,
    TooManyStreamsError,
    TunnelClosedError,
    TunnelError,
    TunnelNotReadyError,
    TunnelUsageError,
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
from agents.tunnel.frames import PROTOCOL_VERSION, SUPPORTED_VERSIONS
from agents.tunnel.protocol import Role, TunnelSession

__all__ = [
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "DialAccepted",
    "DialFailed",
    "DialRequested",
    "Event",
    "FrameError",
    "HelloReceived",
    "PeerDead",
    "PongReceived",
    "ProtocolError",
    "ProtocolViolation",
    "Role",
    "SessionClosed",
    "StreamData",
    "StreamEnded",
    "StreamIdsExhaustedError",
    "StreamReset",
    "StreamStateError",
    "TooManyStreamsError",
    "TunnelClosedError",
    "TunnelError",
    "TunnelNotReadyError",
    "TunnelSession",
    "TunnelUsageError",
    "UnknownStreamError",
    "UnsupportedVersion",
    "WindowAvailable",
]
