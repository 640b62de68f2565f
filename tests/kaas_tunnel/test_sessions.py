"""Agent sessions: auth before the upgrade, reconnects, takeover, several servers, cluster_agents."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from agents.runtime import websockets_logger
from kaas_core.db.models import ApiToken, Cluster, ClusterAgent, User
from kaas_core.db.session import session_scope
from kaas_core.security import generate_token, hash_token
from kaas_core.tunnel_registry import RedisTunnelRegistry
from kaas_tunnel.server import TunnelServer
from tests.kaas_tunnel.conftest import (
    ServerFactory,
    agent_config,
    connected_agent,
    proxy_client,
    proxy_path,
    running_agent,
    wait_until,
)
from tests.kube_targets import KubeTarget
from tests.provider.factories import CreatedCluster

NAMESPACES = "/api/v1/namespaces"


async def handshake_status(server: TunnelServer, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            server.tunnel_url,
            additional_headers=headers,
            proxy=None,
            open_timeout=5,
            logger=websockets_logger("tests.tunnel.client"),
        ):
            pass
    return refused.value.response.status_code


async def test_a_wrong_or_missing_agent_token_is_refused_before_the_upgrade(
    server: TunnelServer, cluster: CreatedCluster
) -> None:
    assert await handshake_status(server, "kaasagent_not-a-real-token") == 401
    assert await handshake_status(server, None) == 401
    assert server.session_for(cluster.id) is None


async def test_a_rotated_agent_token_is_refused(
    server: TunnelServer, cluster: CreatedCluster, session_factory: sessionmaker[Session]
) -> None:
    with session_scope(session_factory) as session:
        session.get_one(Cluster, cluster.id).agent_token_hash = hash_token("kaasagent_the-new-one")
    assert await handshake_status(server, cluster.agent_token) == 401


async def test_the_agent_token_of_a_deleted_cluster_is_refused(
    server: TunnelServer, cluster: CreatedCluster, session_factory: sessionmaker[Session]
) -> None:
    with session_scope(session_factory) as session:
        session.get_one(Cluster, cluster.id).deleted_at = datetime.now(UTC)
    assert await handshake_status(server, cluster.agent_token) == 401


async def test_a_user_api_token_is_not_an_agent_token(
    server: TunnelServer, cluster: CreatedCluster, session_factory: sessionmaker[Session]
) -> None:
    user_token = generate_token()
    with session_scope(session_factory) as session:
        user = User(name="mallory")
        session.add(user)
        session.flush()
        session.add(ApiToken(user_id=user.id, token_hash=hash_token(user_token), prefix=user_token[:8]))
    assert await handshake_status(server, user_token) == 401


async def test_the_agent_token_is_never_logged(
    server: TunnelServer, cluster: CreatedCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    assert await handshake_status(server, "kaasagent_secret-value-xyz") == 401
    assert "secret-value-xyz" not in caplog.text


async def test_a_killed_agent_answers_503_and_a_returning_agent_works_again(
    server: TunnelServer, cluster: CreatedCluster, kube: KubeTarget, tmp_path: Path
) -> None:
    async with proxy_client(server, cluster.id) as client:
        async with connected_agent(server, cluster, kube, tmp_path):
            assert (await client.get(proxy_path(NAMESPACES))).status_code == 200
        await wait_until(lambda: server.session_for(cluster.id) is None, what="the session to end")
        gone = await client.get(proxy_path(NAMESPACES))
        assert gone.status_code == 503
        assert gone.json()["message"] == f"the agent of cluster {cluster.id} is not connected"
        async with connected_agent(server, cluster, kube, tmp_path):
            assert (await client.get(proxy_path(NAMESPACES))).status_code == 200


async def test_the_agent_reconnects_by_itself_after_the_tunnel_server_restarts(
    make_server: ServerFactory, cluster: CreatedCluster, kube: KubeTarget, tmp_path: Path
) -> None:
    first = await make_server()
    port = int(first.tunnel_url.rsplit(":", 1)[1].split("/")[0])
    config = agent_config(tunnel_url=first.tunnel_url, cluster=cluster, kube=kube, tmp_path=tmp_path)
    async with running_agent(config) as agent:
        await wait_until(lambda: first.session_for(cluster.id) is not None, what="the first session")
        await first.stop()
        await asyncio.sleep(0.5)  # the agent is retrying against a closed port now
        assert not agent.done()
        second = await make_server(tunnel_port=port)
        await wait_until(lambda: second.session_for(cluster.id) is not None, what="the agent to come back")
        async with proxy_client(second, cluster.id) as client:
            assert (await client.get(proxy_path(NAMESPACES))).status_code == 200


async def test_a_stopping_tunnel_server_keeps_its_agents_claims_for_the_proxy_to_follow(
    make_server: ServerFactory,
    cluster: CreatedCluster,
    kube: KubeTarget,
    tmp_path: Path,
    registry: RedisTunnelRegistry,
) -> None:
    """A graceful stop (a rolling restart) leaves each agent's claim in the registry: the API's k8s proxy then
    finds the process gone and waits for the agent's new session elsewhere, rather than answering "not
    connected" while the agent dials again. (An agent that simply goes away still releases its claim.)"""
    first = await make_server()
    config = agent_config(tunnel_url=first.tunnel_url, cluster=cluster, kube=kube, tmp_path=tmp_path)
    async with running_agent(config):
        await wait_until(lambda: first.session_for(cluster.id) is not None, what="the first session")
        claim = await registry.lookup(cluster.id)
        assert claim is not None
        await first.stop()
        assert first.session_for(cluster.id) is None
        kept = await registry.lookup(cluster.id)
        assert kept is not None
        assert kept.session_id == claim.session_id


