"""The k8s proxy reaches the cluster it authorized and no other: every non-canonical path is refused.

The attack these tests reproduce: user-a owns cluster A, user-b owns cluster B, and user-a sends
``/k8s/clusters/<A>/../../<B>/proxy/...`` with ``curl --path-as-is``. The API authorized A, then an HTTP
client on the internal hop removed the dot segments and the tunnel server routed to B, where user-a acted with
their own role's groups (an owner is cluster-admin). Two live clusters are set up here, each with its own
agent and its own kube-apiserver (A: the session's real control plane, B: this module's second one; two
stand-ins where the programs are not built and services not required), the same namespace in both, and the
proof that nothing reached B is threefold: the answer is a refusal, B's apiserver holds nothing user-a tried
to create, and the tunnel server opened no stream at all.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.config import ApiSettings
from kaas_api.projects.service import create_project
from kaas_core.db.models import AuditEvent, Cluster, User
from kaas_core.security import SecretBox
from kaas_core.tunnel_registry import InMemoryTunnelRegistry
from kaas_tunnel.server import TunnelServer
from tests.kaas_api.conftest import SECRET_KEY, UNLIMITED, World, cluster_body
from tests.kaas_api.k8s.conftest import api_client, connected, run_kubectl, world_cluster
from tests.kaas_api.k8s.raw_http import RawResponse, raw_request
from tests.kube_targets import (
    REAL,
    KubeTarget,
    SharedRealCluster,
    default_kind,
    real_cluster_session,
    real_target,
    standin_target,
)
from tests.provider.factories import CreatedCluster

NAMESPACES = "/api/v1/namespaces"
B_SECRET_VALUE = "the-secret-of-user-b"


@dataclass(frozen=True)
class TwoClusters:
    """Cluster A of the world (project alpha; ``owner`` owns it) and cluster B of user ``outsider``."""

    a: str
    b: str
    kube_a: KubeTarget
    kube_b: KubeTarget
    tunnel_server: TunnelServer
    settings: ApiSettings
    session_factory: sessionmaker[Session]

    @property
    def secret_path(self) -> str:
        """B's secret (the same namespace exists in both clusters, so a path names either)."""
        return self.kube_b.path("secrets", "b-secret")

    @property
    def whoami_path(self) -> str:
        return self.kube_a.path("configmaps", "whoami")

    def streams_opened(self) -> float:
        value = self.tunnel_server.metrics.registry.get_sample_value("kaas_tunnel_streams_opened_total")
        return value or 0.0

    async def send(self, who_token: str, method: str, target: str, **kwargs: object) -> RawResponse:
        assert self.settings.tls_ca_file is not None
        headers = {"Authorization": f"Bearer {who_token}", **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        return await raw_request(
            self.settings.public_url,
            str(self.settings.tls_ca_file),
            method,
            target,
            headers=headers,
            **kwargs,  # type: ignore[arg-type]
        )

    def b_namespaces(self) -> list[str]:
        with self.kube_b.admin(timeout=10) as admin:
            response = admin.get(NAMESPACES)
        return [item["metadata"]["name"] for item in response.json()["items"]]

    def audit_events(self) -> list[AuditEvent]:
        with self.session_factory() as session:
            return list(session.scalars(select(AuditEvent).order_by(AuditEvent.at)))


@pytest.fixture(scope="module")
def second_real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedRealCluster | None]:
    """Cluster B's real control plane, for this module (None where the tests run on stand-ins)."""
    if default_kind() != REAL:
        yield None
        return
    with real_cluster_session(tmp_path_factory.mktemp("cluster-b")) as second:
        yield second


@pytest.fixture
def kube_b(kube: KubeTarget, second_real_cluster: SharedRealCluster | None) -> Iterator[KubeTarget]:
    """Cluster B's apiserver, with a namespace of the same name as A's."""
    with contextlib.ExitStack() as stack:
        if second_real_cluster is not None:
            yield stack.enter_context(real_target(second_real_cluster, namespace=kube.namespace))
        else:
            yield stack.enter_context(standin_target(namespace=kube.namespace))


