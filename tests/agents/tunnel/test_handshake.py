"""HELLO: both sides learn each other's info and agree on a version, or the session closes clearly."""

from __future__ import annotations

import pytest

from agents.tunnel import (
    HelloReceived,
    ProtocolError,
    SessionClosed,
    TunnelNotReadyError,
    TunnelSession,
)
from agents.tunnel.frames import FrameType, decode_message
from tests.agents.tunnel.conftest import hello, make_pair, raw, sent_frames


def test_both_sides_receive_the_peer_info_and_agree_on_version_1() -> None:
    server = TunnelSession(role="server", now=0.0, info={"server": "kaas"})
    agent = TunnelSession(role="agent", now=0.0, info={"cluster_id": "c-1", "agent_version": "0.1.0"})
    for message in agent.data_to_send():
        server.receive_data(message, now=0.0)
    for message in server.data_to_send():
        agent.receive_data(message, now=0.0)
    assert server.events() == [HelloReceived(version=1, info={"cluster_id": "c-1", "agent_version": "0.1.0"})]
    assert agent.events() == [HelloReceived(version=1, info={"server": "kaas"})]
    assert server.is_open
    assert agent.is_open
    assert server.peer_info["cluster_id"] == "c-1"


def test_a_session_cannot_open_streams_before_the_handshake() -> None:
    server = TunnelSession(role="server", now=0.0)
    with pytest.raises(TunnelNotReadyError):
        server.open_stream({"path": "/"}, now=0.0)


def test_an_unsupported_peer_version_closes_the_session_with_both_version_lists() -> None:
    server = TunnelSession(role="server", now=0.0)
    server.data_to_send()
    server.receive_data(hello("agent", versions=[2, 3]), now=0.0)
    (event,) = server.events()
    assert isinstance(event, ProtocolError)
    assert (
        "unsupported tunnel protocol version: the peer speaks [2, 3], this side speaks [1]" in event.message
    )
    assert server.closed
    (goaway,) = sent_frames(server)
    assert goaway.type is FrameType.GOAWAY
    assert "the peer speaks [2, 3]" in decode_message(goaway.payload)


def test_the_refused_peer_learns_the_reason_from_goaway() -> None:
    server = TunnelSession(role="server", now=0.0)
    agent = TunnelSession(role="agent", now=0.0)
    agent.data_to_send()
    server.data_to_send()
    server.receive_data(hello("agent", versions=[7]), now=0.0)
    for message in server.data_to_send():
        agent.receive_data(message, now=0.0)
    (event,) = agent.events()
    assert isinstance(event, SessionClosed)
    assert event.by_peer
    assert "the peer speaks [7]" in event.message
    assert agent.closed


def test_a_frame_before_hello_is_a_protocol_error() -> None:
    agent = TunnelSession(role="agent", now=0.0)
    agent.receive_data(raw(FrameType.PING, payload=bytes(8)), now=0.0)
    assert agent.events() == [ProtocolError(message="expected HELLO first, got PING")]
    assert agent.closed


def test_a_peer_claiming_the_same_role_is_refused() -> None:
    agent = TunnelSession(role="agent", now=0.0)
    agent.receive_data(hello("agent"), now=0.0)
    (event,) = agent.events()
    assert isinstance(event, ProtocolError)
    assert "expected 'server'" in event.message


def test_a_second_hello_is_a_protocol_error() -> None:
    pair = make_pair()
    pair.agent.receive_data(hello("server"), now=0.0)
    assert pair.agent.events() == [ProtocolError(message="duplicate HELLO")]


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ({"versions": "1"}, "must list the peer's protocol versions"),
        ({"max_frame_size": 100}, "max_frame_size must be an integer >= 4096"),
        ({"initial_window": 0}, "initial_window must be a positive"),
        ({"max_streams": True}, "max_streams must be a positive integer"),
        ({"info": []}, "info must be a JSON object"),
    ],
)
def test_a_malformed_hello_is_refused(override: dict[str, object], error: str) -> None:
    agent = TunnelSession(role="agent", now=0.0)
    agent.receive_data(hello("server", **override), now=0.0)
    (event,) = agent.events()
    assert isinstance(event, ProtocolError)
    assert error in event.message


def test_hello_that_is_not_json_is_refused() -> None:
    agent = TunnelSession(role="agent", now=0.0)
    agent.receive_data(raw(FrameType.HELLO, payload=b"\xff{"), now=0.0)
    (event,) = agent.events()
    assert isinstance(event, ProtocolError)
    assert "HELLO payload is not valid JSON" in event.message


def test_limits_are_validated_when_the_session_is_built() -> None:
    with pytest.raises(ValueError, match="max_frame_size"):
        TunnelSession(role="agent", now=0.0, max_frame_size=100)
    with pytest.raises(ValueError, match="initial_window <= max_buffered_per_stream"):
        TunnelSession(role="agent", now=0.0, initial_window=2048, max_buffered_per_stream=1024)
    with pytest.raises(ValueError, match="ping_interval < dead_peer_timeout"):
        TunnelSession(role="agent", now=0.0, ping_interval=30, dead_peer_timeout=10)
    with pytest.raises(ValueError, match="HELLO info is too large"):
        TunnelSession(role="agent", now=0.0, info={"x": "y" * 5000})
