"""The tunnel server's metrics: served on the internal endpoint to the metrics token alone (not the internal
secret, not a proxy assertion); sessions, streams and bytes follow a real agent and real proxied requests."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from kaas_tunnel.server import TunnelServer
from tests.kaas_tunnel.conftest import (
    INTERNAL_SECRET,
    METRICS_TOKEN,
    ServerFactory,
    connected_agent,
    proxy_client,
    proxy_path,
    wait_until,
)
from tests.kube_targets import KubeTarget
from tests.provider.factories import CreatedCluster

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


async def scrape(server: TunnelServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient(base_url=server.internal_url, trust_env=False, timeout=10) as client:
        response = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200, response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def bytes_through(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], direction: str) -> float:
    return samples[("kaas_tunnel_proxied_bytes_total", (("direction", direction),))]


async def test_the_metrics_need_the_metrics_token_and_nothing_else(server: TunnelServer) -> None:
    async with httpx.AsyncClient(base_url=server.internal_url, trust_env=False, timeout=10) as client:
        assert (await client.get("/metrics")).status_code == 401
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 401
        internal = await client.get("/metrics", headers={"Authorization": f"Bearer {INTERNAL_SECRET}"})
        assert internal.status_code == 401
    assert ("kaas_tunnel_sessions", ()) in await scrape(server)


async def test_without_a_metrics_token_no_metrics_are_served(make_server: ServerFactory) -> None:
    server = await make_server(metrics_token=None)
    async with httpx.AsyncClient(base_url=server.internal_url, trust_env=False, timeout=10) as client:
        response = await client.get("/metrics", headers={"Authorization": f"Bearer {INTERNAL_SECRET}"})
    assert response.status_code == 404
    assert "kaas_tunnel" not in response.text


async def test_a_connected_agent_counts_as_a_session_until_it_goes(
    server: TunnelServer, cluster: CreatedCluster, kube: KubeTarget, tmp_path: Path
) -> None:
    assert (await scrape(server))[("kaas_tunnel_sessions", ())] == 0
    async with connected_agent(server, cluster, kube, tmp_path):
        assert (await scrape(server))[("kaas_tunnel_sessions", ())] == 1

    async def no_session() -> bool:
        return (await scrape(server))[("kaas_tunnel_sessions", ())] == 0

    await wait_until(no_session, what="the session gauge to drop")


async def test_a_proxied_request_counts_one_stream_and_its_bytes_both_ways(
    server: TunnelServer, cluster: CreatedCluster, kube: KubeTarget, tmp_path: Path
) -> None:
    configmaps = kube.path("configmaps")
    body = json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "counted"}, "data": {"a": "1"}}
    ).encode()
    async with connected_agent(server, cluster, kube, tmp_path), proxy_client(server, cluster.id) as client:
        before = await scrape(server)
        created = await client.post(
            proxy_path(configmaps), content=body, headers={"Content-Type": "application/json"}
        )
        assert created.status_code == 201, created.text

        async def stream_closed() -> bool:
            return (await scrape(server))[("kaas_tunnel_streams_open", ())] == 0

        await wait_until(stream_closed, what="the proxied stream to close")
        after = await scrape(server)
    opened = ("kaas_tunnel_streams_opened_total", ())
    assert after[opened] - before[opened] == 1  # the agent's own status streams are not proxied requests
    assert bytes_through(after, "up") - bytes_through(before, "up") == len(body)
    # the response head and the created object came down the tunnel
    assert bytes_through(after, "down") - bytes_through(before, "down") > len(created.content)