async def test_a_newer_agent_session_replaces_the_older_one(
    server: TunnelServer,
    cluster: CreatedCluster,
    kube: KubeTarget,
    tmp_path: Path,
    registry: RedisTunnelRegistry,
) -> None:
    async with connected_agent(server, cluster, kube, tmp_path, stays_away=True):
        older = server.session_for(cluster.id)
        assert older is not None
        newer_config = agent_config(
            tunnel_url=server.tunnel_url, cluster=cluster, kube=kube, tmp_path=tmp_path
        )
        async with running_agent(newer_config):
            await wait_until(
                lambda: (s := server.session_for(cluster.id)) is not None and s is not older,
                what="the newer session",
            )
            await asyncio.wait_for(older.connection.closed.wait(), 5)
            assert "replaced by a newer session" in (older.connection.close_reason or "")
            newest = server.session_for(cluster.id)
            assert newest is not None
            location = await registry.lookup(cluster.id)
            assert location is not None
            assert location.session_id == newest.session_id
            async with proxy_client(server, cluster.id) as client:
                assert (await client.get(proxy_path(NAMESPACES))).status_code == 200


async def test_with_two_tunnel_servers_the_registry_points_at_the_one_holding_the_session(
    make_server: ServerFactory,
    cluster: CreatedCluster,
    kube: KubeTarget,
    tmp_path: Path,
    registry: RedisTunnelRegistry,
) -> None:
    one, two = await make_server(), await make_server()
    async with connected_agent(two, cluster, kube, tmp_path, stays_away=True):
        location = await registry.lookup(cluster.id)
        assert location is not None
        assert location.address == two.internal_url != one.internal_url
        async with proxy_client(one, cluster.id) as at_one, proxy_client(two, cluster.id) as at_two:
            assert (await at_one.get(proxy_path(NAMESPACES))).status_code == 503
            assert (await at_two.get(proxy_path(NAMESPACES))).status_code == 200

        # The agent moves to the other server: the older process notices through its failed refresh.
        moved = agent_config(tunnel_url=one.tunnel_url, cluster=cluster, kube=kube, tmp_path=tmp_path)
        old_session = two.session_for(cluster.id)
        assert old_session is not None
        async with running_agent(moved):
            await wait_until(lambda: one.session_for(cluster.id) is not None, what="the session at one")
            await asyncio.wait_for(old_session.connection.closed.wait(), 5)
            assert "another tunnel server" in (old_session.connection.close_reason or "")
            location = await registry.lookup(cluster.id)
            assert location is not None
            assert location.address == one.internal_url


def agent_row(session_factory: sessionmaker[Session], cluster_id: str) -> ClusterAgent | None:
    with session_factory() as session:
        return session.scalars(
            sa.select(ClusterAgent).where(ClusterAgent.cluster_id == cluster_id)
        ).one_or_none()


