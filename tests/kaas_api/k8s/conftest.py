"""Fixtures of the k8s proxy tests: the whole real chain on loopback.

kubectl or httpx → the kaas API (served over HTTPS by uvicorn in the test's event loop, like ``kaas up`` must)
→ the registry (in memory, shared with the tunnel server, as in the embedded mode) → the real tunnel server
→ the real agent over a WebSocket → a real kube-apiserver with kaas's RBAC applied (``tests.kube_targets``: a
namespace of the test's own in the session's real control plane; the Python stand-in only where the programs
are not built and services not required). The API's world (users of every role, cluster ``c1`` in project
``alpha``) comes from ``tests.kaas_api.conftest``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.app import create_app
from kaas_api.config import ApiSettings
from kaas_core.db.models import Cluster
from kaas_core.security import SecretBox
from kaas_core.serving.limits import server_config
from kaas_core.tunnel_registry import InMemoryTunnelRegistry
from kaas_tunnel.server import TunnelServer
from simcloud.kube.tls import make_serving_certificate
from tests.conftest import REAL_CONTROL_PLANES, uses_any_fixture
from tests.kaas_api.conftest import SECRET_KEY, RecordingDispatcher, World
from tests.kaas_tunnel.conftest import (
    INTERNAL_SECRET,
    agent_config,
    running_agent,
    tunnel_settings,
    wait_until,
)
from tests.kube_targets import STANDIN, KubeTarget, kube_target
from tests.provider.factories import CreatedCluster


def pytest_itemcollected(item: pytest.Item) -> None:
    """Every test here commits: uvicorn serves the API while the tunnel server writes in threads of its
    own (tests/conftest.py: committing). One with an apiserver may start a real control plane."""
    item.add_marker(pytest.mark.committing)
    if uses_any_fixture(item, frozenset({"kube"})):
        item.add_marker(REAL_CONTROL_PLANES)


@pytest.fixture
def api_socket() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    certificate = make_serving_certificate()
    files = {"cert": tmp_path / "api.crt", "key": tmp_path / "api.key", "ca": tmp_path / "ca.crt"}
    files["cert"].write_bytes(certificate.cert_pem)
    files["key"].write_bytes(certificate.key_pem)
    files["ca"].write_bytes(certificate.ca_pem)
    return files


@pytest.fixture
def settings(api_socket: socket.socket, tls_files: dict[str, Path]) -> ApiSettings:
    """The API as ``kaas up`` must run it for kubectl: HTTPS on loopback, its CA in the kubeconfigs."""
    port = api_socket.getsockname()[1]
    return ApiSettings(
        secret_key=SECRET_KEY,
        database_url="postgresql+psycopg://unused/unused",
        public_url=f"https://127.0.0.1:{port}",
        tunnel_internal_secret=SecretStr(INTERNAL_SECRET),
        tls_cert_file=tls_files["cert"],
        tls_key_file=tls_files["key"],
        tls_ca_file=tls_files["ca"],
    )


@pytest.fixture
def registry() -> InMemoryTunnelRegistry:
    return InMemoryTunnelRegistry(ttl_seconds=3.0)


@pytest.fixture
def app(
    settings: ApiSettings,
    session_factory: sessionmaker[Session],
    dispatcher: RecordingDispatcher,
    registry: InMemoryTunnelRegistry,
) -> FastAPI:
    return create_app(
        settings, session_factory=session_factory, dispatcher=dispatcher, tunnel_registry=registry
    )


@pytest.fixture
async def api_url(app: FastAPI, settings: ApiSettings, api_socket: socket.socket) -> AsyncIterator[str]:
    """The API served over HTTPS in this event loop as ``kaas up`` serves it (``server_config``: the input
    limits of ``kaas_core.serving``); startup/shutdown, never serve(): no signal handlers."""
    assert settings.tls_cert_file is not None
    assert settings.tls_key_file is not None
    config = server_config(
        app,
        limits=settings.http_limits,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
        ssl_certfile=str(settings.tls_cert_file),
        ssl_keyfile=str(settings.tls_key_file),
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[api_socket])
    await server.on_tick(0)  # the Date and Server headers every response gets, as serve()'s loop sets them
    yield settings.public_url
    server.should_exit = True
    await server.shutdown(sockets=[api_socket])


def api_client(settings: ApiSettings, token: str, *, timeout: float = 30.0) -> httpx.AsyncClient:
    assert settings.tls_ca_file is not None
    return httpx.AsyncClient(
        base_url=settings.public_url,
        headers={"Authorization": f"Bearer {token}"},
        verify=ssl.create_default_context(cafile=str(settings.tls_ca_file)),
        timeout=timeout,
        trust_env=False,
    )


@pytest.fixture
def kube(request: pytest.FixtureRequest) -> Iterator[KubeTarget]:
    """The cluster's apiserver: the kind a test's ``indirect`` parameter names (the contract suite runs
    both), else the real one (``tests.kube_targets.default_kind``)."""
    with kube_target(request, getattr(request, "param", None)) as target:
        yield target


# --- the contract suite's cases the stand-in does not support ----------------------------------------------


STANDIN_UNSUPPORTED: dict[str, str] = {}  # contract case -> what the stand-in lacks (of this run's cases)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A contract case marked ``standin_unsupported`` is expected to fail on the stand-in (strict: once
    the stand-in supports it, the mark must go), and is not even run there when it would only time out."""
    for item in items:
        marker = item.get_closest_marker("standin_unsupported")
        callspec = getattr(item, "callspec", None)
        if marker is None or callspec is None or callspec.params.get("kube") != STANDIN:
            continue
        what = marker.args[0]
        STANDIN_UNSUPPORTED[item.name.split("[")[0]] = what
        item.add_marker(
            pytest.mark.xfail(
                strict=True,
                run=marker.kwargs.get("runs", True),
                reason=f"the stand-in does not support {what}",
            )
        )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if STANDIN_UNSUPPORTED:
        terminalreporter.section("contract cases the stand-in does not support")
        for test, what in sorted(STANDIN_UNSUPPORTED.items()):
            terminalreporter.line(f"{test}: {what}")


