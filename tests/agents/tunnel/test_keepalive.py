"""PING/PONG both ways from tick(now), a silent peer is declared dead, unanswered dials time out."""

from __future__ import annotations

import pytest

from agents.tunnel import DialFailed, PeerDead, PongReceived, StreamReset, TunnelSession
from agents.tunnel.frames import FrameType
from tests.agents.tunnel.conftest import Pair, make_pair, raw, sent_frames


def keepalive_pair() -> Pair:
    return make_pair(ping_interval=10.0, dead_peer_timeout=30.0, sync_interval=1000.0, dial_timeout=5.0)


def test_tick_sends_a_ping_each_interval_and_the_pong_measures_rtt() -> None:
    pair = keepalive_pair()
    pair.server.tick(now=9.9)
    assert pair.server.data_to_send() == []
    pair.server.tick(now=10.0)
    (ping,) = sent_frames(pair.server)
    assert ping.type is FrameType.PING
    pair.agent.receive_data(raw(FrameType.PING, payload=ping.payload), now=10.1)
    (pong_message,) = pair.agent.data_to_send()
    pair.server.receive_data(pong_message, now=10.25)
    (event,) = pair.server.events()
    assert isinstance(event, PongReceived)
    assert abs(event.rtt - 0.25) < 1e-9


def test_both_sides_ping() -> None:
    pair = keepalive_pair()
    pair.now = 10.0
    pair.server.tick(now=10.0)
    pair.agent.tick(now=10.0)
    pair.pump()
    assert any(isinstance(e, PongReceived) for e in pair.take_server_events())
    assert any(isinstance(e, PongReceived) for e in pair.take_agent_events())


def test_a_peer_that_answers_stays_alive_past_the_timeout() -> None:
    pair = keepalive_pair()
    for second in range(1, 120):
        pair.now = float(second)
        pair.server.tick(now=pair.now)
        pair.agent.tick(now=pair.now)
        pair.pump()
    assert pair.server.is_open
    assert pair.agent.is_open
    assert not any(isinstance(e, PeerDead) for e in pair.take_server_events() + pair.take_agent_events())


def test_a_silent_peer_is_declared_dead_and_its_streams_fail() -> None:
    pair = keepalive_pair()
    stream_id = pair.open_accepted_stream()
    for second in range(1, 30):
        pair.server.tick(now=float(second))  # pings go out, nothing comes back
    assert pair.server.is_open
    pair.server.tick(now=30.0)
    events = pair.server.events()
    assert events[0] == PeerDead(silence=30.0)
    assert isinstance(events[1], StreamReset)
    assert events[1].stream_id == stream_id
    assert "dead peer timeout" in events[1].message
    assert pair.server.closed


def test_a_peer_that_never_says_hello_is_dead_after_the_timeout() -> None:
    server = TunnelSession(role="server", now=100.0, ping_interval=1.0, dead_peer_timeout=5.0)
    server.check_timeouts(now=104.0)
    assert server.events() == []
    server.check_timeouts(now=105.0)
    assert server.events() == [PeerDead(silence=5.0)]


def test_an_unanswered_dial_fails_after_the_dial_timeout() -> None:
    pair = keepalive_pair()
    stream_id = pair.server.open_stream({"path": "/"}, now=0.0)
    pair.pump()
    pair.take_agent_events()  # the agent sees the dial but never answers
    pair.server.tick(now=4.0)
    assert pair.take_server_events() == []
    pair.server.tick(now=5.0)
    (event,) = pair.take_server_events()
    assert event == DialFailed(
        stream_id=stream_id, message="dial timed out after 5.0s without an answer from the peer"
    )
    pair.pump()
    (agent_event,) = pair.take_agent_events()
    assert isinstance(agent_event, StreamReset)
    assert agent_event.by_peer
    assert pair.agent.open_stream_ids == frozenset()


def test_next_deadline_is_the_earliest_timer_the_session_has() -> None:
    pair = keepalive_pair()
    assert pair.server.next_deadline == 10.0  # the first ping
    pair.server.open_stream({"path": "/"}, now=1.0)
    assert pair.server.next_deadline == 6.0  # the dial's timeout comes first
    pair.server.close()
    assert pair.server.next_deadline == float("inf")


def test_a_tick_that_runs_late_does_not_count_its_own_lateness_as_the_peers_silence() -> None:
    pair = keepalive_pair()
    pair.now = 10.0
    pair.server.tick(now=10.0)  # ping, answered at once
    pair.pump()
    assert pair.server.next_deadline == 20.0
    pair.now = 95.0  # the server's loop was starved from 10 s to 95 s: its next tick runs 75 s late
    pair.server.tick(now=95.0)
    assert pair.server.is_open
    assert not any(isinstance(e, PeerDead) for e in pair.take_server_events())
    assert pair.server.stalled_seconds == 75.0
    pair.pump()  # the ping that tick sent is answered: the peer was alive all along
    assert any(isinstance(e, PongReceived) for e in pair.take_server_events())


def test_a_peer_that_stays_silent_after_a_stall_is_dead_after_the_timeout_of_awake_time() -> None:
    pair = keepalive_pair()  # nothing received since 0 s
    pair.server.tick(now=10.0)  # ping, never answered
    pair.server.tick(now=95.0)  # 75 s late: credited, so 20 s of silence count; a second ping goes out
    assert pair.server.is_open
    assert pair.server.next_deadline == 105.0  # the dead-peer deadline, moved by the 75 s
    pair.server.tick(now=104.9)
    assert pair.server.is_open
    pair.server.tick(now=105.0)  # 30 s of silence this side was awake for, two pings unanswered
    (dead, *_) = pair.server.events()
    assert dead == PeerDead(silence=30.0)
    assert pair.server.closed


def test_a_peer_is_not_declared_dead_before_enough_pings_went_unanswered() -> None:
    pair = keepalive_pair()
    pair.server.check_timeouts(now=30.0)  # 30 s of silence, but nobody asked the peer anything
    assert pair.server.is_open
    pair.server.tick(now=30.0)  # the tick due at 10 s runs 20 s late: credited; it pings
    assert pair.server.is_open
    (ping,) = sent_frames(pair.server)
    assert ping.type is FrameType.PING


def test_dead_peer_pings_must_fit_in_the_dead_peer_timeout() -> None:
    with pytest.raises(ValueError, match="dead_peer_pings"):
        TunnelSession(role="agent", now=0.0, ping_interval=20.0, dead_peer_timeout=60.0, dead_peer_pings=3)
    with pytest.raises(ValueError, match="dead_peer_pings"):
        TunnelSession(role="agent", now=0.0, dead_peer_pings=0)
