"""How one WebSocket connection (kubectl exec, attach, port-forward) rides on one tunnel stream. Pure.

Owned by ``agents.tunnel``; used by the tunnel server (``kaas_tunnel.proxy``) and the agent
(``agents.websocket``). The stream starts like an HTTP one (``agents.tunnel.http``): the DIAL metadata is a
request head with ``"websocket": true`` and the requested subprotocols in ``Sec-WebSocket-Protocol``; the
agent answers with a response head: 101 and the chosen ``Sec-WebSocket-Protocol`` when the apiserver took
the upgrade, or the apiserver's refusal (status, headers, then its body) when it did not.

After a 101, both directions carry WebSocket *messages*, each one framed as::

    kind u8 (1 text, 2 binary, 8 close) | length u32 (big-endian) | payload

A close payload is ``code u16 | reason (UTF-8)``. Messages, not raw WebSocket frames: each end terminates
its own WebSocket (the client's at kaas, the apiserver's at the agent), so pings, masking and
fragmentation stay per hop, and the tunnel's flow control bounds what is buffered. ``MessageDecoder``
refuses a message over ``max_message_bytes`` and anything malformed with ``WebSocketRelayError``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
SUBPROTOCOL_HEADER = "Sec-WebSocket-Protocol"
_HEADER = struct.Struct("!BI")
_CLOSE_CODE = struct.Struct("!H")
MAX_CLOSE_REASON_BYTES = 123  # a WebSocket close frame's payload is at most 125 bytes
# of an apiserver's refusal of the upgrade, the headers that go back with its status and body
RELAYED_REFUSAL_HEADERS = frozenset({"content-type", "www-authenticate"})


class MessageKind(IntEnum):
    TEXT = 1
    BINARY = 2
    CLOSE = 8


class WebSocketRelayError(ValueError):
    """A relayed message that is malformed or too large."""


@dataclass(frozen=True)
class Message:
    kind: MessageKind
    payload: bytes

    @property
    def close_code(self) -> int:
        """For a CLOSE: its code (1005, "no status", when it carried none)."""
        if len(self.payload) >= _CLOSE_CODE.size:
            return int(_CLOSE_CODE.unpack_from(self.payload)[0])
        return 1005

    @property
    def close_reason(self) -> str:
        return self.payload[_CLOSE_CODE.size :].decode("utf-8", errors="replace")


def encode_message(kind: MessageKind, payload: bytes) -> bytes:
    return _HEADER.pack(int(kind), len(payload)) + payload


def encode_close(code: int, reason: str = "") -> bytes:
    """A CLOSE message; the reason is cut to what a close frame can carry."""
    reason_bytes = reason.encode("utf-8")[:MAX_CLOSE_REASON_BYTES]
    return encode_message(MessageKind.CLOSE, _CLOSE_CODE.pack(code) + reason_bytes)


class MessageDecoder:
    """Feed stream bytes, get whole messages; bounded by ``max_message_bytes``."""

    def __init__(self, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self._max = max_message_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages: list[Message] = []
        while len(self._buffer) >= _HEADER.size:
            kind_value, length = _HEADER.unpack_from(self._buffer)
            try:
                kind = MessageKind(kind_value)
            except ValueError:
                raise WebSocketRelayError(f"unknown relayed message kind {kind_value}") from None
            if length > self._max:
                raise WebSocketRelayError(
                    f"a relayed WebSocket message of {length} bytes is over the limit of {self._max}"
                )
            end = _HEADER.size + length
            if len(self._buffer) < end:
                break
            messages.append(Message(kind, bytes(self._buffer[_HEADER.size : end])))
            del self._buffer[:end]
        return messages

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message (a stream that ends with some is truncated)."""
        return len(self._buffer)


def parse_subprotocols(values: Iterable[str]) -> list[str]:
    """The subprotocols of ``Sec-WebSocket-Protocol`` header values (comma-separated, in order)."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]
