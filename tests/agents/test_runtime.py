"""The agent runtime against a bare tunnel server (the real driver, real WebSockets, the real stand-in)."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

import pytest
from pydantic import SecretStr
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from agents.config import AgentConfig, KubeconfigApiserver
from agents.runtime import backoff_delay, retry_after_delay, run_agent
from agents.tunnel import TunnelSession
from agents.tunnel.connection import StreamClosedError, TunnelConnection, TunnelStream
from agents.tunnel.http import (
    HttpRequestHead,
    ResponseHeadDecoder,
    encode_request_metadata,
)
from simcloud.kube.testing import KubeStandinHandle
from tests.agents.conftest import AGENT_TOKEN, MEMBER_GROUPS, free_port

CLUSTER_TOKEN = "kaasagent_test-token"


@dataclass
class BareServer:
    """A tunnel server with no database: it records what the agent sent and holds the live connection."""

    url: str = ""
    authorizations: list[str] = field(default_factory=list)
    connection: TunnelConnection | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    reports: list[dict[str, object]] = field(default_factory=list)


@asynccontextmanager
async def bare_server() -> AsyncIterator[BareServer]:
    state = BareServer()

    async def on_dial(
        connection: TunnelConnection, stream: TunnelStream, metadata: dict[str, object]
    ) -> None:
        connection.accept(stream)
        body = b""
        while chunk := await stream.read():
            body += chunk
        state.reports.append(json.loads(body))
        stream.close_write()

    async def handler(websocket: ServerConnection) -> None:
        assert websocket.request is not None
        state.authorizations.append(websocket.request.headers.get("Authorization", ""))
        loop = asyncio.get_running_loop()
        connection = TunnelConnection(
            websocket, TunnelSession(role="server", now=loop.time()), on_dial=on_dial
        )
        state.connection = connection
        runner = asyncio.create_task(connection.run())
        await connection.hello.wait()
        state.connected.set()
        await runner

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        state.url = f"ws://127.0.0.1:{port}/v1/tunnel"
        yield state


def config_for(url: str, kube: KubeStandinHandle, tmp_path: Path, **overrides: float) -> AgentConfig:
    return AgentConfig(
        tunnel_url=url,
        cluster_id="c-1",
        agent_token=SecretStr(CLUSTER_TOKEN),
        apiserver=KubeconfigApiserver(kubeconfig=kube.write_kubeconfig(tmp_path / "kc", token=AGENT_TOKEN)),
        report_interval_seconds=overrides.get("report_interval_seconds", 0.2),
        report_heartbeat_seconds=overrides.get("report_heartbeat_seconds", 60.0),
        reconnect_backoff_min_seconds=0.05,
        reconnect_backoff_max_seconds=0.2,
    )


@asynccontextmanager
async def agent_running(config: AgentConfig) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(config, stop=stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)


async def request(connection: TunnelConnection, head: HttpRequestHead) -> tuple[int, bytes]:
    stream = await connection.open_stream(encode_request_metadata(head), timeout=5)
    stream.close_write()
    decoder = ResponseHeadDecoder()
    body = b""
    status = 0
    while chunk := await stream.read():
        if not status:
            result = decoder.feed(chunk)
            if result is None:
                continue
            status, chunk = result[0].status, result[1]
        body += chunk
    return status, body


async def test_the_agent_authenticates_with_its_token_and_serves_requests_as_the_kaas_user(
    kube: KubeStandinHandle, tmp_path: Path
) -> None:
    async with bare_server() as server, agent_running(config_for(server.url, kube, tmp_path)):
        await asyncio.wait_for(server.connected.wait(), 5)
        assert server.authorizations == [f"Bearer {CLUSTER_TOKEN}"]
        assert server.connection is not None
        assert server.connection.session.peer_info["cluster_id"] == "c-1"
        status, body = await request(
            server.connection,
            HttpRequestHead(
                method="POST",
                path="/apis/authentication.k8s.io/v1/selfsubjectreviews",
                user="kaas:dora",
                groups=MEMBER_GROUPS,
                headers=(("Content-Type", "application/json"),),
                body=False,
            ),
        )
        # No body was announced, so the apiserver sees an empty POST and says so; the identity still shows.
        assert status in (201, 400), body
        status, body = await request(
            server.connection,
            HttpRequestHead(method="GET", path="/api/v1/namespaces", user="kaas:dora", groups=MEMBER_GROUPS),
        )
        assert status == 200
        assert json.loads(body)["kind"] == "NamespaceList"


async def test_a_user_without_the_kaas_prefix_is_never_forwarded(
    kube: KubeStandinHandle, tmp_path: Path
) -> None:
    async with bare_server() as server, agent_running(config_for(server.url, kube, tmp_path)):
        await asyncio.wait_for(server.connected.wait(), 5)
        assert server.connection is not None
        status, body = await request(
            server.connection,
            HttpRequestHead(
                method="GET", path="/api/v1/namespaces", user="system:admin", groups=MEMBER_GROUPS
            ),
        )
        assert status == 403
        assert "kaas:" in json.loads(body)["message"]


async def test_a_stream_that_is_not_http_is_refused_with_a_message(
    kube: KubeStandinHandle, tmp_path: Path
) -> None:
    async with bare_server() as server, agent_running(config_for(server.url, kube, tmp_path)):
        await asyncio.wait_for(server.connected.wait(), 5)
        assert server.connection is not None
        with pytest.raises(StreamClosedError, match="invalid request"):
            await server.connection.open_stream({"kind": "exec"}, timeout=5)


async def test_a_reset_watch_releases_the_apiserver_watch(kube: KubeStandinHandle, tmp_path: Path) -> None:
    store = kube.standin.store
    async with bare_server() as server, agent_running(config_for(server.url, kube, tmp_path)):
        await asyncio.wait_for(server.connected.wait(), 5)
        assert server.connection is not None
        head = HttpRequestHead(
            method="GET",
            path="/api/v1/namespaces/default/configmaps?watch=true",
            user="kaas:e",
            groups=MEMBER_GROUPS,
        )
        stream = await server.connection.open_stream(encode_request_metadata(head), timeout=5)
        stream.close_write()
        assert ResponseHeadDecoder().feed(await asyncio.wait_for(stream.read(), 5)) is not None
        assert len(store._watchers) == 1
        stream.reset("kubectl went away")
        for _ in range(100):
            if not store._watchers:
                break
            await asyncio.sleep(0.05)
        assert not store._watchers


async def reports_reach(server: BareServer, count: int, *, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while len(server.reports) < count:
        assert asyncio.get_running_loop().time() < deadline, f"{len(server.reports)} reports, not {count}"
        await asyncio.sleep(0.02)


async def test_the_agent_reports_a_change_at_once_and_nothing_while_nothing_changes(
    kube: KubeStandinHandle, tmp_path: Path
) -> None:
    async with bare_server() as server:
        config = config_for(server.url, kube, tmp_path, report_interval_seconds=0.05)
        async with agent_running(config):
            await reports_reach(server, 1)
            first = server.reports[0]
            assert (first["kubernetes_version"], first["apiserver_reachable"]) == ("v1.30.2", True)
            assert first["nodes_total"] == 0
            node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "status": {}}
            kube.standin.apply([node])
            await reports_reach(server, 2)
            assert server.reports[1]["nodes_total"] == 1
            # twenty observations later, the unchanged cluster has not been reported again
            await asyncio.sleep(20 * config.report_interval_seconds)
            assert len(server.reports) == 2


async def test_an_unchanged_cluster_is_reported_again_at_each_heartbeat(
    kube: KubeStandinHandle, tmp_path: Path
) -> None:
    async with bare_server() as server:
        config = config_for(
            server.url, kube, tmp_path, report_interval_seconds=0.05, report_heartbeat_seconds=0.2
        )
        async with agent_running(config):
            await reports_reach(server, 3)
    assert all(report["nodes_total"] == server.reports[0]["nodes_total"] for report in server.reports)


async def test_the_agent_retries_while_kaas_is_down_and_stops_promptly(
    kube: KubeStandinHandle, tmp_path: Path
) -> None:
    config = config_for(f"ws://127.0.0.1:{free_port()}/v1/tunnel", kube, tmp_path)
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(config, stop=stop))
    await asyncio.sleep(0.5)
    assert not task.done()  # still retrying, forever
    stop.set()
    await asyncio.wait_for(task, timeout=2)


def test_backoff_has_full_jitter_and_a_bounded_maximum() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(attempt, minimum=1.0, maximum=60.0, rng=rng) for attempt in range(200)]
    assert all(0 <= delay <= 60.0 for delay in delays)
    assert max(delays[:3]) <= 4.0  # early attempts stay short
    assert max(delays[10:]) > 30.0  # later ones reach toward the cap, randomly
    assert len(set(delays)) == len(delays)


def test_a_busy_answer_is_waited_out_with_jitter_and_any_other_refusal_is_not() -> None:
    rng = random.Random(3)
    delays = [retry_after_delay(503, "4", maximum=60.0, rng=rng) for _ in range(200)]
    assert all(d is not None and 4.0 <= d < 5.0 for d in delays)  # never before its turn, within its second
    assert len(set(delays)) == len(delays)  # spread over the second, not a second herd
    capped = retry_after_delay(429, "600", maximum=60.0, rng=rng)
    assert capped is not None
    assert 60.0 <= capped < 61.0
    assert retry_after_delay(401, "4", maximum=60.0, rng=rng) is None
    assert retry_after_delay(503, None, maximum=60.0, rng=rng) is None
    assert retry_after_delay(503, "Wed, 21 Oct 2015 07:28:00 GMT", maximum=60.0, rng=rng) is None


async def test_an_agent_told_kaas_is_busy_comes_back_when_told_not_after_its_growing_backoff(
    kube: KubeStandinHandle, tmp_path: Path
) -> None:
    refusals = 3
    dials: list[float] = []

    def busy_at_first(connection: ServerConnection, request: Request) -> Response | None:
        dials.append(asyncio.get_running_loop().time())
        if len(dials) <= refusals:
            response = connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "busy\n")
            response.headers["Retry-After"] = "1"
            return response
        return None

    connected = asyncio.Event()

    async def handler(websocket: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        connection = TunnelConnection(websocket, TunnelSession(role="server", now=loop.time()))
        runner = asyncio.create_task(connection.run())
        await connection.hello.wait()
        connected.set()
        await runner

    async with serve(handler, "127.0.0.1", 0, compression=None, process_request=busy_at_first) as server:
        port = server.sockets[0].getsockname()[1]
        config = config_for(f"ws://127.0.0.1:{port}/v1/tunnel", kube, tmp_path).model_copy(
            update={"reconnect_backoff_min_seconds": 20.0, "reconnect_backoff_max_seconds": 60.0}
        )
        started = asyncio.get_running_loop().time()
        async with agent_running(config):
            await asyncio.wait_for(connected.wait(), timeout=15)
        # three waits of 0.5 to 1.5 s: its own backoff would have waited 0-20 s, 0-40 s, 0-60 s
        assert asyncio.get_running_loop().time() - started < 10
        assert len(dials) == refusals + 1
