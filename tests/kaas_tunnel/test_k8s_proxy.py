"""kubectl's one-hop path: the tunnel server's own ``/k8s/clusters/{id}/...`` (``kaas_tunnel.k8s_proxy``).

Real pieces: PostgreSQL (users, tokens, memberships), Redis (the registry and the revocation feed), the real
agent and apiserver. Two tunnel servers share the Redis: the one that does not hold the agent goes one hop
to the one that does, and a revocation committed elsewhere (as by an API replica) reaches both.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from kaas_api.auth.service import Principal
from kaas_api.kubeconfig.service import issue_kubeconfig_token, revoke_kubeconfig_token
from kaas_api.projects.service import set_member
from kaas_api.users.service import create_user
from kaas_core.credential_cache import RedisRevocationFeed, install_revocation_hooks
from kaas_core.db.models import ApiToken, AuditEvent, Cluster, Role, User
from kaas_core.db.session import make_session_factory, session_scope
from kaas_core.tunnel_registry import RedisTunnelRegistry
from kaas_tunnel.server import TunnelServer
from tests.kaas_tunnel.conftest import ServerFactory, agent_config, running_agent, wait_until
from tests.kube_targets import KubeTarget
from tests.provider.factories import CreatedCluster, create_cluster, ensure_project

pytestmark = pytest.mark.redis

NAMESPACES = "/api/v1/namespaces"
WHOAMI = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
REVIEW = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
V5 = "v5.channel.k8s.io"


@dataclass(frozen=True)
class People:
    owner: str
    viewer: str
    outsider: str
    viewer_kubeconfig: str
    viewer_kubeconfig_id: str
    other_cluster_kubeconfig: str


@pytest.fixture
def people(session_factory: sessionmaker[Session], cluster: CreatedCluster) -> People:
    other = create_cluster(session_factory, name="other")
    with session_scope(session_factory) as session:
        project = ensure_project(session)
        _owner, owner_token = create_user(session, name="olga")
        viewer, viewer_token = create_user(session, name="vera")
        _outsider, outsider_token = create_user(session, name="otto")
        set_member(session, project, "olga", Role.OWNER)
        set_member(session, project, "vera", Role.VIEWER)
        mine = session.get(Cluster, cluster.id)
        theirs = session.get(Cluster, other.id)
        assert mine is not None
        assert theirs is not None
        row, kubeconfig = issue_kubeconfig_token(session, user=viewer, cluster=mine, ttl=timedelta(days=1))
        _row, other_kubeconfig = issue_kubeconfig_token(
            session, user=viewer, cluster=theirs, ttl=timedelta(days=1)
        )
        row_id = row.id
    return People(
        owner=owner_token,
        viewer=viewer_token,
        outsider=outsider_token,
        viewer_kubeconfig=kubeconfig,
        viewer_kubeconfig_id=row_id,
        other_cluster_kubeconfig=other_kubeconfig,
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def kubectl(server: TunnelServer) -> httpx.AsyncClient:
    """What kubectl talks to: the tunnel server's k8s proxy listener."""
    return httpx.AsyncClient(base_url=server.k8s_proxy_url, timeout=30, trust_env=False)


@pytest.fixture
async def replicas(make_server: ServerFactory, redis_url: str) -> tuple[TunnelServer, TunnelServer]:
    """Two tunnel servers on one Redis, each with its own revocation subscription, as two deployed
    processes; their cache would remember an answer for 30 s, so only the feed can make them forget."""
    servers = []
    for _ in range(2):
        server = await make_server(
            k8s_proxy_port=0,
            credential_cache_seconds=30.0,
            revocation_feed=RedisRevocationFeed(redis_url),
        )
        servers.append(server)
    for server in servers:
        await wait_until(lambda server=server: server.revocation_feed.listening, what="the feed to subscribe")
    return servers[0], servers[1]


