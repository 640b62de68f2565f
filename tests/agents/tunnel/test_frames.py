"""The wire codec: every valid frame round-trips, every malformed message is a ``FrameError``."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.tunnel.errors import FrameError, ProtocolViolation, UnsupportedVersion
from agents.tunnel.frames import (
    HEADER,
    HEADER_SIZE,
    MAX_MESSAGE_BYTES,
    SESSION_FRAME_TYPES,
    Flag,
    Frame,
    FrameType,
    decode_frame,
    decode_sync,
    encode_frame,
    encode_message,
    encode_sync_chunks,
)

MAX_PAYLOAD = 4096


@st.composite
def valid_frames(draw: st.DrawFn) -> Frame:
    frame_type = draw(st.sampled_from(list(FrameType)))
    stream_id = 0 if frame_type in SESSION_FRAME_TYPES else draw(st.integers(1, 2**32 - 1))
    flags = 0
    if frame_type in (FrameType.DIAL_ACK, FrameType.CLOSE):
        payload = b""
    elif frame_type is FrameType.WINDOW_UPDATE:
        payload = draw(st.binary(min_size=4, max_size=4))
    elif frame_type in (FrameType.PING, FrameType.PONG):
        payload = draw(st.binary(min_size=8, max_size=8))
    elif frame_type is FrameType.STREAMS_SYNC:
        count = draw(st.integers(1, 50))
        payload = draw(st.binary(min_size=4 * count, max_size=4 * count))
        flags = draw(st.sampled_from([0, 1, 2, 3]))
    else:
        payload = draw(st.binary(max_size=MAX_PAYLOAD))
    return Frame(type=frame_type, stream_id=stream_id, payload=payload, flags=flags)


@given(valid_frames())
def test_every_valid_frame_round_trips(frame: Frame) -> None:
    assert decode_frame(encode_frame(frame), max_payload=MAX_PAYLOAD) == frame


@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_frame_errors_only(data: bytes) -> None:
    try:
        decode_frame(data, max_payload=MAX_PAYLOAD)
    except ProtocolViolation:
        pass


@given(valid_frames(), st.data())
def test_any_truncation_of_a_frame_is_a_frame_error(frame: Frame, data: st.DataObject) -> None:
    encoded = encode_frame(frame)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(FrameError, match="truncated"):
        decode_frame(encoded[:cut], max_payload=MAX_PAYLOAD)


def test_a_short_header_is_truncated() -> None:
    with pytest.raises(FrameError, match="truncated frame: 3 bytes"):
        decode_frame(b"\x01\x05\x00")


def test_trailing_bytes_after_the_payload_are_refused() -> None:
    encoded = encode_frame(Frame(type=FrameType.DATA, stream_id=1, payload=b"abc"))
    with pytest.raises(FrameError, match="1 trailing bytes"):
        decode_frame(encoded + b"x")


def test_an_oversize_payload_is_refused_with_the_limit_in_the_message() -> None:
    encoded = encode_frame(Frame(type=FrameType.DATA, stream_id=1, payload=b"x" * 5000))
    with pytest.raises(FrameError, match="5000 bytes exceeds the maximum frame size of 4096 bytes"):
        decode_frame(encoded, max_payload=4096)


def test_an_oversize_length_is_refused_before_the_payload_arrives() -> None:
    header_only = HEADER.pack(1, FrameType.DATA, 0, 0, 1, 10**9)
    with pytest.raises(FrameError, match="exceeds the maximum frame size"):
        decode_frame(header_only, max_payload=4096)


def test_an_unknown_version_is_refused_clearly() -> None:
    with pytest.raises(UnsupportedVersion, match="unsupported tunnel frame version 2; this side speaks"):
        decode_frame(HEADER.pack(2, FrameType.PING, 0, 0, 0, 8) + bytes(8))


def test_an_unknown_frame_type_is_refused() -> None:
    with pytest.raises(FrameError, match="unknown frame type 200"):
        decode_frame(HEADER.pack(1, 200, 0, 0, 0, 0))


def test_the_reserved_byte_must_be_zero() -> None:
    with pytest.raises(FrameError, match="reserved"):
        decode_frame(HEADER.pack(1, FrameType.DATA, 0, 7, 1, 0))


def test_flags_are_only_allowed_where_defined() -> None:
    with pytest.raises(FrameError, match="invalid flags"):
        decode_frame(HEADER.pack(1, FrameType.DATA, Flag.SYNC_FIRST, 0, 1, 0))


def test_stream_frames_need_a_stream_id_and_session_frames_must_not_have_one() -> None:
    with pytest.raises(FrameError, match="DATA frame needs a stream id"):
        decode_frame(HEADER.pack(1, FrameType.DATA, 0, 0, 0, 0))
    with pytest.raises(FrameError, match="PING frame must use stream id 0"):
        decode_frame(HEADER.pack(1, FrameType.PING, 0, 0, 3, 8) + bytes(8))


@pytest.mark.parametrize(
    ("frame_type", "size", "error"),
    [
        (FrameType.WINDOW_UPDATE, 3, "WINDOW_UPDATE payload must be 4 bytes"),
        (FrameType.CLOSE, 1, "CLOSE frame must have an empty payload"),
        (FrameType.DIAL_ACK, 2, "DIAL_ACK frame must have an empty payload"),
    ],
)
def test_fixed_size_payloads_are_checked(frame_type: FrameType, size: int, error: str) -> None:
    with pytest.raises(FrameError, match=error):
        decode_frame(HEADER.pack(1, frame_type, 0, 0, 1, size) + bytes(size))


def test_streams_sync_payload_must_be_whole_u32s() -> None:
    with pytest.raises(FrameError, match="STREAMS_SYNC payload must be 4 \\+ 4\\*n bytes"):
        decode_frame(HEADER.pack(1, FrameType.STREAMS_SYNC, 3, 0, 0, 6) + bytes(6))


def test_a_large_stream_sync_is_split_into_frames_within_the_limit() -> None:
    ids = list(range(1, 4001, 2))
    frames = encode_sync_chunks(high_water=42, stream_ids=ids, max_payload=4096)
    assert len(frames) == 2
    assert frames[0].flags == Flag.SYNC_FIRST
    assert frames[-1].flags == Flag.SYNC_LAST
    decoded: list[int] = []
    for frame in frames:
        assert len(frame.payload) <= 4096
        high_water, chunk = decode_sync(decode_frame(encode_frame(frame), max_payload=4096).payload)
        assert high_water == 42
        decoded.extend(chunk)
    assert decoded == ids


def test_an_empty_stream_sync_is_one_complete_frame() -> None:
    (frame,) = encode_sync_chunks(high_water=0, stream_ids=[], max_payload=4096)
    assert frame.flags == Flag.SYNC_FIRST | Flag.SYNC_LAST
    assert frame.payload == struct.pack("!I", 0)


def test_long_messages_are_cut_without_splitting_a_character() -> None:
    encoded = encode_message("é" * MAX_MESSAGE_BYTES)
    assert len(encoded) <= MAX_MESSAGE_BYTES
    assert encoded.decode("utf-8") == "é" * (MAX_MESSAGE_BYTES // 2)


def test_header_size_is_twelve_bytes() -> None:
    assert HEADER_SIZE == 12