@pytest.fixture
async def tunnel_server(
    session_factory: sessionmaker[Session], registry: InMemoryTunnelRegistry
) -> AsyncIterator[TunnelServer]:
    server = TunnelServer(tunnel_settings(), session_factory=session_factory, registry=registry)
    await server.start()
    yield server
    await server.stop()


def world_cluster(world: World, session_factory: sessionmaker[Session]) -> CreatedCluster:
    """The world's cluster ``c1`` with its agent token (decrypted as a worker would for cloud-init)."""
    with session_factory() as session:
        row = session.get(Cluster, world.cluster_id)
        assert row is not None
        assert row.agent_token_encrypted is not None
        token = SecretBox(SECRET_KEY).decrypt(row.agent_token_encrypted)
    return CreatedCluster(id=world.cluster_id, operation_id=world.operation_id, agent_token=token)


@asynccontextmanager
async def connected(
    tunnel_server: TunnelServer,
    registry: InMemoryTunnelRegistry,
    cluster: CreatedCluster,
    kube: KubeTarget,
    tmp_path: Path,
) -> AsyncIterator[None]:
    """The cluster's real agent, connected to the tunnel server and claimed in the registry."""
    config = agent_config(tunnel_url=tunnel_server.tunnel_url, cluster=cluster, kube=kube, tmp_path=tmp_path)
    async with running_agent(config):
        await wait_until(
            lambda: registry.lookup(cluster.id), what="the agent's session to be in the registry"
        )
        yield


KUBECTL = Path(__file__).resolve().parents[3] / ".venv" / "bin" / "kubectl"


async def download_kubeconfig(settings: ApiSettings, world: World, who: str, path: Path) -> str:
    """``who``'s kubeconfig of ``c1``, written to ``path``; returns its text."""
    async with api_client(settings, world.tokens[who]) as client:
        download = await client.get("/v1/projects/alpha/clusters/c1/kubeconfig")
    assert download.status_code == 200, download.text
    path.write_text(download.text)
    return download.text


async def run_kubectl(kubeconfig: Path, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    """The real kubectl with ``kubeconfig``: (exit code, stdout, stderr), bounded at 60 s."""
    process = await asyncio.create_subprocess_exec(
        str(KUBECTL),
        "--kubeconfig",
        str(kubeconfig),
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(stdin), timeout=60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()
