"""Two real ``TunnelSession``s (server and agent) wired back to back, plus raw-frame helpers.

``Pair.pump()`` moves every queued message both ways until neither side has anything to send, the way the
asyncio wrappers would over a WebSocket, and records each side's events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from agents.tunnel import Event, TunnelSession
from agents.tunnel.frames import Frame, FrameType, decode_frame, encode_frame, encode_json

SMALL_WINDOW = 16 * 1024


@dataclass
class Pair:
    server: TunnelSession
    agent: TunnelSession
    now: float = 0.0
    server_events: list[Event] = field(default_factory=list)
    agent_events: list[Event] = field(default_factory=list)

    def pump(self) -> None:
        for _ in range(1000):
            to_agent = self.server.data_to_send()
            to_server = self.agent.data_to_send()
            if not to_agent and not to_server:
                break
            for message in to_agent:
                self.agent.receive_data(message, now=self.now)
            for message in to_server:
                self.server.receive_data(message, now=self.now)
            self.collect()
        self.collect()

    def collect(self) -> None:
        self.server_events.extend(self.server.events())
        self.agent_events.extend(self.agent.events())

    def take_server_events(self) -> list[Event]:
        self.collect()
        events, self.server_events = self.server_events, []
        return events

    def take_agent_events(self) -> list[Event]:
        self.collect()
        events, self.agent_events = self.agent_events, []
        return events

    def open_accepted_stream(self, metadata: dict[str, Any] | None = None) -> int:
        stream_id = self.server.open_stream(metadata or {"path": "/version"}, now=self.now)
        self.pump()
        self.agent.accept_dial(stream_id)
        self.pump()
        self.take_server_events()
        self.take_agent_events()
        return stream_id


def make_pair(**limits: Any) -> Pair:
    server = TunnelSession(role="server", now=0.0, info={"server": "kaas-test"}, **limits)
    agent = TunnelSession(
        role="agent", now=0.0, info={"cluster_id": "c-123", "agent_version": "0.1.0"}, **limits
    )
    pair = Pair(server=server, agent=agent)
    pair.pump()
    pair.take_server_events()
    pair.take_agent_events()
    return pair


@pytest.fixture
def pair() -> Pair:
    """A handshaken server/agent pair with a 16 KiB window per stream."""
    return make_pair(initial_window=SMALL_WINDOW, max_buffered_per_stream=SMALL_WINDOW)


def raw(frame_type: FrameType, stream_id: int = 0, payload: bytes = b"", flags: int = 0) -> bytes:
    return encode_frame(Frame(type=frame_type, stream_id=stream_id, payload=payload, flags=flags))


def hello(role: str, **overrides: Any) -> bytes:
    body: dict[str, Any] = {
        "versions": [1],
        "role": role,
        "info": {},
        "max_frame_size": 65536,
        "initial_window": SMALL_WINDOW,
        "max_streams": 100,
    }
    body.update(overrides)
    return raw(FrameType.HELLO, payload=encode_json(body))


def sent_frames(session: TunnelSession) -> list[Frame]:
    return [decode_frame(message, max_payload=2**32 - 1) for message in session.data_to_send()]
