"""Streams: dial, accept or refuse with a message, data both ways, half-close, reset, limits, ids."""

from __future__ import annotations

import pytest

from agents.tunnel import (
    DialAccepted,
    DialFailed,
    DialRequested,
    ProtocolError,
    SessionClosed,
    StreamData,
    StreamEnded,
    StreamReset,
    StreamStateError,
    TooManyStreamsError,
    TunnelClosedError,
    UnknownStreamError,
)
from agents.tunnel.frames import FrameType, decode_message, encode_json
from tests.agents.tunnel.conftest import Pair, make_pair, raw, sent_frames


def test_a_dial_reaches_the_agent_with_its_metadata_and_the_accept_reaches_the_server(pair: Pair) -> None:
    metadata = {"method": "GET", "path": "/api/v1/pods", "headers": {"Accept": ["application/json"]}}
    stream_id = pair.server.open_stream(metadata, now=0.0)
    pair.pump()
    assert pair.take_agent_events() == [DialRequested(stream_id=stream_id, metadata=metadata)]
    pair.agent.accept_dial(stream_id)
    pair.pump()
    assert pair.take_server_events() == [DialAccepted(stream_id=stream_id)]


def test_a_refused_dial_reaches_the_caller_with_its_message(pair: Pair) -> None:
    stream_id = pair.server.open_stream({"path": "/"}, now=0.0)
    pair.pump()
    pair.agent.reject_dial(stream_id, "dial tcp 10.0.0.1:6443: connection refused")
    pair.pump()
    assert pair.take_server_events() == [
        DialFailed(stream_id=stream_id, message="dial tcp 10.0.0.1:6443: connection refused")
    ]
    assert stream_id not in pair.server.open_stream_ids
    assert stream_id not in pair.agent.open_stream_ids


def test_data_flows_both_ways(pair: Pair) -> None:
    stream_id = pair.open_accepted_stream()
    assert pair.server.send(stream_id, b"GET /version HTTP/1.1\r\n\r\n") == 25
    assert pair.agent.send(stream_id, b"HTTP/1.1 200 OK\r\n\r\n") == 19
    pair.pump()
    assert pair.take_agent_events() == [
        StreamData(stream_id=stream_id, data=b"GET /version HTTP/1.1\r\n\r\n")
    ]
    assert pair.take_server_events() == [StreamData(stream_id=stream_id, data=b"HTTP/1.1 200 OK\r\n\r\n")]


def test_the_dialer_may_send_the_request_before_the_dial_is_accepted(pair: Pair) -> None:
    stream_id = pair.server.open_stream({"path": "/"}, now=0.0)
    pair.server.send(stream_id, b"body")
    pair.pump()
    assert pair.take_agent_events() == [
        DialRequested(stream_id=stream_id, metadata={"path": "/"}),
        StreamData(stream_id=stream_id, data=b"body"),
    ]


def test_the_acceptor_cannot_send_before_accepting(pair: Pair) -> None:
    stream_id = pair.server.open_stream({"path": "/"}, now=0.0)
    pair.pump()
    with pytest.raises(StreamStateError, match="accept the dial before sending"):
        pair.agent.send(stream_id, b"x")


def test_data_larger_than_the_peer_frame_size_is_split_into_frames() -> None:
    pair = make_pair(max_frame_size=4096, initial_window=65536, max_buffered_per_stream=65536)
    stream_id = pair.open_accepted_stream()
    assert pair.server.send(stream_id, b"x" * 10000) == 10000
    frames = sent_frames(pair.server)
    assert [len(f.payload) for f in frames] == [4096, 4096, 1808]


def test_half_close_ends_one_direction_and_the_other_still_flows(pair: Pair) -> None:
    stream_id = pair.open_accepted_stream()
    pair.server.close_stream(stream_id)
    pair.pump()
    assert pair.take_agent_events() == [StreamEnded(stream_id=stream_id)]
    with pytest.raises(StreamStateError, match="closed for sending"):
        pair.server.send(stream_id, b"more")
    pair.agent.send(stream_id, b"response")
    pair.agent.close_stream(stream_id)
    pair.pump()
    assert pair.take_server_events() == [
        StreamData(stream_id=stream_id, data=b"response"),
        StreamEnded(stream_id=stream_id),
    ]
    assert pair.server.open_stream_ids == frozenset()
    assert pair.agent.open_stream_ids == frozenset()


def test_data_after_the_peer_closed_is_a_protocol_error(pair: Pair) -> None:
    stream_id = pair.open_accepted_stream()
    pair.server.receive_data(raw(FrameType.CLOSE, stream_id), now=0.0)
    pair.server.receive_data(raw(FrameType.DATA, stream_id, b"late"), now=0.0)
    events = pair.server.events()
    assert ProtocolError(message=f"DATA on stream {stream_id} after the peer closed it") in events


