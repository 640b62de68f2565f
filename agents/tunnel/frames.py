"""The tunnel's binary wire format: one frame per WebSocket binary message.

Owned by ``agents.tunnel``; called by ``agents.tunnel.protocol`` (and by tests that craft raw bytes). Pure
functions over ``bytes``, standard library only.

A frame is a 12-byte header followed by the payload::

    0       1       2       3       4               8              12
    +-------+-------+-------+-------+---------------+---------------+------------
    |version| type  | flags |  0    |  stream id    | payload length| payload ...
    +-------+-------+-------+-------+---------------+---------------+------------

All integers are unsigned big-endian. ``version`` is the wire-format version (``PROTOCOL_VERSION``); a frame
of a version this side does not speak is refused with a clear reason. Stream id 0 addresses the session
(HELLO, PING, PONG, STREAMS_SYNC, GOAWAY); every other type needs a non-zero stream id. The payload length
must equal the bytes that follow the header (a WebSocket message holds exactly one frame) and must not
exceed the receiver's ``max_frame_size``.

Payloads: HELLO and DIAL carry a JSON object; DIAL_ERROR, RESET and GOAWAY carry a UTF-8 message;
WINDOW_UPDATE a u32 increment; PING and PONG an 8-byte opaque nonce; STREAMS_SYNC a u32 "highest stream id
I have seen you open" followed by u32 stream ids; DATA raw bytes; DIAL_ACK and CLOSE nothing.
"""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agents.tunnel.errors import FrameError, UnsupportedVersion

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)

HEADER = struct.Struct("!BBBBII")
HEADER_SIZE = HEADER.size
MAX_STREAM_ID = 2**32 - 1
MAX_U32 = 2**32 - 1

DEFAULT_MAX_FRAME_SIZE = 64 * 1024
# Every implementation must accept at least this much payload: HELLO has to fit before sizes are known.
MIN_MAX_FRAME_SIZE = 4096
# Error messages (DIAL_ERROR, RESET, GOAWAY) are cut to this many UTF-8 bytes.
MAX_MESSAGE_BYTES = 1024
PING_PAYLOAD_SIZE = 8


class FrameType(enum.IntEnum):
    HELLO = 1
    DIAL = 2
    DIAL_ACK = 3
    DIAL_ERROR = 4
    DATA = 5
    WINDOW_UPDATE = 6
    CLOSE = 7
    RESET = 8
    PING = 9
    PONG = 10
    STREAMS_SYNC = 11
    GOAWAY = 12


class Flag(enum.IntFlag):
    NONE = 0
    # STREAMS_SYNC may span several frames: the first resets the receiver's tally, the last completes it.
    SYNC_FIRST = 0x01
    SYNC_LAST = 0x02


SESSION_FRAME_TYPES = frozenset(
    {FrameType.HELLO, FrameType.PING, FrameType.PONG, FrameType.STREAMS_SYNC, FrameType.GOAWAY}
)
_ALLOWED_FLAGS: dict[FrameType, int] = {FrameType.STREAMS_SYNC: Flag.SYNC_FIRST | Flag.SYNC_LAST}
_EMPTY_PAYLOAD_TYPES = frozenset({FrameType.DIAL_ACK, FrameType.CLOSE})
_FIXED_PAYLOAD_SIZES: dict[FrameType, int] = {
    FrameType.WINDOW_UPDATE: 4,
    FrameType.PING: PING_PAYLOAD_SIZE,
    FrameType.PONG: PING_PAYLOAD_SIZE,
}


@dataclass(frozen=True, slots=True)
class Frame:
    type: FrameType
    stream_id: int = 0
    payload: bytes = b""
    flags: int = 0


def encode_frame(frame: Frame) -> bytes:
    """The bytes of one WebSocket binary message. Raises ``ValueError`` for a frame we must never send."""
    if not 0 <= frame.stream_id <= MAX_STREAM_ID:
        raise ValueError(f"stream id {frame.stream_id} is out of range")
    if len(frame.payload) > MAX_U32:
        raise ValueError("payload too large")
    return HEADER.pack(PROTOCOL_VERSION, frame.type, frame.flags, 0, frame.stream_id, len(frame.payload)) + (
        frame.payload
    )


