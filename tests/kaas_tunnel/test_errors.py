"""What the internal endpoint answers when the agent refuses, stalls or breaks the protocol."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import connect

from agents.tunnel import TunnelSession
from agents.tunnel.connection import TunnelConnection, TunnelStream
from kaas_tunnel.server import TunnelServer
from tests.kaas_tunnel.conftest import ServerFactory, proxy_client, proxy_path, wait_until
from tests.provider.factories import CreatedCluster

DialBehaviour = Any


@asynccontextmanager
async def fake_agent(
    server: TunnelServer, cluster: CreatedCluster, on_dial: DialBehaviour
) -> AsyncIterator[None]:
    """A hand-driven agent on the real driver: it answers dials however the test says."""
    async with connect(
        server.tunnel_url,
        additional_headers={"Authorization": f"Bearer {cluster.agent_token}"},
        proxy=None,
        compression=None,
    ) as websocket:
        loop = asyncio.get_running_loop()
        connection = TunnelConnection(
            websocket, TunnelSession(role="agent", now=loop.time()), on_dial=on_dial
        )
        runner = asyncio.create_task(connection.run())
        try:
            await wait_until(lambda: server.session_for(cluster.id) is not None, what="the fake agent")
            yield
        finally:
            connection.close("test over")
            await runner


async def test_a_refused_dial_answers_502_with_the_agents_message(
    server: TunnelServer, cluster: CreatedCluster
) -> None:
    async def refuse(connection: TunnelConnection, stream: TunnelStream, metadata: dict[str, Any]) -> None:
        connection.reject(stream, "the apiserver is on fire")

    async with fake_agent(server, cluster, refuse), proxy_client(server, cluster.id) as client:
        response = await client.get(proxy_path("/api/v1/namespaces"))
    assert response.status_code == 502
    assert "the apiserver is on fire" in response.json()["message"]


async def test_an_unanswered_dial_answers_504(make_server: ServerFactory, cluster: CreatedCluster) -> None:
    server = await make_server(dial_timeout_seconds=0.5)

    async def ignore(connection: TunnelConnection, stream: TunnelStream, metadata: dict[str, Any]) -> None:
        await asyncio.Event().wait()

    async with fake_agent(server, cluster, ignore), proxy_client(server, cluster.id) as client:
        response = await client.get(proxy_path("/api/v1/namespaces"))
        assert response.status_code == 504
        live = server.session_for(cluster.id)
        assert live is not None
        assert live.connection.stream_count == 0  # the abandoned dial was reset, not leaked


async def test_an_answer_without_a_head_in_time_answers_504(
    make_server: ServerFactory, cluster: CreatedCluster
) -> None:
    server = await make_server(response_head_timeout_seconds=0.5)

    async def accept_and_stall(
        connection: TunnelConnection, stream: TunnelStream, metadata: dict[str, Any]
    ) -> None:
        connection.accept(stream)
        await asyncio.Event().wait()

    async with fake_agent(server, cluster, accept_and_stall), proxy_client(server, cluster.id) as client:
        response = await client.get(proxy_path("/api/v1/namespaces"))
    assert response.status_code == 504


async def test_a_garbled_response_head_answers_502(server: TunnelServer, cluster: CreatedCluster) -> None:
    async def garble(connection: TunnelConnection, stream: TunnelStream, metadata: dict[str, Any]) -> None:
        connection.accept(stream)
        await stream.write(b"\x00\x00\x00\x05hello")
        stream.close_write()

    async with fake_agent(server, cluster, garble), proxy_client(server, cluster.id) as client:
        response = await client.get(proxy_path("/api/v1/namespaces"))
    assert response.status_code == 502
