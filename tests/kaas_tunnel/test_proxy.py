"""The internal endpoint proxies kubectl requests through a live agent to the cluster's apiserver."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from kaas_core.internal_hop import ASSERTION_HEADER, ProxyAssertion, assertion_key
from kaas_tunnel.server import TunnelServer
from tests.kaas_tunnel.conftest import (
    INTERNAL_SECRET,
    VIEWER_GROUPS,
    connected_agent,
    proxy_client,
    proxy_path,
)
from tests.kube_targets import KubeTarget, names_of
from tests.provider.factories import CreatedCluster

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


def configmap(name: str, **data: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


async def test_a_member_can_create_read_and_delete_through_the_tunnel(
    server: TunnelServer, cluster: CreatedCluster, kube: KubeTarget, tmp_path: Path
) -> None:
    configmaps = kube.path("configmaps")
    async with connected_agent(server, cluster, kube, tmp_path), proxy_client(server, cluster.id) as client:
        created = await client.post(proxy_path(configmaps), json=configmap("cm1", a="1"))
        assert created.status_code == 201, created.text
        got = await client.get(proxy_path(configmaps + "/cm1"))
        assert got.status_code == 200
        assert got.json()["data"] == {"a": "1"}
        listed = await client.get(proxy_path(configmaps + "?limit=10"))
        assert names_of(listed.json()["items"]) == ["cm1"]
        deleted = await client.delete(proxy_path(configmaps + "/cm1"))
        assert deleted.status_code == 200
        gone = await client.get(proxy_path(configmaps + "/cm1"))
        assert gone.status_code == 404


async def test_a_viewer_may_read_but_rbac_forbids_writing(
    server: TunnelServer, cluster: CreatedCluster, kube: KubeTarget, tmp_path: Path
) -> None:
    configmaps = kube.path("configmaps")
    async with (
        connected_agent(server, cluster, kube, tmp_path),
        proxy_client(server, cluster.id, groups=VIEWER_GROUPS) as c,
    ):
        assert (await c.get(proxy_path(configmaps))).status_code == 200
        refused = await c.post(proxy_path(configmaps), json=configmap("nope"))
        assert refused.status_code == 403
        assert refused.json()["reason"] == "Forbidden"
        assert "kaas:alice" in refused.json()["message"]


async def test_the_request_runs_as_the_kaas_user_not_the_agent(
    server: TunnelServer, cluster: CreatedCluster, kube: KubeTarget, tmp_path: Path
) -> None:
    async with (
        connected_agent(server, cluster, kube, tmp_path),
        proxy_client(server, cluster.id, user="carol") as client,
    ):
        review = await client.post(
            proxy_path("/apis/authentication.k8s.io/v1/selfsubjectreviews"),
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
    assert review.status_code == 201, review.text
    user_info = review.json()["status"]["userInfo"]
    assert user_info["username"] == "kaas:carol"
    assert "kaas:member" in user_info["groups"]


async def test_client_identity_headers_never_reach_the_apiserver(
    server: TunnelServer, cluster: CreatedCluster, kube: KubeTarget, tmp_path: Path
) -> None:
    configmaps = kube.path("configmaps")
    async with (
        connected_agent(server, cluster, kube, tmp_path),
        proxy_client(server, cluster.id, groups=VIEWER_GROUPS) as c,
    ):
        sneaky = {
            "Impersonate-User": "kubernetes-admin",
            "Impersonate-Group": "system:masters",
            "X-Remote-User": "kubernetes-admin",
        }
        refused = await c.post(
            proxy_path(configmaps), json=configmap("escalated"), headers=sneaky
        )
        assert refused.status_code == 403
        review = await c.post(
            proxy_path("/apis/authentication.k8s.io/v1/selfsubjectreviews"),
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            headers=sneaky,
        )
        assert review.json()["status"]["userInfo"]["username"] == "kaas:alice"
        assert "system:masters" not in review.json()["status"]["userInfo"]["groups"]


async def test_the_internal_endpoint_needs_an_assertion_signed_with_the_internal_secret(
    server: TunnelServer, cluster: CreatedCluster
) -> None:
    forged = ProxyAssertion.issue(
        cluster_id=cluster.id,
        user="alice",
        groups=VIEWER_GROUPS,
        method="GET",
        target=CONFIGMAPS,
        now=time.time(),
    ).sign(assertion_key(INTERNAL_SECRET + "x"))
    async with httpx.AsyncClient(base_url=server.internal_url, trust_env=False) as client:
        missing = await client.get(proxy_path(CONFIGMAPS), headers={"X-Kaas-User": "alice"})
        bearer = await client.get(
            proxy_path(CONFIGMAPS),
            headers={"X-Kaas-User": "alice", "Authorization": f"Bearer {INTERNAL_SECRET}"},
        )
        wrong_key = await client.get(proxy_path(CONFIGMAPS), headers={ASSERTION_HEADER: forged})
    assert (missing.status_code, bearer.status_code, wrong_key.status_code) == (401, 401, 401)
    assert "signature" in wrong_key.json()["message"]


async def test_a_cluster_without_a_connected_agent_answers_503_not_connected(
    server: TunnelServer, cluster: CreatedCluster
) -> None:
    async with proxy_client(server, cluster.id) as client:
        response = await client.get(proxy_path(CONFIGMAPS))
    assert response.status_code == 503
    body = response.json()
    assert body["kind"] == "Status"
    assert body["message"] == f"the agent of cluster {cluster.id} is not connected"
