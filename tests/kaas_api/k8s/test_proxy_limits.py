"""The k8s proxy's own body cap through the real chain (API over HTTPS → tunnel server → agent → apiserver):
bodies larger than the API's JSON cap stream through, bodies over the proxy's cap are refused with a
``Status`` that kubectl prints."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.config import ApiSettings
from kaas_core.tunnel_registry import InMemoryTunnelRegistry
from kaas_tunnel.server import TunnelServer
from tests.kaas_api.conftest import World
from tests.kaas_api.k8s.conftest import api_client, connected, download_kubeconfig, run_kubectl, world_cluster
from tests.kube_targets import KubeTarget

MIB = 1024 * 1024
PROXY_CAP = 3 * MIB
# a Secret's data travels base64-encoded: a body of ~1.33 MB, over the API's JSON cap, for an object under
# the 1 MiB a real apiserver allows
SECRET_BYTES = 1_000_000


@pytest.fixture
def settings(settings: ApiSettings) -> ApiSettings:
    return settings.model_copy(update={"k8s_proxy_max_body_bytes": PROXY_CAP})


def big_secret(name: str, size: int) -> dict[str, object]:
    blob = base64.b64encode(b"x" * size).decode()
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": {"blob": blob}}


def big_configmap(name: str, size: int) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"blob": "x" * size}}


async def test_a_body_over_the_json_cap_streams_through_within_the_proxy_cap(
    world: World,
    api_url: str,
    settings: ApiSettings,
    tunnel_server: TunnelServer,
    registry: InMemoryTunnelRegistry,
    session_factory: sessionmaker[Session],
    kube: KubeTarget,
    tmp_path: Path,
) -> None:
    body = big_secret("big", SECRET_BYTES)
    assert settings.http_max_body_bytes < len(json.dumps(body)) < PROXY_CAP
    cluster = world_cluster(world, session_factory)
    secrets = f"/k8s/clusters/{world.cluster_id}{kube.path('secrets')}"
    async with (
        connected(tunnel_server, registry, cluster, kube, tmp_path),
        api_client(settings, world.tokens["member"]) as client,
    ):
        created = await client.post(secrets, json=body)
        assert created.status_code == 201, created.text[:500]
        read = await client.get(f"{secrets}/big")
    assert len(base64.b64decode(read.json()["data"]["blob"])) == SECRET_BYTES


async def test_a_body_over_the_proxy_cap_is_refused_with_a_status_kubectl_prints(
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
    manifest = tmp_path / "huge.json"
    manifest.write_text(json.dumps(big_configmap("huge", 4 * MIB)))
    kubeconfig = tmp_path / "kubeconfig"
    await download_kubeconfig(settings, world, "member", kubeconfig)
    async with connected(tunnel_server, registry, cluster, kube, tmp_path):
        code, _stdout, stderr = await run_kubectl(
            kubeconfig, "create", "--validate=false", "-n", kube.namespace, "-f", str(manifest)
        )
        async with api_client(settings, world.tokens["member"]) as client:
            after = await client.get(f"/k8s/clusters/{world.cluster_id}{kube.path('configmaps', 'huge')}")
    assert code != 0
    assert f"the request body is larger than {PROXY_CAP} bytes" in stderr
    assert after.status_code == 404  # nothing reached the cluster