def seed(kube: KubeTarget, *, cluster: str, secret: bool) -> None:
    with kube.admin(timeout=10) as admin:
        whoami = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "whoami"},
            "data": {"is": cluster},
        }
        assert admin.post(kube.path("configmaps"), json=whoami).status_code == 201
        if secret:
            data = {"value": base64.b64encode(B_SECRET_VALUE.encode()).decode()}
            body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "b-secret"}, "data": data}
            assert admin.post(kube.path("secrets"), json=body).status_code == 201


@pytest.fixture
async def two(
    world: World,
    api_url: str,
    settings: ApiSettings,
    tunnel_server: TunnelServer,
    registry: InMemoryTunnelRegistry,
    session_factory: sessionmaker[Session],
    kube: KubeTarget,
    kube_b: KubeTarget,
    tmp_path: Path,
) -> AsyncIterator[TwoClusters]:
    with session_factory() as session:
        outsider = session.scalars(select(User).where(User.name == "outsider")).one()
        create_project(session, name="bravo", owner=outsider, policy=UNLIMITED)
        session.commit()
    async with api_client(settings, world.tokens["outsider"]) as client:
        created = await client.post("/v1/projects/bravo/clusters", json=cluster_body("b1"))
    assert created.status_code == 202, created.text
    b_id = created.json()["cluster"]["id"]
    with session_factory() as session:
        row = session.get(Cluster, b_id)
        assert row is not None
        assert row.agent_token_encrypted is not None
        b_token = SecretBox(SECRET_KEY).decrypt(row.agent_token_encrypted)
    cluster_b = CreatedCluster(id=b_id, operation_id=created.json()["operation"]["id"], agent_token=b_token)
    seed(kube, cluster="A", secret=False)
    seed(kube_b, cluster="B", secret=True)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        connected(tunnel_server, registry, world_cluster(world, session_factory), kube, tmp_path / "a"),
        connected(tunnel_server, registry, cluster_b, kube_b, tmp_path / "b"),
    ):
        yield TwoClusters(
            a=world.cluster_id,
            b=b_id,
            kube_a=kube,
            kube_b=kube_b,
            tunnel_server=tunnel_server,
            settings=settings,
            session_factory=session_factory,
        )


def assert_refused_before_any_cluster(two: TwoClusters, response: RawResponse, streams_before: float) -> None:
    assert response.status == 400, response.body[:500]
    body = response.json()
    assert body["kind"] == "Status"
    assert body["reason"] == "BadRequest"
    assert "non-canonical" in body["message"]
    assert B_SECRET_VALUE.encode() not in response.body
    assert base64.b64encode(B_SECRET_VALUE.encode()) not in response.body
    assert two.streams_opened() == streams_before, "a refused request opened a stream to some cluster"


async def test_the_reported_traversal_to_another_tenants_secret_is_refused(
    two: TwoClusters, world: World
) -> None:
    # the sanity check first: the same token reaches its own cluster, and B's through the front door is 404
    own = await two.send(world.tokens["owner"], "GET", f"/k8s/clusters/{two.a}{two.whoami_path}")
    assert own.status == 200
    assert own.json()["data"] == {"is": "A"}
    front_door = await two.send(world.tokens["owner"], "GET", f"/k8s/clusters/{two.b}{two.secret_path}")
    assert front_door.status == 404
    before = two.streams_opened()
    attack = await two.send(
        world.tokens["owner"], "GET", f"/k8s/clusters/{two.a}/../../{two.b}/proxy{two.secret_path}"
    )
    assert_refused_before_any_cluster(two, attack, before)


