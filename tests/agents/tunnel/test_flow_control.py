"""Per-stream credit: a sender stops at the window, a slow stream never holds up another, violations close."""

from __future__ import annotations

from collections.abc import Sequence

from agents.tunnel import ProtocolError, StreamData, StreamReset, WindowAvailable
from agents.tunnel.frames import FrameType, encode_u32
from tests.agents.tunnel.conftest import SMALL_WINDOW, Pair, make_pair, raw, sent_frames


def received_bytes(events: Sequence[object], stream_id: int) -> int:
    return sum(len(e.data) for e in events if isinstance(e, StreamData) and e.stream_id == stream_id)


def test_a_sender_stops_at_the_window(pair: Pair) -> None:
    stream_id = pair.open_accepted_stream()
    assert pair.agent.send(stream_id, b"x" * (SMALL_WINDOW * 2)) == SMALL_WINDOW
    assert pair.agent.send(stream_id, b"more") == 0
    assert pair.agent.send_window(stream_id) == 0


def test_a_slow_stream_with_an_exhausted_window_does_not_block_another(pair: Pair) -> None:
    slow = pair.open_accepted_stream({"path": "/logs?follow=true"})
    fast = pair.open_accepted_stream({"path": "/api/v1/pods"})
    assert pair.agent.send(slow, b"l" * SMALL_WINDOW) == SMALL_WINDOW
    pair.pump()  # the server never consumes the slow stream
    for _ in range(4):
        assert pair.agent.send(fast, b"p" * SMALL_WINDOW) == SMALL_WINDOW
        pair.pump()
        events = pair.take_server_events()
        assert received_bytes(events, fast) == SMALL_WINDOW
        pair.server.consume(fast, SMALL_WINDOW)
        pair.pump()
    assert pair.agent.send(slow, b"l") == 0


def test_consuming_grants_window_back_and_more_data_flows(pair: Pair) -> None:
    stream_id = pair.open_accepted_stream()
    pair.agent.send(stream_id, b"x" * SMALL_WINDOW)
    pair.pump()
    pair.take_server_events()
    pair.server.consume(stream_id, SMALL_WINDOW // 2)
    pair.pump()
    assert pair.take_agent_events() == [WindowAvailable(stream_id=stream_id, window=SMALL_WINDOW // 2)]
    assert pair.agent.send(stream_id, b"y" * SMALL_WINDOW) == SMALL_WINDOW // 2


def test_small_consumptions_are_batched_into_one_window_update(pair: Pair) -> None:
    stream_id = pair.open_accepted_stream()
    pair.agent.send(stream_id, b"x" * SMALL_WINDOW)
    pair.pump()
    pair.take_server_events()
    for _ in range(SMALL_WINDOW // 4 // 1024 - 1):
        pair.server.consume(stream_id, 1024)
    assert pair.server.data_to_send() == []
    pair.server.consume(stream_id, 1024)
    (update,) = sent_frames(pair.server)
    assert update.type is FrameType.WINDOW_UPDATE
    assert update.payload == encode_u32(SMALL_WINDOW // 4)


def test_sending_beyond_the_window_is_a_protocol_error_that_closes_the_session(pair: Pair) -> None:
    stream_id = pair.open_accepted_stream()
    other = pair.open_accepted_stream()
    pair.server.receive_data(raw(FrameType.DATA, stream_id, b"x" * SMALL_WINDOW), now=0.0)
    pair.server.receive_data(raw(FrameType.DATA, stream_id, b"y"), now=0.0)
    events = pair.server.events()
    assert (
        ProtocolError(
            message=f"flow control violation on stream {stream_id}: 1 bytes sent with a window of 0"
        )
        in events
    )
    assert pair.server.closed
    assert {e.stream_id for e in events if isinstance(e, StreamReset)} == {stream_id, other}
    (goaway,) = sent_frames(pair.server)
    assert goaway.type is FrameType.GOAWAY


def test_a_zero_window_update_is_a_protocol_error(pair: Pair) -> None:
    stream_id = pair.open_accepted_stream()
    pair.server.receive_data(raw(FrameType.WINDOW_UPDATE, stream_id, encode_u32(0)), now=0.0)
    assert pair.server.events()[0] == ProtocolError(message=f"WINDOW_UPDATE of 0 on stream {stream_id}")


def test_a_window_overflow_is_a_protocol_error(pair: Pair) -> None:
    stream_id = pair.open_accepted_stream()
    pair.server.receive_data(raw(FrameType.WINDOW_UPDATE, stream_id, encode_u32(2**32 - 1)), now=0.0)
    assert pair.server.events()[0] == ProtocolError(message=f"window overflow on stream {stream_id}")


def test_the_peer_window_is_the_one_it_advertised() -> None:
    pair = make_pair(initial_window=4096, max_buffered_per_stream=4096)
    stream_id = pair.open_accepted_stream()
    assert pair.server.send_window(stream_id) == 4096
