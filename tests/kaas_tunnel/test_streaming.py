"""Streams through the tunnel: watches arrive incrementally, a stalled watch stalls only itself, big bodies
stream with bounded buffers."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import httpx

from kaas_core.internal_hop import ASSERTION_HEADER
from kaas_tunnel.server import TunnelServer
from tests.kaas_tunnel.conftest import (
    STREAM_WINDOW,
    VIEWER_GROUPS,
    connected_agent,
    proxy_client,
    proxy_path,
    signed_assertion,
    wait_until,
)
from tests.kube_targets import KubeTarget
from tests.provider.factories import CreatedCluster


def configmap(name: str, payload: str = "x") -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"payload": payload}}


async def test_a_watch_streams_each_event_as_it_happens(
    server: TunnelServer,
    cluster: CreatedCluster,
    kube: KubeTarget,
    tmp_path: Path,
    admin: httpx.AsyncClient,
) -> None:
    configmaps = kube.path("configmaps")
    async with connected_agent(server, cluster, kube, tmp_path), proxy_client(server, cluster.id) as client:
        listed = await client.get(proxy_path(configmaps))
        since = listed.json()["metadata"]["resourceVersion"]  # as kubectl: the watch goes on from the list
        watch = proxy_path(configmaps + f"?watch=true&timeoutSeconds=30&resourceVersion={since}")
        async with client.stream("GET", watch) as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            for name in ("first", "second"):
                assert (await admin.post(configmaps, json=configmap(name))).status_code == 201
                event = json.loads(await asyncio.wait_for(anext(lines), timeout=5))
                assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", name)


async def open_stalled_watch(server: TunnelServer, cluster_id: str, configmaps: str) -> socket.socket:
    """A watch whose client never reads: a tiny receive buffer fills at once and stays full."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = server.internal_url.removeprefix("http://").split(":")
    sock.connect((host, int(port)))
    target = configmaps + "?watch=true&timeoutSeconds=60"
    assertion = signed_assertion(cluster_id, "GET", target, user="slowpoke", groups=VIEWER_GROUPS)
    request = (
        f"GET {proxy_path(target)} HTTP/1.1\r\nHost: {host}\r\n{ASSERTION_HEADER}: {assertion}\r\n\r\n"
    )
    sock.sendall(request.encode())
    return sock


async def test_a_stalled_watch_does_not_delay_other_requests_on_the_same_tunnel(
    server: TunnelServer,
    cluster: CreatedCluster,
    kube: KubeTarget,
    tmp_path: Path,
    admin: httpx.AsyncClient,
) -> None:
    configmaps = kube.path("configmaps")
    async with connected_agent(server, cluster, kube, tmp_path), proxy_client(server, cluster.id) as client:
        stalled = await open_stalled_watch(server, cluster.id, configmaps)
        try:
            live = server.session_for(cluster.id)
            assert live is not None
            await wait_until(lambda: live.connection.stream_count >= 1, what="the watch stream")
            # ~6 MB of events: far more than the socket buffers and the stream's window can hold.
            for i in range(30):
                response = await admin.post(configmaps, json=configmap(f"big-{i}", "y" * 200_000))
                assert response.status_code == 201
            await wait_until(
                lambda: live.connection.max_buffered_seen >= STREAM_WINDOW // 2,
                what="the stalled watch to exhaust its window",
            )
            durations = []
            for _ in range(10):
                started = time.monotonic()
                got = await client.get(proxy_path(f"{configmaps}/big-0"))
                durations.append(time.monotonic() - started)
                assert got.status_code == 200
            assert max(durations) < 2.0, durations
            assert live.connection.max_buffered_seen <= STREAM_WINDOW  # the window bounds what is held
        finally:
            stalled.close()


async def test_a_64_mib_response_streams_through_with_bounded_buffers(
    server: TunnelServer,
    cluster: CreatedCluster,
    kube: KubeTarget,
    tmp_path: Path,
    admin: httpx.AsyncClient,
) -> None:
    configmaps = kube.path("configmaps")
    chunk = "z" * (512 * 1024)  # a real apiserver refuses a ConfigMap of 1 MiB or more
    for i in range(128):
        assert (await admin.post(configmaps, json=configmap(f"huge-{i:03}", chunk))).status_code == 201
    async with (
        connected_agent(server, cluster, kube, tmp_path),
        proxy_client(server, cluster.id, timeout=120) as client,
    ):
        live = server.session_for(cluster.id)
        assert live is not None
        total = 0
        largest_piece = 0
        # uncompressed: a real apiserver gzips a big list for a client that accepts it
        identity = {"Accept-Encoding": "identity"}
        async with client.stream("GET", proxy_path(configmaps), headers=identity) as response:
            assert response.status_code == 200
            async for piece in response.aiter_raw():
                total += len(piece)
                largest_piece = max(largest_piece, len(piece))
        assert total > 64 * 1024 * 1024
        assert live.connection.max_buffered_seen <= STREAM_WINDOW
        assert largest_piece < 4 * 1024 * 1024  # relayed in pieces, never as one buffered body


async def test_a_client_leaving_a_watch_releases_it_all_the_way_to_the_apiserver(
    server: TunnelServer, cluster: CreatedCluster, kube: KubeTarget, tmp_path: Path
) -> None:
    configmaps = kube.path("configmaps")
    before = await asyncio.to_thread(kube.open_namespaced_watches, "configmaps")

    async def watches_are(count: int) -> bool:
        return await asyncio.to_thread(kube.open_namespaced_watches, "configmaps") - before == count

    async with connected_agent(server, cluster, kube, tmp_path), proxy_client(server, cluster.id) as client:
        live = server.session_for(cluster.id)
        assert live is not None
        async with client.stream("GET", proxy_path(configmaps + "?watch=true")) as response:
            assert response.status_code == 200
            await wait_until(lambda: watches_are(1), what="the apiserver watch")
        await wait_until(lambda: watches_are(0), what="the apiserver watch to be released")
        await wait_until(lambda: live.connection.stream_count == 0, what="the tunnel stream to be gone")