def test_a_reset_reaches_the_peer_with_its_message(pair: Pair) -> None:
    stream_id = pair.open_accepted_stream()
    pair.agent.reset_stream(stream_id, "apiserver connection lost")
    pair.pump()
    assert pair.take_server_events() == [
        StreamReset(stream_id=stream_id, message="apiserver connection lost", by_peer=True)
    ]
    assert pair.server.open_stream_ids == frozenset()
    with pytest.raises(UnknownStreamError):
        pair.server.send(stream_id, b"x")


def test_resetting_an_unanswered_dial_fails_the_dial_at_the_caller(pair: Pair) -> None:
    stream_id = pair.server.open_stream({"path": "/"}, now=0.0)
    pair.pump()
    pair.agent.reset_stream(stream_id, "agent shutting down")
    pair.pump()
    assert pair.take_server_events() == [DialFailed(stream_id=stream_id, message="agent shutting down")]


def test_data_in_flight_for_a_stream_this_side_reset_is_dropped(pair: Pair) -> None:
    stream_id = pair.open_accepted_stream()
    pair.server.send(stream_id, b"in flight")
    pair.agent.reset_stream(stream_id, "gone")
    pair.pump()
    assert pair.take_agent_events() == []
    assert pair.agent.is_open


def test_a_frame_for_a_stream_that_was_never_opened_is_a_protocol_error(pair: Pair) -> None:
    pair.agent.receive_data(raw(FrameType.DATA, 99, b"x"), now=0.0)
    assert pair.agent.events() == [ProtocolError(message="DATA frame for stream 99, which was never opened")]


def test_stream_ids_are_odd_for_the_server_even_for_the_agent_and_never_reused(pair: Pair) -> None:
    server_ids = []
    for _ in range(3):
        stream_id = pair.server.open_stream({}, now=0.0)
        server_ids.append(stream_id)
        pair.server.reset_stream(stream_id, "done")
    agent_id = pair.agent.open_stream({}, now=0.0)
    assert server_ids == [1, 3, 5]
    assert agent_id == 2


def test_a_reused_stream_id_is_a_protocol_error(pair: Pair) -> None:
    stream_id = pair.open_accepted_stream()
    pair.agent.reset_stream(stream_id, "done")
    pair.agent.receive_data(raw(FrameType.DIAL, stream_id, encode_json({})), now=0.0)
    (event,) = pair.agent.events()
    assert isinstance(event, ProtocolError)
    assert f"stream id {stream_id} reused" in event.message


def test_a_dial_with_this_sides_parity_is_a_protocol_error(pair: Pair) -> None:
    pair.agent.receive_data(raw(FrameType.DIAL, 2, encode_json({})), now=0.0)
    (event,) = pair.agent.events()
    assert isinstance(event, ProtocolError)
    assert "an id reserved for this side" in event.message


def test_open_stream_refuses_beyond_the_smaller_of_both_limits() -> None:
    pair = make_pair(max_streams=2)
    pair.server.open_stream({}, now=0.0)
    pair.server.open_stream({}, now=0.0)
    with pytest.raises(TooManyStreamsError, match="2 streams open, the limit is 2"):
        pair.server.open_stream({}, now=0.0)


def test_a_dial_beyond_max_streams_is_refused_with_a_message_not_an_error() -> None:
    pair = make_pair(max_streams=1)
    pair.server.open_stream({}, now=0.0)
    pair.pump()
    pair.take_agent_events()
    # a server that ignores the advertised limit: crafted DIAL for the next id
    pair.agent.receive_data(raw(FrameType.DIAL, 3, encode_json({})), now=0.0)
    assert pair.agent.events() == []
    (refusal,) = sent_frames(pair.agent)
    assert refusal.type is FrameType.DIAL_ERROR
    assert decode_message(refusal.payload) == "too many streams: this side allows 1 at once"
    assert pair.agent.is_open


def test_a_dial_with_metadata_that_is_not_an_object_is_a_protocol_error(pair: Pair) -> None:
    pair.agent.receive_data(raw(FrameType.DIAL, 1, b"[1, 2]"), now=0.0)
    (event,) = pair.agent.events()
    assert isinstance(event, ProtocolError)
    assert "DIAL payload must be a JSON object, got list" in event.message


def test_closing_the_session_fails_every_stream_and_tells_the_peer(pair: Pair) -> None:
    open_id = pair.open_accepted_stream()
    dialing_id = pair.server.open_stream({}, now=0.0)
    pair.server.close("server shutting down")
    events = pair.take_server_events()
    assert SessionClosed(message="server shutting down", by_peer=False) in events
    assert DialFailed(stream_id=dialing_id, message="tunnel closed: server shutting down") in events
    assert (
        StreamReset(stream_id=open_id, message="tunnel closed: server shutting down", by_peer=False) in events
    )
    pair.pump()
    agent_events = pair.take_agent_events()
    assert SessionClosed(message="server shutting down", by_peer=True) in agent_events
    reset_ids = {e.stream_id for e in agent_events if isinstance(e, StreamReset)}
    assert reset_ids == {open_id, dialing_id}
    assert pair.agent.closed
    with pytest.raises(TunnelClosedError, match="server shutting down"):
        pair.server.open_stream({}, now=0.0)