@pytest.fixture
async def holder(
    replicas: tuple[TunnelServer, TunnelServer],
    cluster: CreatedCluster,
    kube: KubeTarget,
    registry: RedisTunnelRegistry,
    tmp_path: Path,
) -> AsyncIterator[TunnelServer]:
    """The cluster's agent, connected to the first replica and claimed in the registry."""
    first, _second = replicas
    config = agent_config(tunnel_url=first.tunnel_url, cluster=cluster, kube=kube, tmp_path=tmp_path)
    async with running_agent(config):
        await wait_until(lambda: first.session_for(cluster.id) is not None, what="the agent to connect")
        await wait_until(lambda: registry.lookup(cluster.id), what="the agent's claim in the registry")
        yield first


async def test_no_token_a_bad_token_and_an_outsider_are_refused_before_the_cluster(
    replicas: tuple[TunnelServer, TunnelServer], cluster: CreatedCluster, people: People
) -> None:
    server, _ = replicas
    path = f"/k8s/clusters/{cluster.id}{NAMESPACES}"
    async with kubectl(server) as client:
        missing = await client.get(path)
        bad = await client.get(path, headers=bearer("kaas_nope"))
        outsider = await client.get(path, headers=bearer(people.outsider))
        no_such = await client.get(
            f"/k8s/clusters/{'0' * 8}-0000-0000-0000-{'0' * 12}{NAMESPACES}", headers=bearer(people.owner)
        )
    assert (missing.status_code, missing.json()["kind"], missing.json()["code"]) == (401, "Status", 401)
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert bad.status_code == 401
    assert bad.json()["message"] == "invalid token"
    assert outsider.status_code == 404
    assert no_such.status_code == 404


async def test_a_non_canonical_path_is_refused_and_audited_before_the_token(
    replicas: tuple[TunnelServer, TunnelServer],
    cluster: CreatedCluster,
    session_factory: sessionmaker[Session],
) -> None:
    server, _ = replicas
    async with kubectl(server) as client:
        traversal = await client.get(
            f"/k8s/clusters/{cluster.id}/api/v1/namespaces/%2e%2e/secrets", headers=bearer("kaas_nope")
        )
    assert traversal.status_code == 400
    with session_factory() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.status_code == 400)).one()
    assert (event.route, event.method, event.outcome, event.actor_name) == (
        "/k8s/clusters/{cluster_id}/{path}",
        "GET",
        "refused",
        None,
    )


async def test_a_viewer_reaches_the_cluster_as_a_kaas_user_with_the_viewer_group_and_is_audited(
    holder: TunnelServer,
    cluster: CreatedCluster,
    people: People,
    session_factory: sessionmaker[Session],
) -> None:
    async with kubectl(holder) as client:
        listed = await client.get(f"/k8s/clusters/{cluster.id}{NAMESPACES}", headers=bearer(people.viewer))
        review = await client.post(
            f"/k8s/clusters/{cluster.id}{WHOAMI}",
            json=REVIEW,
            headers={
                **bearer(people.viewer_kubeconfig),
                "Impersonate-User": "kubernetes-admin",
                "Impersonate-Group": "system:masters",
                "X-Request-ID": "kubectl-trace-0001",
            },
        )
    assert listed.status_code == 200, listed.text
    assert review.status_code == 201, review.text
    # the caller's request id comes back and is audited, as on the API's proxy; without one, a new one
    assert review.headers["x-request-id"] == "kubectl-trace-0001"
    assert len(listed.headers["x-request-id"]) == 32
    user_info = review.json()["status"]["userInfo"]
    assert user_info["username"] == "kaas:vera"
    assert set(user_info["groups"]) >= {"kaas:authenticated", "kaas:viewer"}
    assert "system:masters" not in user_info["groups"]
    with session_factory() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.method == "POST")).all()
    assert [
        (e.actor_name, e.action, e.status_code, e.outcome, e.cluster_id, e.request_id) for e in events
    ] == [("vera", "proxy", 201, "success", cluster.id, "kubectl-trace-0001")]
    assert events[0].detail["path_params"]["path"] == WHOAMI.lstrip("/")