async def test_the_reported_traversal_cannot_create_in_another_tenants_cluster_and_is_audited(
    two: TwoClusters, world: World
) -> None:
    before = two.streams_opened()
    attack = await two.send(
        world.tokens["owner"],
        "POST",
        f"/k8s/clusters/{two.a}/../../{two.b}/proxy{NAMESPACES}",
        headers={"Content-Type": "application/json"},
        body=b'{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"pwned-by-a"}}',
    )
    assert_refused_before_any_cluster(two, attack, before)
    assert "pwned-by-a" not in two.b_namespaces()
    refused = [event for event in two.audit_events() if event.status_code == 400]
    assert len(refused) == 1
    event = refused[0]
    assert (event.method, event.outcome, event.cluster_id) == ("POST", "refused", two.a)
    assert "non-canonical" in event.detail["reason"]
    assert "'..'" in event.detail["reason"]
    assert event.detail["path_params"]["path"] == f"../../{two.b}/proxy{NAMESPACES}"


VARIANTS = [
    "{A}/../../{B}/proxy{P}",
    "{A}/%2e%2e/%2e%2e/{B}/proxy{P}",
    "{A}/%2E%2E/%2E%2E/{B}/proxy{P}",
    "{A}/.%2e/%2e./{B}/proxy{P}",
    "{A}/%252e%252e/%252e%252e/{B}/proxy{P}",
    "{A}/..%2f..%2f{B}/proxy{P}",
    "{A}/..%2F..%2F{B}/proxy{P}",
    "{A}/%2e%2e%2f%2e%2e%2f{B}/proxy{P}",
    "{A}/..\\..\\{B}/proxy{P}",
    "{A}/..%5c..%5c{B}/proxy{P}",
    "{A}/..;/..;/{B}/proxy{P}",
    "{A}/..;x=1/..;x=1/{B}/proxy{P}",
    "{A};x=1/../../{B}/proxy{P}",
    "{A}/./api/v1/namespaces/default/secrets",
    "{A}/api/v1/namespaces/./default/secrets",
    "{A}/api/v1/namespaces/default/secrets/..",
    "{A}//api/v1/namespaces",
    "{A}/api//v1/namespaces",
    "{A}/api/v1/namespaces/default%2fsecrets",
    "{A}/api/v1/namespaces/%00default",
    "{A}/%ZZapi/v1/namespaces",
]


@pytest.mark.parametrize("template", VARIANTS)
async def test_every_non_canonical_form_is_refused_before_it_reaches_a_cluster(
    two: TwoClusters, world: World, template: str
) -> None:
    target = "/k8s/clusters/" + template.format(A=two.a, B=two.b, P=two.secret_path)
    before = two.streams_opened()
    for method in ("GET", "DELETE"):
        response = await two.send(world.tokens["owner"], method, target)
        assert_refused_before_any_cluster(two, response, before)


async def test_an_escaped_cluster_id_is_refused_although_it_names_the_same_cluster(
    two: TwoClusters, world: World
) -> None:
    escaped = "".join(f"%{ord(char):02x}" for char in two.a[:3]) + two.a[3:]
    before = two.streams_opened()
    response = await two.send(world.tokens["owner"], "GET", f"/k8s/clusters/{escaped}{two.whoami_path}")
    assert_refused_before_any_cluster(two, response, before)


async def test_a_viewers_kubeconfig_token_cannot_traverse_either(two: TwoClusters, world: World) -> None:
    async with api_client(two.settings, world.tokens["viewer"]) as client:
        download = await client.get("/v1/projects/alpha/clusters/c1/kubeconfig")
    token = yaml.safe_load(download.text)["users"][0]["user"]["token"]
    own = await two.send(token, "GET", f"/k8s/clusters/{two.a}{NAMESPACES}")
    assert own.status == 200
    before = two.streams_opened()
    attack = await two.send(token, "GET", f"/k8s/clusters/{two.a}/../../{two.b}/proxy{NAMESPACES}")
    assert_refused_before_any_cluster(two, attack, before)


async def test_no_path_reaches_the_tunnel_servers_metrics(two: TwoClusters, world: World) -> None:
    before = two.streams_opened()
    for target in (
        f"/k8s/clusters/{two.a}/../../../../../metrics",
        f"/k8s/clusters/{two.a}/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/metrics",
    ):
        response = await two.send(world.tokens["viewer"], "GET", target)
        assert_refused_before_any_cluster(two, response, before)
        assert b"kaas_tunnel" not in response.body
        assert b"kaas_http" not in response.body