def decode_frame(data: bytes, *, max_payload: int = DEFAULT_MAX_FRAME_SIZE) -> Frame:
    """Parse one message into a ``Frame``; anything malformed raises ``FrameError`` (never another error)."""
    if len(data) < HEADER_SIZE:
        raise FrameError(f"truncated frame: {len(data)} bytes, the header alone is {HEADER_SIZE}")
    version, raw_type, flags, reserved, stream_id, length = HEADER.unpack_from(data)
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedVersion(
            f"unsupported tunnel frame version {version}; this side speaks {list(SUPPORTED_VERSIONS)}"
        )
    try:
        frame_type = FrameType(raw_type)
    except ValueError:
        raise FrameError(f"unknown frame type {raw_type}") from None
    if reserved != 0:
        raise FrameError(f"reserved header byte must be 0, got {reserved}")
    if length > max_payload:
        raise FrameError(
            f"{frame_type.name} frame payload of {length} bytes exceeds the maximum frame size of "
            f"{max_payload} bytes"
        )
    actual = len(data) - HEADER_SIZE
    if actual < length:
        raise FrameError(f"truncated {frame_type.name} frame: header says {length} bytes, got {actual}")
    if actual > length:
        raise FrameError(f"{actual - length} trailing bytes after a {frame_type.name} frame")
    if flags & ~_ALLOWED_FLAGS.get(frame_type, 0):
        raise FrameError(f"invalid flags {flags:#04x} on a {frame_type.name} frame")
    if frame_type in SESSION_FRAME_TYPES:
        if stream_id != 0:
            raise FrameError(f"{frame_type.name} frame must use stream id 0, got {stream_id}")
    elif stream_id == 0:
        raise FrameError(f"{frame_type.name} frame needs a stream id, got 0")
    if frame_type in _EMPTY_PAYLOAD_TYPES and length != 0:
        raise FrameError(f"{frame_type.name} frame must have an empty payload, got {length} bytes")
    expected = _FIXED_PAYLOAD_SIZES.get(frame_type)
    if expected is not None and length != expected:
        raise FrameError(f"{frame_type.name} payload must be {expected} bytes, got {length}")
    if frame_type is FrameType.STREAMS_SYNC and (length < 4 or length % 4):
        raise FrameError(f"STREAMS_SYNC payload must be 4 + 4*n bytes, got {length}")
    return Frame(type=frame_type, stream_id=stream_id, payload=bytes(data[HEADER_SIZE:]), flags=flags)


# --- payload helpers ---------------------------------------------------------------------------------


def encode_json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def decode_json_object(payload: bytes, *, what: str) -> dict[str, Any]:
    try:
        value = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError(f"{what} payload is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise FrameError(f"{what} payload must be a JSON object, got {type(value).__name__}")
    return value


def encode_message(message: str) -> bytes:
    """UTF-8, cut to ``MAX_MESSAGE_BYTES`` without splitting a character."""
    raw = message.encode("utf-8")
    if len(raw) <= MAX_MESSAGE_BYTES:
        return raw
    return raw[:MAX_MESSAGE_BYTES].decode("utf-8", errors="ignore").encode("utf-8")


def decode_message(payload: bytes) -> str:
    return payload.decode("utf-8", errors="replace")


def encode_u32(value: int) -> bytes:
    return struct.pack("!I", value)


def decode_u32(payload: bytes) -> int:
    (value,) = struct.unpack("!I", payload)
    return int(value)


def encode_sync_chunks(*, high_water: int, stream_ids: Iterable[int], max_payload: int) -> list[Frame]:
    """STREAMS_SYNC frames (at least one) listing ``stream_ids``, each payload within ``max_payload``."""
    ids = sorted(stream_ids)
    per_frame = max(1, (max_payload - 4) // 4)
    chunks = [ids[i : i + per_frame] for i in range(0, len(ids), per_frame)] or [[]]
    frames = []
    for index, chunk in enumerate(chunks):
        flags = Flag.NONE
        if index == 0:
            flags |= Flag.SYNC_FIRST
        if index == len(chunks) - 1:
            flags |= Flag.SYNC_LAST
        payload = struct.pack(f"!I{len(chunk)}I", high_water, *chunk)
        frames.append(Frame(type=FrameType.STREAMS_SYNC, payload=payload, flags=int(flags)))
    return frames


def decode_sync(payload: bytes) -> tuple[int, list[int]]:
    """``(high_water, stream_ids)`` of one STREAMS_SYNC payload (``decode_frame`` checked its length)."""
    values = struct.unpack(f"!{len(payload) // 4}I", payload)
    return values[0], list(values[1:])
