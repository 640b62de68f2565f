"""Fixtures for the tunnel server's tests: real pieces end to end.

A real PostgreSQL (the cluster row and its agent token hash, ``cluster_agents``), a real Redis registry, a
real kube-apiserver with kaas's RBAC (``tests.kube_targets``: the session's real control plane, a namespace
of the test's own; the Python stand-in only where the programs are not built and services not required),
real WebSockets on loopback, the real agent runtime.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy.orm import Session, sessionmaker

from agents.config import AgentConfig, KubeconfigApiserver
from agents.runtime import run_agent
from kaas_core.credential_cache import RevocationFeed
from kaas_core.internal_hop import ASSERTION_HEADER, INTERNAL_PROXY_PREFIX, ProxyAssertion, assertion_key
from kaas_core.tunnel_registry import RedisTunnelRegistry
from kaas_tunnel.config import TunnelSettings
from kaas_tunnel.server import TunnelServer
from tests.conftest import REAL_CONTROL_PLANES, uses_any_fixture
from tests.kube_targets import KAAS_RBAC_MANIFEST, KubeTarget, kube_target
from tests.provider.factories import CreatedCluster, create_cluster

__all__ = ["KAAS_RBAC_MANIFEST"]
INTERNAL_SECRET = "internal-secret-for-the-tunnel-tests-0123456789"
METRICS_TOKEN = "metrics-token-for-the-tunnel-tests-0123456789"
VIEWER_GROUPS = ("kaas:authenticated", "kaas:viewer")
MEMBER_GROUPS = ("kaas:authenticated", "kaas:member")
STREAM_WINDOW = 64 * 1024


def pytest_itemcollected(item: pytest.Item) -> None:
    """Every test here commits: the tunnel server writes in threads of its own while the test reads
    (tests/conftest.py: committing). One with an apiserver may start a real control plane."""
    item.add_marker(pytest.mark.committing)
    if uses_any_fixture(item, frozenset({"kube", "own_kube"})):
        item.add_marker(REAL_CONTROL_PLANES)


@pytest.fixture
def kube(request: pytest.FixtureRequest) -> Iterator[KubeTarget]:
    with kube_target(request) as target:
        yield target


@pytest.fixture
def own_kube(request: pytest.FixtureRequest) -> Iterator[KubeTarget]:
    """An apiserver of the test's own (a test that counts Nodes cannot share one)."""
    with kube_target(request, dedicated=True) as target:
        yield target


@pytest.fixture
async def admin(kube: KubeTarget) -> AsyncIterator[httpx.AsyncClient]:
    """Straight to the apiserver as cluster admin (to arrange objects without the tunnel)."""
    async with kube.async_admin() as client:
        yield client


@pytest.fixture
def cluster(session_factory: sessionmaker[Session]) -> CreatedCluster:
    return create_cluster(session_factory)


@pytest.fixture
async def registry(redis_url: str) -> AsyncIterator[RedisTunnelRegistry]:
    client = Redis.from_url(redis_url)
    yield RedisTunnelRegistry(client, ttl_seconds=3.0)
    await client.aclose()


def tunnel_settings(**overrides: Any) -> TunnelSettings:
    values: dict[str, Any] = {
        "tunnel_host": "127.0.0.1",
        "tunnel_port": 0,
        "internal_host": "127.0.0.1",
        "internal_port": 0,
        "tunnel_internal_secret": SecretStr(INTERNAL_SECRET),
        "metrics_token": SecretStr(METRICS_TOKEN),
        "dial_timeout_seconds": 5.0,
        "response_head_timeout_seconds": 10.0,
        "stream_window_bytes": STREAM_WINDOW,
        "registry_ttl_seconds": 3.0,
    }
    values.update(overrides)
    return TunnelSettings(**values)


ServerFactory = Callable[..., Awaitable[TunnelServer]]


