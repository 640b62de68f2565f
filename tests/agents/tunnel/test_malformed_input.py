"""Bad bytes from the peer: always a ProtocolError event and GOAWAY, never an exception."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.tunnel import ProtocolError, TunnelSession
from agents.tunnel.frames import HEADER, FrameType, decode_message
from tests.agents.tunnel.conftest import make_pair, raw, sent_frames


def test_an_oversize_frame_closes_the_session_with_the_limit_as_reason() -> None:
    pair = make_pair(max_frame_size=4096)
    stream_id = pair.open_accepted_stream()
    pair.agent.receive_data(raw(FrameType.DATA, stream_id, b"x" * 4097), now=0.0)
    events = pair.agent.events()
    assert events[0] == ProtocolError(
        message="DATA frame payload of 4097 bytes exceeds the maximum frame size of 4096 bytes"
    )
    assert pair.agent.closed
    (goaway,) = sent_frames(pair.agent)
    assert goaway.type is FrameType.GOAWAY
    assert "exceeds the maximum frame size" in decode_message(goaway.payload)


def test_a_truncated_frame_is_a_protocol_error() -> None:
    pair = make_pair()
    pair.agent.receive_data(HEADER.pack(1, FrameType.DATA, 0, 0, 1, 100) + b"short", now=0.0)
    (event,) = pair.agent.events()
    assert event == ProtocolError(message="truncated DATA frame: header says 100 bytes, got 5")


def test_a_closed_session_ignores_further_input() -> None:
    pair = make_pair()
    pair.agent.receive_data(b"garbage", now=0.0)
    pair.agent.events()
    pair.agent.data_to_send()
    pair.agent.receive_data(b"more garbage", now=0.0)
    assert pair.agent.events() == []
    assert pair.agent.data_to_send() == []


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=80), min_size=1, max_size=5))
def test_random_messages_never_raise_before_or_after_the_handshake(messages: list[bytes]) -> None:
    for session in (TunnelSession(role="agent", now=0.0), make_pair().agent):
        for message in messages:
            session.receive_data(message, now=0.0)
        for event in session.events():
            if isinstance(event, ProtocolError):
                assert session.closed
