"""End to end: simcloud servers with kaas user-data → NodeBooter → the REAL agent → the REAL tunnel server.

Real PostgreSQL (the cluster row and its agent token hash, ``cluster_agents``), the real ``TunnelServer``
with an in-memory registry, simcloud over HTTP, the booter's real control plane (its Nodes kwok's, the
agent's report their Ready), or its stand-in where the programs are not built and services not required.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import ClusterAgent
from kaas_core.tunnel_registry import InMemoryTunnelRegistry
from kaas_tunnel.server import TunnelServer
from nodesim.booter import NodeBooter
from simcloud.testing import run_simcloud
from tests.conftest import REAL_CONTROL_PLANES
from tests.kaas_tunnel.conftest import proxy_client, proxy_path, tunnel_settings, wait_until
from tests.kube_targets import NEWEST, REAL, control_plane_slots, default_kind, releases
from tests.nodesim.conftest import KAAS_RBAC_MANIFEST, connect, create_kaas_server, kaas_user_data
from tests.provider.factories import create_cluster

OWNER_GROUPS = ("kaas:authenticated", "kaas:owner")
MEMBER_GROUPS = ("kaas:authenticated", "kaas:member")
# committing: the tunnel server writes in threads of its own while the test reads; the booter's cluster may
# be a real control plane
pytestmark = [pytest.mark.committing, REAL_CONTROL_PLANES]


@pytest.fixture
async def tunnel_server(session_factory: sessionmaker[Session]) -> AsyncIterator[TunnelServer]:
    server = TunnelServer(
        tunnel_settings(), session_factory=session_factory, registry=InMemoryTunnelRegistry(ttl_seconds=3.0)
    )
    await server.start()
    yield server
    await server.stop()


def agent_row(session_factory: sessionmaker[Session], cluster_id: str) -> ClusterAgent | None:
    with session_factory() as session:
        return session.get(ClusterAgent, cluster_id)


async def test_the_booted_agent_connects_and_serves_requests_through_the_tunnel(
    tunnel_server: TunnelServer, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    cluster = create_cluster(session_factory)
    real = default_kind() == REAL
    with (
        control_plane_slots(1 if real else 0),
        run_simcloud(state_dir=tmp_path / "sim", boot_delay=0.2) as sim,
    ):
        booter = NodeBooter(
            clouds_yaml=sim.clouds_yaml,
            admin_cloud=sim.admin_cloud_name,
            rbac_manifest=KAAS_RBAC_MANIFEST,
            state_dir=tmp_path / "nodesim",
            poll_interval=0.2,
            kubernetes_version_default="v1.30.2",
            kube_releases=releases() if real else None,
            agent_overrides={
                "report_interval_seconds": 0.3,
                "reconnect_backoff_min_seconds": 0.05,
                "reconnect_backoff_max_seconds": 0.3,
            },
        )
        await asyncio.to_thread(booter.start)
        tenant = await asyncio.to_thread(connect, sim.clouds_yaml, sim.cloud_name)
        try:
            servers: list[Any] = []
            for name, role in (("kaas-t-cp-0", "control-plane"), ("kaas-t-w-a", "worker")):
                user_data = kaas_user_data(
                    cluster_id=cluster.id,
                    node_name=name,
                    role=role,
                    tunnel_url=tunnel_server.tunnel_url,
                    agent_token=cluster.agent_token,
                    kubernetes_version=NEWEST.removeprefix("v"),
                )
                servers.append(
                    await asyncio.to_thread(
                        create_kaas_server,
                        tenant,
                        cluster_id=cluster.id,
                        name=name,
                        role=role,
                        user_data=user_data,
                    )
                )

            await wait_until(
                lambda: tunnel_server.session_for(cluster.id) is not None,
                timeout=30,
                what="the agent to connect",
            )
            control_plane = booter.control_plane_for(cluster.id)
            assert control_plane is not None
            assert control_plane.kind == default_kind()
            await asyncio.to_thread(
                control_plane.apply,
                [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": "from-the-node", "namespace": "default"},
                        "data": {"hello": "tunnel"},
                    }
                ]
            )
            async with proxy_client(tunnel_server, cluster.id, groups=MEMBER_GROUPS) as client:
                got = await client.get(
                    proxy_path("/api/v1/namespaces/default/configmaps/from-the-node")
                )
            assert got.status_code == 200, got.text
            assert got.json()["data"] == {"hello": "tunnel"}

            # the agent's status report shows the booter's nodes (on a real control plane, kwok made them
            # Ready), as kaas records it
            await wait_until(
                lambda: (row := agent_row(session_factory, cluster.id)) is not None and row.nodes_ready == 2,
                timeout=60,
                what="a status report with two Ready nodes",
            )
            row = agent_row(session_factory, cluster.id)
            assert row is not None
            assert row.nodes_total == 2
            assert row.kubernetes_version == NEWEST
            async with proxy_client(tunnel_server, cluster.id, groups=OWNER_GROUPS) as client:
                nodes = (await client.get(proxy_path("/api/v1/nodes"))).json()["items"]
            assert sorted(n["metadata"]["name"] for n in nodes) == ["kaas-t-cp-0", "kaas-t-w-a"]

            # every server gone: the agent stops, so the tunnel server loses the session
            for server in servers:
                await asyncio.to_thread(tenant.compute.delete_server, server)
            await wait_until(
                lambda: cluster.id not in booter.clusters(), timeout=30, what="the cluster to stop"
            )
            await wait_until(
                lambda: tunnel_server.session_for(cluster.id) is None, timeout=10, what="the session to end"
            )
        finally:
            await asyncio.to_thread(tenant.close)
            await asyncio.to_thread(booter.stop)