@pytest.fixture
async def make_server(
    session_factory: sessionmaker[Session], registry: RedisTunnelRegistry
) -> AsyncIterator[ServerFactory]:
    servers: list[TunnelServer] = []

    async def make(*, revocation_feed: RevocationFeed | None = None, **overrides: Any) -> TunnelServer:
        server = TunnelServer(
            tunnel_settings(**overrides),
            session_factory=session_factory,
            registry=registry,
            revocation_feed=revocation_feed,
        )
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def server(make_server: ServerFactory) -> TunnelServer:
    return await make_server()


def agent_config(
    *,
    tunnel_url: str,
    cluster: CreatedCluster,
    kube: KubeTarget,
    tmp_path: Path,
    token: str | None = None,
    backoff: tuple[float, float] = (0.05, 0.3),
) -> AgentConfig:
    kubeconfig = kube.write_agent_kubeconfig(tmp_path / "agent.kubeconfig")
    return AgentConfig(
        tunnel_url=tunnel_url,
        cluster_id=cluster.id,
        agent_token=SecretStr(token or cluster.agent_token),
        apiserver=KubeconfigApiserver(kubeconfig=kubeconfig),
        report_interval_seconds=0.3,
        reconnect_backoff_min_seconds=backoff[0],
        reconnect_backoff_max_seconds=backoff[1],
    )


async def wait_until(predicate: Callable[[], Any], *, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class NoJitter(random.Random):
    """Always the longest backoff: an agent that must not come back during a test."""

    def uniform(self, a: float, b: float) -> float:
        return b


@asynccontextmanager
async def running_agent(
    config: AgentConfig, *, rng: random.Random | None = None
) -> AsyncIterator[asyncio.Task[None]]:
    """``run_agent`` in a task for the block; stopped cleanly (and checked to stop) at the end."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(config, stop=stop, rng=rng))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


@asynccontextmanager
async def connected_agent(
    server: TunnelServer,
    cluster: CreatedCluster,
    kube: KubeTarget,
    tmp_path: Path,
    *,
    stays_away: bool = False,
) -> AsyncIterator[asyncio.Task[None]]:
    """A running agent, connected. ``stays_away``: once disconnected it waits 30 s before coming back."""
    config = agent_config(
        tunnel_url=server.tunnel_url,
        cluster=cluster,
        kube=kube,
        tmp_path=tmp_path,
        backoff=(30.0, 30.0) if stays_away else (0.05, 0.3),
    )
    async with running_agent(config, rng=NoJitter() if stays_away else None) as task:
        await wait_until(lambda: server.session_for(cluster.id) is not None, what="the agent to connect")
        yield task


def signed_assertion(cluster_id: str, method: str, target: str, *, user: str, groups: tuple[str, ...]) -> str:
    """The ``X-Kaas-Proxy-Assertion`` the API's k8s proxy would send for this request."""
    assertion = ProxyAssertion.issue(
        cluster_id=cluster_id, user=user, groups=groups, method=method, target=target, now=time.time()
    )
    return assertion.sign(assertion_key(INTERNAL_SECRET))


def proxy_client(
    server: TunnelServer,
    cluster_id: str,
    *,
    user: str = "alice",
    groups: tuple[str, ...] = MEMBER_GROUPS,
    timeout: float = 30.0,
) -> httpx.AsyncClient:
    """A client of the tunnel server's internal endpoint that signs each request as the API would, for
    ``cluster_id`` and the given caller (a request that already carries an assertion keeps its own)."""

    async def sign(request: httpx.Request) -> None:
        if ASSERTION_HEADER not in request.headers:
            target = request.url.raw_path.decode("latin-1").removeprefix(INTERNAL_PROXY_PREFIX)
            request.headers[ASSERTION_HEADER] = signed_assertion(
                cluster_id, request.method, target, user=user, groups=groups
            )

    return httpx.AsyncClient(
        base_url=server.internal_url, event_hooks={"request": [sign]}, timeout=timeout, trust_env=False
    )


def proxy_path(k8s_path: str) -> str:
    return f"{INTERNAL_PROXY_PREFIX}{k8s_path}"
