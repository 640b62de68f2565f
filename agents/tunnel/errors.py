"""The tunnel protocol's own error tree.

Owned by ``agents.tunnel``. Two families, because they are handled differently:

- ``FrameError`` (a ``ProtocolViolation``): the peer sent bytes that break the protocol. The session never
  lets it escape ``receive_data``; it turns it into a ``ProtocolError`` event, sends GOAWAY with the reason
  and closes. The codec (``agents.tunnel.frames``) raises it, and tests may catch it.
- ``TunnelUsageError`` and its subclasses: the *local* application called a session method at the wrong
  time (send on a closed stream, open a stream on a closed session, too many streams). These are raised to
  the caller, never sent to the peer.
"""

from __future__ import annotations


class TunnelError(Exception):
    """Base of every error raised by the tunnel protocol."""


class ProtocolViolation(TunnelError):
    """The peer broke the protocol; the session closes with this message as the reason."""


class FrameError(ProtocolViolation):
    """A frame could not be decoded: truncated, oversize, unknown type or version, malformed payload."""


class UnsupportedVersion(ProtocolViolation):
    """The peer speaks no protocol version this side supports."""


class TunnelUsageError(TunnelError):
    """The local application used the session wrongly; nothing was sent."""


class TunnelClosedError(TunnelUsageError):
    """The session is closed (protocol error, dead peer, GOAWAY or ``close()``); open a new one."""


class TunnelNotReadyError(TunnelUsageError):
    """The handshake has not completed yet: wait for ``HelloReceived`` before opening streams."""


class UnknownStreamError(TunnelUsageError):
    """No open stream has this id (it never existed, or it ended, was reset or was reconciled away)."""


class StreamStateError(TunnelUsageError):
    """The stream exists but cannot do this now (send after close, accept a stream that is not pending)."""


class TooManyStreamsError(TunnelUsageError):
    """Opening one more stream would exceed ``max_streams`` (this side's or the peer's)."""


class StreamIdsExhaustedError(TunnelUsageError):
    """Every stream id of this side was used once; ids are never reused, so open a new session."""
