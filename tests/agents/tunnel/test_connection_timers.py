"""The asyncio driver's timers over real WebSockets: ticks at the session's deadlines, re-armed by a dial,
and a loop that blocks for longer than the dead-peer timeout keeps its live sessions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from agents.tunnel import TunnelSession
from agents.tunnel.connection import DialHandler, StreamClosedError, TunnelConnection, TunnelStream


@dataclass
class Ends:
    server: TunnelConnection
    agent: TunnelConnection


@asynccontextmanager
async def connected(*, on_agent_dial: DialHandler | None = None, **limits: Any) -> AsyncIterator[Ends]:
    """A server and an agent connection over a real loopback WebSocket, both sessions with ``limits``."""
    loop = asyncio.get_running_loop()
    server_side: asyncio.Future[TunnelConnection] = loop.create_future()
    done = asyncio.Event()

    async def handler(websocket: ServerConnection) -> None:
        connection = TunnelConnection(websocket, TunnelSession(role="server", now=loop.time(), **limits))
        server_side.set_result(connection)
        await connection.run()
        await done.wait()

    async with serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/", compression=None, ping_interval=None) as websocket:
            agent = TunnelConnection(
                websocket, TunnelSession(role="agent", now=loop.time(), **limits), on_dial=on_agent_dial
            )
            runner = asyncio.create_task(agent.run())
            server_connection = await asyncio.wait_for(server_side, 5)
            await asyncio.wait_for(agent.hello.wait(), 5)
            try:
                yield Ends(server=server_connection, agent=agent)
            finally:
                agent.close("test over")
                await asyncio.wait_for(runner, 10)
                done.set()


async def test_the_ticker_pings_when_the_session_wants_it() -> None:
    async with connected(ping_interval=0.2, dead_peer_timeout=1.0, sync_interval=0.3) as ends:
        deadline = time.monotonic() + 5
        while ends.server.session.rtt is None or ends.agent.session.rtt is None:
            assert time.monotonic() < deadline, "no ping was answered"
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.5)  # past the dead-peer timeout: the pings keep both ends alive
        assert ends.server.session.is_open
        assert ends.agent.session.is_open


async def test_a_dial_rearms_the_ticker_for_its_timeout() -> None:
    async def never_answers(connection: TunnelConnection, stream: TunnelStream, metadata: Any) -> None:
        await asyncio.Event().wait()

    limits = {"ping_interval": 100.0, "dead_peer_timeout": 300.0, "sync_interval": 300.0, "dial_timeout": 0.3}
    async with connected(on_agent_dial=never_answers, **limits) as ends:
        started = time.monotonic()
        with pytest.raises(StreamClosedError, match="dial timed out"):
            await ends.server.open_stream({"path": "/"}, timeout=10)
        assert time.monotonic() - started < 3  # the dial's deadline, not the next ping 100 s away


async def test_a_loop_blocked_past_the_dead_peer_timeout_keeps_its_live_sessions() -> None:
    async with connected(ping_interval=0.3, dead_peer_timeout=1.0, sync_interval=10.0) as ends:
        await asyncio.sleep(0.5)
        time.sleep(2.0)
        await asyncio.sleep(1.0)  # the ticks run late, then on time again; pings are answered
        assert ends.server.session.is_open, ends.server.session.closed_reason
        assert ends.agent.session.is_open, ends.agent.session.closed_reason
        assert ends.server.session.stalled_seconds >= 1.0
