"""Two tunnel-server processes (``kaas tunnel``, as deployed) behind one Redis registry: a kubectl request
through the API's k8s proxy reaches the process that holds the cluster's agent, in one hop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.app import create_app
from kaas_api.config import ApiSettings
from kaas_api.projects.service import set_member
from kaas_api.users.service import create_user
from kaas_core.db.models import Role
from kaas_core.db.session import session_scope
from kaas_core.internal_hop import ASSERTION_HEADER
from kaas_core.tunnel_registry import RedisTunnelRegistry
from tests.kaas_api.conftest import RecordingDispatcher
from tests.kaas_tunnel.conftest import (
    INTERNAL_SECRET,
    agent_config,
    proxy_path,
    running_agent,
    signed_assertion,
    wait_until,
)
from tests.kube_targets import KubeTarget
from tests.provider.factories import TEST_SECRET_KEY, CreatedCluster, ensure_project

pytestmark = pytest.mark.redis

STARTED = re.compile(r"agents at (?P<tunnel>ws://\S+), internal endpoint at (?P<internal>http://\S+)")
NAMESPACES = "/api/v1/namespaces"


@dataclass(frozen=True)
class TunnelProcess:
    proc: subprocess.Popen[bytes]
    tunnel_url: str
    internal_url: str


@contextmanager
def kaas_tunnel(database_url: str, redis_url: str, log: Path) -> Iterator[TunnelProcess]:
    """``kaas tunnel`` in its own process on free ports, read back from its startup line."""
    env = {
        **os.environ,
        "KAAS_DATABASE_URL": database_url,
        "KAAS_REDIS_URL": redis_url,
        "KAAS_TUNNEL_PORT": "0",
        "KAAS_INTERNAL_PORT": "0",
        "KAAS_TUNNEL_INTERNAL_SECRET": INTERNAL_SECRET,
        "KAAS_REGISTRY_TTL_SECONDS": "3",
        "KAAS_LOG_LEVEL": "INFO",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kaas_cli.main", "tunnel"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while (found := STARTED.search(log.read_text(errors="replace"))) is None:
            assert proc.poll() is None, f"kaas tunnel exited: {log.read_text(errors='replace')[-2000:]}"
            assert time.monotonic() < deadline, "kaas tunnel did not start within 60 s"
            time.sleep(0.1)
        yield TunnelProcess(proc=proc, tunnel_url=found["tunnel"], internal_url=found["internal"])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def owner_token(session_factory: sessionmaker[Session]) -> str:
    with session_scope(session_factory) as session:
        _user, token = create_user(session, name="routed")
        set_member(session, ensure_project(session), "routed", Role.OWNER)
    return token


@pytest.fixture
async def api(
    session_factory: sessionmaker[Session], redis_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, RedisTunnelRegistry]]:
    """The API app (its k8s proxy) on the shared Redis registry, called in this event loop."""
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    registry = RedisTunnelRegistry(redis, ttl_seconds=3.0)
    settings = ApiSettings(
        secret_key=TEST_SECRET_KEY,
        database_url="postgresql+psycopg://unused/unused",
        tunnel_internal_secret=SecretStr(INTERNAL_SECRET),
    )
    app = create_app(
        settings, session_factory=session_factory, dispatcher=RecordingDispatcher(), tunnel_registry=registry
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kaas") as client:
        yield client, registry
    await redis.aclose()


async def test_the_k8s_proxy_reaches_the_process_holding_the_agent_in_one_hop(
    migrated_database_url: str,
    redis_url: str,
    cluster: CreatedCluster,
    kube: KubeTarget,
    owner_token: str,
    api: tuple[httpx.AsyncClient, RedisTunnelRegistry],
    tmp_path: Path,
) -> None:
    client, registry = api
    internal_path = proxy_path(NAMESPACES)
    with (
        kaas_tunnel(migrated_database_url, redis_url, tmp_path / "one.log") as one,
        kaas_tunnel(migrated_database_url, redis_url, tmp_path / "two.log") as two,
    ):
        for holder, other in ((two, one), (one, two)):  # the agent lands on two, then moves to one
            config = agent_config(tunnel_url=holder.tunnel_url, cluster=cluster, kube=kube, tmp_path=tmp_path)
            async with running_agent(config):

                async def registered(holder: TunnelProcess = holder) -> bool:
                    location = await registry.lookup(cluster.id)
                    return location is not None and location.address == holder.internal_url

                await wait_until(registered, what=f"the registry to point at {holder.internal_url}")
                proxied = await client.get(
                    f"/k8s/clusters/{cluster.id}{NAMESPACES}",
                    headers={"Authorization": f"Bearer {owner_token}"},
                )
                signed = {
                    ASSERTION_HEADER: signed_assertion(
                        cluster.id,
                        "GET",
                        NAMESPACES,
                        user="routed",
                        groups=("kaas:authenticated", "kaas:owner"),
                    )
                }
                async with httpx.AsyncClient(trust_env=False) as direct:
                    at_other = await direct.get(other.internal_url + internal_path, headers=signed)
                    at_holder = await direct.get(holder.internal_url + internal_path, headers=signed)
            assert proxied.status_code == 200, proxied.text
            assert "default" in [ns["metadata"]["name"] for ns in proxied.json()["items"]]
            assert at_holder.status_code == 200
            assert at_other.status_code == 503  # the other process holds no session: no second hop
            assert "not connected" in at_other.json()["message"]