async def test_a_websocket_upgrade_with_a_traversal_is_refused(two: TwoClusters, world: World) -> None:
    before = two.streams_opened()
    response = await two.send(
        world.tokens["owner"],
        "GET",
        f"/k8s/clusters/{two.a}/../../{two.b}/proxy/api/v1/namespaces/default/pods/web/exec?command=id",
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
            "Sec-WebSocket-Protocol": "v5.channel.k8s.io",
        },
    )
    assert_refused_before_any_cluster(two, response, before)
    refused = [event for event in two.audit_events() if event.status_code == 400]
    assert [(event.method, event.cluster_id) for event in refused] == [("GET", two.a)]


@pytest.mark.parametrize(
    "server_path",
    ["/k8s/clusters/{A}/../{B}", "/k8s/clusters/{A}/../../{B}/proxy", "/k8s/clusters/{A}/%2e%2e/{B}"],
)
async def test_kubectl_with_a_crafted_server_url_never_reaches_the_other_cluster(
    two: TwoClusters, world: World, tmp_path: Path, server_path: str
) -> None:
    async with api_client(two.settings, world.tokens["owner"]) as client:
        download = await client.get("/v1/projects/alpha/clusters/c1/kubeconfig")
    kubeconfig = yaml.safe_load(download.text)
    server = kubeconfig["clusters"][0]["cluster"]["server"]
    base = server.split("/k8s/", 1)[0]
    kubeconfig["clusters"][0]["cluster"]["server"] = base + server_path.format(A=two.a, B=two.b)
    path = tmp_path / "crafted.kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    before = two.streams_opened()
    in_b = ("-n", two.kube_b.namespace)
    code, stdout, stderr = await run_kubectl(path, "get", "secret", "b-secret", *in_b, "-o", "yaml")
    assert code != 0
    assert B_SECRET_VALUE not in stdout
    assert base64.b64encode(B_SECRET_VALUE.encode()).decode() not in stdout
    code, _, _ = await run_kubectl(path, "create", "namespace", "pwned-by-kubectl")
    assert code != 0
    assert "pwned-by-kubectl" not in two.b_namespaces()
    assert two.streams_opened() == before, stderr


# --- the property: whatever the path, the cluster reached is the cluster authorized ------------------------

SEGMENTS = st.sampled_from(
    [
        *("..", ".", "%2e%2e", "%2E%2e", ".%2e", "%252e%252e", "..%2f", "%2f", "..%5c", "\\", "..;"),
        *(";x=1", "", "proxy", "clusters", "k8s", "api", "v1", "namespaces", "default", "configmaps"),
        *("whoami", "{B}", "{A}", "internal", "metrics", "%41", "~", ":"),
    ]
)


@hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(middle=st.lists(SEGMENTS, max_size=8), tail=st.booleans())
async def test_the_cluster_reached_is_always_the_cluster_authorized(
    two: TwoClusters, world: World, middle: list[str], tail: bool
) -> None:
    path = "/".join(middle).format(A=two.a, B=two.b)
    target = f"/k8s/clusters/{two.a}/{path}" + (two.whoami_path if tail else "")
    response = await two.send(world.tokens["owner"], "GET", target)
    assert B_SECRET_VALUE.encode() not in response.body
    if response.status == 200 and response.body.startswith(b"{"):
        document = response.json()
        if document.get("kind") == "ConfigMap" and document["metadata"]["name"] == "whoami":
            assert document["data"] == {"is": "A"}, target
    # the other way round: B's owner through B's id never lands in A
    response_b = await two.send(world.tokens["outsider"], "GET", target.replace(two.a, two.b, 1))
    if response_b.status == 200 and response_b.body.startswith(b"{"):
        document = response_b.json()
        if document.get("kind") == "ConfigMap" and document["metadata"]["name"] == "whoami":
            assert document["data"] == {"is": "B"}, target