async def test_a_kubeconfig_token_of_another_cluster_is_refused(
    replicas: tuple[TunnelServer, TunnelServer], cluster: CreatedCluster, people: People
) -> None:
    server, _ = replicas
    async with kubectl(server) as client:
        refused = await client.get(
            f"/k8s/clusters/{cluster.id}{NAMESPACES}", headers=bearer(people.other_cluster_kubeconfig)
        )
    assert refused.status_code == 401
    assert refused.json()["message"] == "invalid token"


async def test_a_request_for_an_agent_held_by_the_other_replica_goes_one_hop(
    holder: TunnelServer,
    replicas: tuple[TunnelServer, TunnelServer],
    cluster: CreatedCluster,
    people: People,
) -> None:
    _, other = replicas
    assert other.session_for(cluster.id) is None
    async with kubectl(other) as client:
        review = await client.post(
            f"/k8s/clusters/{cluster.id}{WHOAMI}", json=REVIEW, headers=bearer(people.owner)
        )
        listed = await client.get(f"/k8s/clusters/{cluster.id}{NAMESPACES}", headers=bearer(people.owner))
    assert review.status_code == 201, review.text
    assert review.json()["status"]["userInfo"]["username"] == "kaas:olga"
    assert "kaas:owner" in review.json()["status"]["userInfo"]["groups"]
    assert listed.status_code == 200
    assert "default" in [ns["metadata"]["name"] for ns in listed.json()["items"]]


async def test_a_revoked_kubeconfig_token_is_refused_within_a_second_on_every_replica(
    holder: TunnelServer,
    replicas: tuple[TunnelServer, TunnelServer],
    cluster: CreatedCluster,
    people: People,
    db_engine: Engine,
    redis_url: str,
) -> None:
    path = f"/k8s/clusters/{cluster.id}{NAMESPACES}"
    async with kubectl(replicas[0]) as first, kubectl(replicas[1]) as second:
        for client in (first, second):
            for _ in range(2):  # the second is answered from the cache: no database read
                assert (await client.get(path, headers=bearer(people.viewer_kubeconfig))).status_code == 200
        assert all(server.credentials.hits >= 1 for server in replicas)
        # the revocation is committed elsewhere, as by an API replica: its own session factory, whose
        # commits only reach these processes through Redis
        api_feed = RedisRevocationFeed(redis_url)
        api_sessions = make_session_factory(db_engine)
        install_revocation_hooks(api_sessions, api_feed)
        try:
            with api_sessions() as session:
                user = session.scalars(select(User).where(User.name == "vera")).one()
                token = session.get(ApiToken, people.viewer_kubeconfig_id)
                assert token is not None
                revoke_kubeconfig_token(session, Principal.of(user, token), token.id)
                session.commit()
            revoked_at = time.monotonic()
            refused_after: list[float] = []
            for client in (first, second):
                while (
                    answer := await client.get(path, headers=bearer(people.viewer_kubeconfig))
                ).status_code == 200:
                    assert time.monotonic() - revoked_at < 1.0, (
                        "a replica still let the revoked token through"
                    )
                    await asyncio.sleep(0.02)
                assert answer.status_code == 401
                assert answer.json()["message"] == "token was revoked"
                refused_after.append(time.monotonic() - revoked_at)
        finally:
            await api_feed.aclose()
    assert max(refused_after) < 1.0


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


async def test_kubectl_exec_runs_through_the_one_hop_path_here_and_on_the_other_replica(
    holder: TunnelServer,
    replicas: tuple[TunnelServer, TunnelServer],
    cluster: CreatedCluster,
    people: People,
    kube: KubeTarget,
    session_factory: sessionmaker[Session],
) -> None:
    kube.create_pod("web")
    query = "command=echo&command=hello&command=kaas&stdout=true&stderr=true"
    outputs = []
    for server in replicas:
        url = (
            server.k8s_proxy_url.replace("http://", "ws://")
            + f"/k8s/clusters/{cluster.id}{kube.path('pods', 'web')}/exec?{query}"
        )
        async with connect(
            url,
            subprotocols=[V5],  # type: ignore[list-item]
            additional_headers=bearer(people.owner),
            proxy=None,
            open_timeout=20,
        ) as websocket:
            assert websocket.subprotocol == V5
            outputs.append(await channels(websocket))
    for received in outputs:
        assert received[1] == b"hello kaas\n"
        assert json.loads(received[3])["status"] == "Success"
    with session_factory() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "proxy_websocket")).all()
    assert [(e.actor_name, e.status_code, e.cluster_id) for e in events] == [
        ("olga", 101, cluster.id),
        ("olga", 101, cluster.id),
    ]


