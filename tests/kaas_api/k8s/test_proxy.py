"""The k8s proxy through the real chain: kaas API → tunnel server → agent → the cluster's kube-apiserver."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import timedelta
from pathlib import Path

import httpx
import yaml
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.config import ApiSettings
from kaas_core.db.models import ClusterAgent, utcnow
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
from tests.kube_targets import KubeTarget, names_of

REVIEW = "/apis/authentication.k8s.io/v1/selfsubjectreviews"


def k8s(world: World, path: str) -> str:
    return f"/k8s/clusters/{world.cluster_id}{path}"


def configmap(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}}


async def whoami(client: httpx.AsyncClient, world: World, **headers: str) -> dict[str, object]:
    review = await client.post(
        k8s(world, REVIEW),
        json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        headers=headers,
    )
    assert review.status_code == 201, review.text
    user_info: dict[str, object] = review.json()["status"]["userInfo"]
    return user_info


async def test_a_member_creates_and_reads_objects_through_kaas(
    world: World,
    api_url: str,
    settings: ApiSettings,
    tunnel_server: TunnelServer,
    registry: InMemoryTunnelRegistry,
    session_factory: sessionmaker[Session],
    kube: KubeTarget,
    tmp_path: Path,
) -> None:
    cluster = world_cluster(world, session_factory)
    async with (
        connected(tunnel_server, registry, cluster, kube, tmp_path),
        api_client(settings, world.tokens["member"]) as client,
    ):
        created = await client.post(k8s(world, kube.path("configmaps")), json=configmap("via-kaas"))
        assert created.status_code == 201, created.text
        listed = await client.get(k8s(world, kube.path("configmaps")))
        assert names_of(listed.json()["items"]) == ["via-kaas"]


async def test_a_proxied_answer_carries_one_date_and_one_server_header(
    world: World,
    api_url: str,
    settings: ApiSettings,
    tunnel_server: TunnelServer,
    registry: InMemoryTunnelRegistry,
    session_factory: sessionmaker[Session],
    kube: KubeTarget,
    tmp_path: Path,
) -> None:
    cluster = world_cluster(world, session_factory)
    async with (
        connected(tunnel_server, registry, cluster, kube, tmp_path),
        api_client(settings, world.tokens["member"]) as client,
    ):
        response = await client.get(k8s(world, kube.path("configmaps")))
    assert response.status_code == 200
    assert len(response.headers.get_list("date")) == 1
    assert len(response.headers.get_list("server")) <= 1


async def test_the_cluster_sees_the_kaas_user_with_the_groups_of_their_role(
    world: World,
    api_url: str,
    settings: ApiSettings,
    tunnel_server: TunnelServer,
    registry: InMemoryTunnelRegistry,
    session_factory: sessionmaker[Session],
    kube: KubeTarget,
    tmp_path: Path,
) -> None:
    cluster = world_cluster(world, session_factory)
    async with connected(tunnel_server, registry, cluster, kube, tmp_path):
        for who, group in (("viewer", "kaas:viewer"), ("member", "kaas:member"), ("admin", "kaas:owner")):
            async with api_client(settings, world.tokens[who]) as client:
                user_info = await whoami(client, world)
            assert user_info["username"] == f"kaas:{who}"
            groups = set(user_info["groups"]) - {"system:authenticated"}  # type: ignore[call-overload]
            assert groups == {"kaas:authenticated", group}


async def test_client_impersonation_headers_never_reach_the_apiserver(
    world: World,
    api_url: str,
    settings: ApiSettings,
    tunnel_server: TunnelServer,
    registry: InMemoryTunnelRegistry,
    session_factory: sessionmaker[Session],
    kube: KubeTarget,
    tmp_path: Path,
) -> None:
    cluster = world_cluster(world, session_factory)
    sneaky = {
        "Impersonate-User": "kubernetes-admin",
        "Impersonate-Group": "system:masters",
        "X-Kaas-User": "admin",
        "X-Kaas-Group": "kaas:owner",
    }
    async with (
        connected(tunnel_server, registry, cluster, kube, tmp_path),
        api_client(settings, world.tokens["viewer"]) as client,
    ):
        user_info = await whoami(client, world, **sneaky)
        assert user_info["username"] == "kaas:viewer"
        assert "system:masters" not in user_info["groups"]  # type: ignore[operator]
        assert "kaas:owner" not in user_info["groups"]  # type: ignore[operator]
        configmaps = k8s(world, kube.path("configmaps"))
        refused = await client.post(configmaps, json=configmap("nope"), headers=sneaky)
    assert refused.status_code == 403


async def test_a_viewers_write_is_refused_by_the_clusters_rbac(
    world: World,
    api_url: str,
    settings: ApiSettings,
    tunnel_server: TunnelServer,
    registry: InMemoryTunnelRegistry,
    session_factory: sessionmaker[Session],
    kube: KubeTarget,
    tmp_path: Path,
) -> None:
    cluster = world_cluster(world, session_factory)
    async with (
        connected(tunnel_server, registry, cluster, kube, tmp_path),
        api_client(settings, world.tokens["viewer"]) as client,
    ):
        assert (await client.get(k8s(world, kube.path("configmaps")))).status_code == 200
        refused = await client.post(k8s(world, kube.path("configmaps")), json=configmap("nope"))
    assert refused.status_code == 403
    assert refused.json()["kind"] == "Status"
    assert "kaas:viewer" in refused.json()["message"]


async def test_a_watch_streams_events_before_it_ends(
    world: World,
    api_url: str,
    settings: ApiSettings,
    tunnel_server: TunnelServer,
    registry: InMemoryTunnelRegistry,
    session_factory: sessionmaker[Session],
    kube: KubeTarget,
    tmp_path: Path,
) -> None:
    cluster = world_cluster(world, session_factory)
    async with (
        connected(tunnel_server, registry, cluster, kube, tmp_path),
        api_client(settings, world.tokens["member"]) as client,
        kube.async_admin() as admin,
    ):
        listed = await client.get(k8s(world, kube.path("configmaps")))
        since = listed.json()["metadata"]["resourceVersion"]  # as kubectl: the watch goes on from the list
        watch_path = k8s(world, kube.path("configmaps") + f"?watch=true&resourceVersion={since}")
        async with client.stream("GET", watch_path) as watch:
            assert watch.status_code == 200
            created = await admin.post(kube.path("configmaps"), json=configmap("watched"))
            assert created.status_code == 201, created.text
            lines = watch.aiter_lines()
            event = json.loads(await asyncio.wait_for(anext(lines), timeout=10))
    assert event["type"] == "ADDED"
    assert event["object"]["metadata"]["name"] == "watched"


async def test_an_unconnected_agent_answers_503_with_a_message_kubectl_prints(
    world: World, api_url: str, settings: ApiSettings
) -> None:
    async with api_client(settings, world.tokens["member"]) as client:
        response = await client.get(k8s(world, "/api/v1/namespaces"))
    assert response.status_code == 503
    body = response.json()
    assert body["kind"] == "Status"
    assert body["message"] == (
        "the agent of cluster c1 is not connected; it reconnects by itself — try again shortly"
    )


async def test_an_unreachable_tunnel_server_answers_503(
    world: World, api_url: str, settings: ApiSettings, registry: InMemoryTunnelRegistry
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    await registry.claim(
        cluster_id=world.cluster_id, session_id="s1", address=f"http://127.0.0.1:{closed_port}"
    )
    async with api_client(settings, world.tokens["member"]) as client:
        response = await client.get(k8s(world, "/api/v1/namespaces"))
    assert response.status_code == 503
    assert "cannot be reached" in response.json()["message"]


async def test_a_request_whose_tunnel_process_died_follows_the_agent_to_its_new_session(
    world: World, api_url: str, settings: ApiSettings, registry: InMemoryTunnelRegistry
) -> None:
    async def live_tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    live = await asyncio.start_server(live_tunnel, "127.0.0.1", 0)
    live_port = live.sockets[0].getsockname()[1]
    await registry.claim(
        cluster_id=world.cluster_id, session_id="s1", address=f"http://127.0.0.1:{dead_port}"
    )

    async def agent_dials_again() -> None:
        await asyncio.sleep(0.5)
        await registry.claim(
            cluster_id=world.cluster_id, session_id="s2", address=f"http://127.0.0.1:{live_port}"
        )

    redial = asyncio.create_task(agent_dials_again())
    try:
        async with api_client(settings, world.tokens["member"]) as client:
            response = await client.get(k8s(world, "/api/v1/namespaces"))
    finally:
        await redial
        live.close()
        await live.wait_closed()
    assert response.status_code == 200, response.text


def agent_row(session_factory: sessionmaker[Session], cluster_id: str, *, gone_seconds_ago: float) -> None:
    """What the tunnel server wrote when the cluster's agent went away that long ago."""
    now = utcnow()
    with session_factory.begin() as session:
        agent = session.get(ClusterAgent, cluster_id) or ClusterAgent(cluster_id=cluster_id)
        agent.connected = False
        agent.connected_at = now - timedelta(hours=1)
        agent.disconnected_at = now - timedelta(seconds=gone_seconds_ago)
        session.add(agent)


