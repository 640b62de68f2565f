"""kubectl exec through kaas: a WebSocket (``v5.channel.k8s.io``) from the client to the API's k8s proxy,
relayed by the tunnel server and the agent to the apiserver's exec endpoint, as the caller.

On the real apiserver the command runs in kwok's "container" (on this machine: the session's control plane
lets kwok exec for tests); kwok reports a failed command as an internal error where a kubelet says
``ExitCode``, and never delivers stdin, so piping into a command runs on the stand-in alone
(``test_stdin_is_piped_into_the_command_on_the_standin``)."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from kaas_api.config import ApiSettings
from kaas_core.db.models import AuditEvent
from kaas_core.tunnel_registry import InMemoryTunnelRegistry
from kaas_tunnel.server import TunnelServer
from tests.kaas_api.conftest import World
from tests.kaas_api.k8s.conftest import (
    api_client,
    connected,
    download_kubeconfig,
    run_kubectl,
    world_cluster,
)
from tests.kube_targets import REAL, STANDIN, KubeTarget, kube_target

POD = "web"
V5 = "v5.channel.k8s.io"
STDOUT, STDERR, STATUS = 1, 2, 3


def create_pod(kube: KubeTarget) -> None:
    kube.create_pod(POD)


def exec_url(settings: ApiSettings, world: World, namespace: str, *command: str) -> str:
    query = "&".join(f"command={part}" for part in command) + "&stdout=true&stderr=true"
    base = settings.public_url.replace("https://", "wss://")
    return f"{base}/k8s/clusters/{world.cluster_id}/api/v1/namespaces/{namespace}/pods/{POD}/exec?{query}"


def tls(settings: ApiSettings) -> ssl.SSLContext:
    assert settings.tls_ca_file is not None
    return ssl.create_default_context(cafile=str(settings.tls_ca_file))


@asynccontextmanager
async def exec_socket(
    settings: ApiSettings, world: World, namespace: str, token: str | None, *command: str, **headers: str
) -> AsyncIterator[ClientConnection]:
    sent = dict(headers)
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    async with connect(
        exec_url(settings, world, namespace, *command),
        ssl=tls(settings),
        subprotocols=[V5],  # type: ignore[list-item]
        additional_headers=sent,
        proxy=None,
        open_timeout=20,
    ) as websocket:
        yield websocket


async def channels(websocket: ClientConnection) -> dict[int, bytes]:
    """Everything the exec sent, by channel, until the server closes."""
    received: dict[int, bytes] = {}
    try:
        while True:
            message = await asyncio.wait_for(websocket.recv(), timeout=20)
            assert isinstance(message, bytes)
            received[message[0]] = received.get(message[0], b"") + message[1:]
    except ConnectionClosed:
        return received


async def refusal(
    settings: ApiSettings, world: World, namespace: str, token: str | None, **headers: str
) -> tuple[int, dict]:
    with pytest.raises(InvalidStatus) as refused:
        async with exec_socket(settings, world, namespace, token, "echo", "hi", **headers):
            pass
    response = refused.value.response
    return response.status_code, json.loads(response.body or b"{}")


async def test_a_member_runs_a_command_and_reads_its_output_and_status(
    world: World,
    api_url: str,
    settings: ApiSettings,
    tunnel_server: TunnelServer,
    registry: InMemoryTunnelRegistry,
    session_factory: sessionmaker[Session],
    kube: KubeTarget,
    tmp_path: Path,
) -> None:
    create_pod(kube)
    async with connected(tunnel_server, registry, world_cluster(world, session_factory), kube, tmp_path):
        member = world.tokens["member"]
        async with exec_socket(settings, world, kube.namespace, member, "echo", "hello", "kaas") as websocket:
            assert websocket.subprotocol == V5
            received = await channels(websocket)
        async with exec_socket(settings, world, kube.namespace, member, "false") as websocket:
            failed = await channels(websocket)
    assert received[STDOUT] == b"hello kaas\n"
    assert json.loads(received[STATUS])["status"] == "Success"
    with session_factory() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "proxy_websocket").order_by(AuditEvent.at)
        ).all()
    assert [(e.actor_name, e.status_code, e.outcome, e.cluster_id) for e in events] == [
        ("member", 101, "success", world.cluster_id),
        ("member", 101, "success", world.cluster_id),
    ]
    assert events[0].route == "/k8s/clusters/{cluster_id}/{path}"
    assert events[0].detail["path_params"]["path"] == f"api/v1/namespaces/{kube.namespace}/pods/web/exec"
    status = json.loads(failed[STATUS])
    assert status["status"] == "Failure"
    if kube.kind == STANDIN:  # kwok says "exit status 1" in an InternalError's message instead
        assert status["details"]["causes"][0] == {"reason": "ExitCode", "message": "1"}
    else:
        assert "exit status 1" in status["message"]


async def test_a_viewer_is_refused_by_the_clusters_rbac_even_claiming_to_be_someone_else(
    world: World,
    api_url: str,
    settings: ApiSettings,
    tunnel_server: TunnelServer,
    registry: InMemoryTunnelRegistry,
    session_factory: sessionmaker[Session],
    kube: KubeTarget,
    tmp_path: Path,
) -> None:
    create_pod(kube)
    async with connected(tunnel_server, registry, world_cluster(world, session_factory), kube, tmp_path):
        code, body = await refusal(settings, world, kube.namespace, world.tokens["viewer"])
        claimed, claimed_body = await refusal(
            settings,
            world,
            kube.namespace,
            world.tokens["viewer"],
            **{"Impersonate-User": "kubernetes-admin", "Impersonate-Group": "system:masters"},
        )
    assert code == 403
    assert "kaas:viewer" in body["message"]
    assert "pods/exec" in body["message"]
    assert claimed == 403  # the client's Impersonate-* never reach the apiserver
    assert "kaas:viewer" in claimed_body["message"]


async def test_no_token_another_project_and_no_agent_are_refused_before_the_cluster(
    world: World,
    api_url: str,
    settings: ApiSettings,
    kube: KubeTarget,
) -> None:
    namespace = kube.namespace
    assert (await refusal(settings, world, namespace, None))[0] == 401
    assert (await refusal(settings, world, namespace, "kaas_u_not-a-real-token"))[0] == 401
    assert (await refusal(settings, world, namespace, world.tokens["outsider"]))[0] == 404
    code, body = await refusal(settings, world, namespace, world.tokens["member"])  # no agent connected
    assert code == 503
    assert "not connected" in body["message"]


async def test_a_subprotocol_that_could_bend_the_next_hops_header_is_refused(
    world: World, api_url: str, settings: ApiSettings
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            exec_url(settings, world, "default", "echo", "hi"),
            ssl=tls(settings),
            additional_headers={
                "Authorization": f"Bearer {world.tokens['member']}",
                "Sec-WebSocket-Protocol": f"{V5}, two words",
            },
            proxy=None,
            open_timeout=20,
        ):
            pass
    response = refused.value.response
    assert response.status_code == 400
    assert "invalid WebSocket subprotocol 'two words'" in json.loads(response.body or b"{}")["message"]


async def test_kubectl_exec_through_kaas(
    world: World,
    api_url: str,
    settings: ApiSettings,
    tunnel_server: TunnelServer,
    registry: InMemoryTunnelRegistry,
    session_factory: sessionmaker[Session],
    kube: KubeTarget,
    tmp_path: Path,
) -> None:
    create_pod(kube)
    kubeconfig = tmp_path / "c1.kubeconfig"
    await download_kubeconfig(settings, world, "member", kubeconfig)
    async with connected(tunnel_server, registry, world_cluster(world, session_factory), kube, tmp_path):
        in_namespace = ("exec", "-n", kube.namespace, POD, "--")
        echoed = await run_kubectl(kubeconfig, *in_namespace, "echo", "hello", "world")
        failed = await run_kubectl(kubeconfig, *in_namespace, "false")
    assert echoed == (0, "hello world\n", ""), echoed
    assert failed[0] == 1, failed


@pytest.fixture
def standin(request: pytest.FixtureRequest) -> Iterator[KubeTarget]:
    with kube_target(request, STANDIN) as target:
        yield target


async def test_stdin_is_piped_into_the_command_on_the_standin(
    world: World,
    api_url: str,
    settings: ApiSettings,
    tunnel_server: TunnelServer,
    registry: InMemoryTunnelRegistry,
    session_factory: sessionmaker[Session],
    standin: KubeTarget,
    tmp_path: Path,
) -> None:
    """kwok (v0.8.0) never hands stdin to the command, so ``exec -i`` hangs on a real apiserver with kwok
    nodes; the relay of stdin through kaas is checked here, on the stand-in."""
    assert REAL != standin.kind
    create_pod(standin)
    kubeconfig = tmp_path / "c1.kubeconfig"
    await download_kubeconfig(settings, world, "member", kubeconfig)
    async with connected(tunnel_server, registry, world_cluster(world, session_factory), standin, tmp_path):
        piped = await run_kubectl(
            kubeconfig, "exec", "-i", "-n", standin.namespace, POD, "--", "cat", stdin=b"through the tunnel\n"
        )
    assert piped[:2] == (0, "through the tunnel\n"), piped


async def test_kubectl_shows_a_viewer_the_clusters_refusal_and_spdy_is_refused_with_a_reason(
    world: World,
    api_url: str,
    settings: ApiSettings,
    tunnel_server: TunnelServer,
    registry: InMemoryTunnelRegistry,
    session_factory: sessionmaker[Session],
    kube: KubeTarget,
    tmp_path: Path,
) -> None:
    """kubectl retries a refused WebSocket over SPDY and prints that answer: it must be the cluster's."""
    create_pod(kube)
    kubeconfig = tmp_path / "viewer.kubeconfig"
    await download_kubeconfig(settings, world, "viewer", kubeconfig)
    spdy = {"Connection": "Upgrade", "Upgrade": "SPDY/3.1"}
    path = f"/k8s/clusters/{world.cluster_id}{kube.path('pods', POD)}/exec?command=ls&stdout=1"
    async with connected(tunnel_server, registry, world_cluster(world, session_factory), kube, tmp_path):
        code, _, stderr = await run_kubectl(kubeconfig, "exec", "-n", kube.namespace, POD, "--", "echo", "hi")
        async with api_client(settings, world.tokens["member"]) as member:
            old_kubectl = await member.post(path, headers=spdy)
    assert code != 0
    assert 'User "kaas:viewer" cannot create resource "pods/exec"' in stderr, stderr
    assert old_kubectl.status_code == 501
    assert "over WebSockets" in old_kubectl.json()["message"]