async def test_a_watch_through_the_other_replica_outlives_the_hops_read_timeout(
    make_server: ServerFactory,
    cluster: CreatedCluster,
    people: People,
    kube: KubeTarget,
    registry: RedisTunnelRegistry,
    admin: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    holder = await make_server()
    other = await make_server(k8s_proxy_port=0, k8s_proxy_read_timeout_seconds=0.5)
    configmaps = kube.path("configmaps")
    config = agent_config(tunnel_url=holder.tunnel_url, cluster=cluster, kube=kube, tmp_path=tmp_path)
    async with running_agent(config), kubectl(other) as client:
        await wait_until(lambda: registry.lookup(cluster.id), what="the agent's claim in the registry")
        base = f"/k8s/clusters/{cluster.id}{configmaps}"
        listed = await client.get(base, headers=bearer(people.owner))
        since = listed.json()["metadata"]["resourceVersion"]
        watch = f"{base}?watch=true&timeoutSeconds=30&resourceVersion={since}"
        async with client.stream("GET", watch, headers=bearer(people.owner)) as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            await asyncio.sleep(1.5)  # silent for three of the hop's read timeouts
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late"}, "data": {"a": "b"}}
            assert (await admin.post(configmaps, json=body)).status_code == 201
            event = json.loads(await asyncio.wait_for(anext(lines), timeout=5))
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "late")


async def test_a_read_whose_holder_died_follows_the_agent_to_its_new_session_on_this_replica(
    replicas: tuple[TunnelServer, TunnelServer],
    cluster: CreatedCluster,
    kube: KubeTarget,
    registry: RedisTunnelRegistry,
    people: People,
    tmp_path: Path,
) -> None:
    """The registry still names a tunnel process that died (its claim outlives it) while the agent dials
    this one: a GET waits for the new session instead of answering 503, and is served here."""
    _, here = replicas
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    await registry.claim(cluster_id=cluster.id, session_id="died-with-its-process", address=dead)
    config = agent_config(tunnel_url=here.tunnel_url, cluster=cluster, kube=kube, tmp_path=tmp_path)

    async def agent_dials_here_a_moment_later() -> None:
        await asyncio.sleep(0.5)
        async with running_agent(config):
            await asyncio.sleep(5)

    agent = asyncio.create_task(agent_dials_here_a_moment_later())
    try:
        async with kubectl(here) as client:
            listed = await client.get(f"/k8s/clusters/{cluster.id}{NAMESPACES}", headers=bearer(people.owner))
    finally:
        await agent
    assert listed.status_code == 200, listed.text
    assert "default" in [ns["metadata"]["name"] for ns in listed.json()["items"]]


async def test_a_write_whose_holder_died_answers_503_at_once(
    replicas: tuple[TunnelServer, TunnelServer],
    cluster: CreatedCluster,
    registry: RedisTunnelRegistry,
    people: People,
) -> None:
    """Its body may have been read already: it is not sent again, the client retries."""
    _, here = replicas
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    await registry.claim(cluster_id=cluster.id, session_id="died-with-its-process", address=dead)
    started = time.monotonic()
    async with kubectl(here) as client:
        review = await client.post(
            f"/k8s/clusters/{cluster.id}{WHOAMI}", json=REVIEW, headers=bearer(people.owner)
        )
    assert review.status_code == 503
    assert "cannot be reached" in review.json()["message"]
    assert time.monotonic() - started < 2