async def test_a_request_for_an_agent_gone_a_moment_ago_waits_for_its_new_session(
    world: World,
    api_url: str,
    settings: ApiSettings,
    registry: InMemoryTunnelRegistry,
    session_factory: sessionmaker[Session],
) -> None:
    """A tunnel replica stopped and the agent is dialling another: the registry has no claim for a moment."""
    agent_row(session_factory, world.cluster_id, gone_seconds_ago=1)

    async def live_tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    live = await asyncio.start_server(live_tunnel, "127.0.0.1", 0)
    live_port = live.sockets[0].getsockname()[1]

    async def agent_comes_back() -> None:
        await asyncio.sleep(0.5)
        await registry.claim(
            cluster_id=world.cluster_id, session_id="s2", address=f"http://127.0.0.1:{live_port}"
        )

    back = asyncio.create_task(agent_comes_back())
    try:
        async with api_client(settings, world.tokens["member"]) as client:
            response = await client.get(k8s(world, "/api/v1/namespaces"))
    finally:
        await back
        live.close()
        await live.wait_closed()
    assert response.status_code == 200, response.text


async def test_a_request_for_an_agent_away_for_long_is_answered_503_at_once(
    world: World, api_url: str, settings: ApiSettings, session_factory: sessionmaker[Session]
) -> None:
    agent_row(session_factory, world.cluster_id, gone_seconds_ago=600)
    started = time.monotonic()
    async with api_client(settings, world.tokens["member"]) as client:
        response = await client.get(k8s(world, "/api/v1/namespaces"))
    assert response.status_code == 503
    assert "is not connected" in response.json()["message"]
    assert time.monotonic() - started < settings.k8s_proxy_connect_timeout_seconds  # no wait for it


async def test_kubectl_gets_namespaces_with_the_downloaded_kubeconfig(
    world: World,
    api_url: str,
    settings: ApiSettings,
    tunnel_server: TunnelServer,
    registry: InMemoryTunnelRegistry,
    session_factory: sessionmaker[Session],
    kube: KubeTarget,
    tmp_path: Path,
) -> None:
    cluster = world_cluster(world, session_factory)
    kubeconfig = tmp_path / "c1.kubeconfig"
    text = await download_kubeconfig(settings, world, "owner", kubeconfig)
    assert yaml.safe_load(text)["clusters"][0]["cluster"]["server"] == f"{api_url}/k8s/clusters/{cluster.id}"
    async with connected(tunnel_server, registry, cluster, kube, tmp_path):
        code, stdout, stderr = await run_kubectl(kubeconfig, "get", "ns", "-o", "name")
    assert code == 0, stderr
    assert "namespace/default" in stdout.split()
