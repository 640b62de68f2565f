"""STREAMS_SYNC: stream ids one side forgot are dropped by the other, streams still being dialed are kept."""

from __future__ import annotations

from agents.tunnel import DialFailed, ProtocolError, StreamReset
from agents.tunnel.frames import Flag, FrameType, encode_frame, encode_sync_chunks
from agents.tunnel.protocol import RECONCILED_MESSAGE
from tests.agents.tunnel.conftest import Pair, make_pair, raw


def test_a_stream_whose_reset_was_lost_is_dropped_by_the_next_sync(pair: Pair) -> None:
    leaked = pair.open_accepted_stream()
    kept = pair.open_accepted_stream()
    pair.server.reset_stream(leaked, "client went away")
    pair.server.data_to_send()  # the RESET is lost
    pair.server.send_streams_sync(now=1.0)
    pair.pump()
    assert pair.take_agent_events() == [
        StreamReset(stream_id=leaked, message=RECONCILED_MESSAGE, by_peer=False)
    ]
    assert pair.agent.open_stream_ids == frozenset({kept})
    assert pair.server.open_stream_ids == frozenset({kept})


def test_tick_sends_the_sync_every_interval_in_both_directions() -> None:
    pair = make_pair(sync_interval=5.0, ping_interval=100.0, dead_peer_timeout=300.0)
    agent_leak = pair.open_accepted_stream()
    server_leak = pair.open_accepted_stream()
    pair.agent.reset_stream(server_leak, "lost")
    pair.agent.data_to_send()
    pair.server.reset_stream(agent_leak, "lost")
    pair.server.data_to_send()
    pair.now = 5.0
    pair.server.tick(now=5.0)
    pair.agent.tick(now=5.0)
    pair.pump()
    assert pair.agent.open_stream_ids == frozenset()
    assert pair.server.open_stream_ids == frozenset()


def test_a_stream_whose_dial_is_still_in_flight_survives_the_sync(pair: Pair) -> None:
    server_sync = encode_sync_chunks(high_water=0, stream_ids=[], max_payload=65536)
    new_id = pair.agent.open_stream({"path": "/"}, now=0.0)  # DIAL not delivered yet
    for frame in server_sync:
        pair.agent.receive_data(encode_frame(frame), now=0.0)
    assert pair.agent.events() == []
    assert pair.agent.open_stream_ids == frozenset({new_id})


def test_a_dial_the_peer_has_seen_but_forgot_fails_at_the_caller(pair: Pair) -> None:
    stream_id = pair.server.open_stream({"path": "/"}, now=0.0)
    pair.pump()
    pair.agent.reject_dial(stream_id, "refused")
    pair.agent.data_to_send()  # the DIAL_ERROR is lost
    pair.agent.send_streams_sync(now=1.0)
    pair.pump()
    assert pair.take_server_events() == [DialFailed(stream_id=stream_id, message=RECONCILED_MESSAGE)]


def test_a_sync_split_over_several_frames_is_applied_once_complete() -> None:
    pair = make_pair(max_frame_size=4096, max_streams=2000)
    ids = [pair.server.open_stream({}, now=0.0) for _ in range(1100)]
    pair.pump()
    pair.take_agent_events()
    leaked = ids[-1]
    frames = encode_sync_chunks(high_water=0, stream_ids=ids[:-1], max_payload=4096)
    assert len(frames) == 2
    pair.agent.receive_data(encode_frame(frames[0]), now=0.0)
    assert pair.agent.events() == []
    pair.agent.receive_data(encode_frame(frames[1]), now=0.0)
    assert pair.agent.events() == [StreamReset(stream_id=leaked, message=RECONCILED_MESSAGE, by_peer=False)]
    assert len(pair.agent.open_stream_ids) == 1099


def test_a_sync_continuation_without_a_first_frame_is_a_protocol_error(pair: Pair) -> None:
    pair.agent.receive_data(raw(FrameType.STREAMS_SYNC, payload=bytes(4), flags=Flag.SYNC_LAST), now=0.0)
    assert pair.agent.events() == [ProtocolError(message="STREAMS_SYNC continuation without a first frame")]
