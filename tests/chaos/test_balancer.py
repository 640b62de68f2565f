"""The HA harness's TCP balancer (``tests.chaos.balancer``): round robin, a dead backend skipped, 502 when
none is left."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.chaos.balancer import BAD_GATEWAY, Backend, Balancer, serve


async def _named_server(name: bytes) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(name)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


def _port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


async def _ask(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"hello")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


@pytest.fixture
async def two_backends() -> AsyncIterator[tuple[asyncio.Server, asyncio.Server, Balancer, int]]:
    first, second = await _named_server(b"first"), await _named_server(b"second")
    balancer = Balancer(
        [Backend("127.0.0.1", _port(first)), Backend("127.0.0.1", _port(second))], health_interval=0.05
    )
    listener = await asyncio.start_server(balancer.handle, "127.0.0.1", 0)
    port = _port(listener)
    listener.close()
    await listener.wait_closed()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(balancer, host="127.0.0.1", port=port, stop=stop))
    await asyncio.sleep(0.1)
    yield first, second, balancer, port
    stop.set()
    await task
    for server in (first, second):
        server.close()


async def test_connections_alternate_between_the_healthy_backends(
    two_backends: tuple[asyncio.Server, asyncio.Server, Balancer, int],
) -> None:
    *_, port = two_backends
    answers = {await _ask(port) for _ in range(4)}
    assert answers == {b"first", b"second"}


async def test_a_killed_backend_receives_no_new_connection(
    two_backends: tuple[asyncio.Server, asyncio.Server, Balancer, int],
) -> None:
    first, _, balancer, port = two_backends
    first.close()
    await first.wait_closed()
    answers = [await _ask(port) for _ in range(6)]
    assert answers == [b"second"] * 6
    assert not balancer.backends[0].healthy


async def test_no_backend_left_answers_bad_gateway(
    two_backends: tuple[asyncio.Server, asyncio.Server, Balancer, int],
) -> None:
    first, second, balancer, port = two_backends
    for server in (first, second):
        server.close()
        await server.wait_closed()
    assert await _ask(port) == BAD_GATEWAY
    assert balancer.bad_gateways == 1