async def test_cluster_agents_shows_the_status_report_and_the_disconnect(
    server: TunnelServer,
    cluster: CreatedCluster,
    own_kube: KubeTarget,
    tmp_path: Path,
    session_factory: sessionmaker[Session],
) -> None:
    for name, ready in (("cp-0", True), ("worker-0", True), ("worker-1", False)):
        await asyncio.to_thread(own_kube.register_node, name, ready=ready)
    async with connected_agent(server, cluster, own_kube, tmp_path):
        # on a real cluster kwok turns the two Ready ones Ready: the report says so once it has
        try:
            await wait_until(
                lambda: (row := agent_row(session_factory, cluster.id)) is not None and row.nodes_ready == 2,
                timeout=60,
                what="a status report with two Ready nodes",
            )
        except AssertionError as exc:
            row = agent_row(session_factory, cluster.id)
            seen = await asyncio.to_thread(own_kube.describe_nodes)
            reported = row.nodes if row else None
            raise AssertionError(f"{exc}; last report {reported}; the apiserver: {seen}") from exc
        row = agent_row(session_factory, cluster.id)
        assert row is not None
        assert row.connected is True
        assert row.kubernetes_version == own_kube.version
        assert (row.nodes_ready, row.nodes_total) == (2, 3)
        assert sorted(node["name"] for node in row.nodes) == ["cp-0", "worker-0", "worker-1"]
        assert row.tunnel_address == server.internal_url
        assert row.connected_at is not None
        assert row.disconnected_at is None
    await wait_until(
        lambda: (row := agent_row(session_factory, cluster.id)) is not None and not row.connected,
        what="the disconnect to be recorded",
    )
    row = agent_row(session_factory, cluster.id)
    assert row is not None
    assert row.disconnected_at is not None


async def test_a_replacement_is_logged_and_counted_and_beyond_the_limit_the_newer_dial_gets_429(
    make_server: ServerFactory,
    cluster: CreatedCluster,
    kube: KubeTarget,
    tmp_path: Path,
    session_factory: sessionmaker[Session],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="kaas_tunnel.server")
    server = await make_server(agent_replacements_per_window=1)

    def recorded(session_id: str) -> bool:
        row = agent_row(session_factory, cluster.id)
        return row is not None and row.connected and row.session_id == session_id

    async with connected_agent(server, cluster, kube, tmp_path, stays_away=True):
        older = server.session_for(cluster.id)
        assert older is not None
        await wait_until(lambda: recorded(older.session_id), what="the older session in cluster_agents")
        newer_config = agent_config(
            tunnel_url=server.tunnel_url, cluster=cluster, kube=kube, tmp_path=tmp_path
        )
        async with running_agent(newer_config):
            await wait_until(
                lambda: (s := server.session_for(cluster.id)) is not None and s is not older,
                what="the newer session",
            )
            newer = server.session_for(cluster.id)
            assert newer is not None
            await wait_until(lambda: recorded(newer.session_id), what="the newer session in cluster_agents")

            with pytest.raises(InvalidStatus) as refused:
                async with connect(
                    server.tunnel_url,
                    additional_headers={"Authorization": f"Bearer {cluster.agent_token}"},
                    proxy=None,
                    open_timeout=5,
                    logger=websockets_logger("tests.tunnel.client"),
                ):
                    pass
            assert refused.value.response.status_code == 429
            assert 1 <= int(refused.value.response.headers["Retry-After"]) <= 60
            assert b"too many agent sessions" in refused.value.response.body
            assert server.session_for(cluster.id) is newer  # the live session stays

    row = agent_row(session_factory, cluster.id)
    assert row is not None
    assert row.replacements == 1
    assert row.last_replaced_at is not None
    replaced = [r.getMessage() for r in caplog.records if "replaces live session" in r.getMessage()]
    assert len(replaced) == 1
    assert cluster.id in replaced[0]
    assert f"session {newer.session_id} from 127.0.0.1:" in replaced[0]
    assert replaced[0].endswith(f"replaces live session {older.session_id} (replacement 1 of this cluster)")
    refusals = [r.getMessage() for r in caplog.records if "refused a newer agent session" in r.getMessage()]
    assert len(refusals) == 1
    assert cluster.id in refusals[0]
    assert "from 127.0.0.1:" in refusals[0]
    assert f"live session {newer.session_id} stays" in refusals[0]
    assert cluster.agent_token not in caplog.text
