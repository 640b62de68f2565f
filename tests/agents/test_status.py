"""The status report: Kubernetes version and node counts, read with the agent's own identity."""

from __future__ import annotations

import json
import ssl
from typing import Any

import httpx

from agents.forward import ApiserverForwarder
from agents.kube import ApiserverConnection, StaticToken
from agents.status import collect_status
from agents.tunnel.status_report import ClusterStatusReport
from simcloud.kube.testing import KubeStandinHandle
from tests.agents.conftest import ADMIN_TOKEN, KUBERNETES_VERSION, free_port


def node(name: str, *, ready: str, role: str | None = None) -> dict[str, Any]:
    labels = {f"node-role.kubernetes.io/{role}": ""} if role else {}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": ready},
            ],
            "nodeInfo": {"kubeletVersion": KUBERNETES_VERSION},
        },
    }


async def test_report_counts_ready_and_total_nodes(
    forwarder: ApiserverForwarder, kube: KubeStandinHandle
) -> None:
    kube.standin.apply(
        [
            node("cp-0", ready="True", role="control-plane"),
            node("worker-0", ready="True"),
            node("worker-1", ready="False"),
            node("worker-2", ready="Unknown"),
        ]
    )

    report = await collect_status(forwarder)

    assert report.error is None
    assert report.apiserver_reachable
    assert report.kubernetes_version == KUBERNETES_VERSION
    assert (report.nodes_total, report.nodes_ready) == (4, 2)
    by_name = {n.name: n for n in report.nodes}
    assert by_name["cp-0"].roles == ["control-plane"]
    assert by_name["cp-0"].ready
    assert not by_name["worker-2"].ready
    assert by_name["worker-0"].kubelet_version == KUBERNETES_VERSION


async def test_report_reads_with_the_agent_identity_not_an_impersonated_one(
    forwarder: ApiserverForwarder, kube: KubeStandinHandle
) -> None:
    # Without its node-reading grant (kaas-rbac.yaml), the agent's list is refused: the agent asked as
    # itself (an impersonated kaas owner would have been allowed by cluster-admin).
    kube.standin.apply([node("cp-0", ready="True")])
    revoked = httpx.delete(
        f"{kube.url}/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/kaas:agent-status",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        verify=ssl.create_default_context(cadata=kube.ca.decode()) if kube.ca else True,
    )
    assert revoked.status_code == 200, revoked.text

    report = await collect_status(forwarder)

    assert report.apiserver_reachable
    assert report.kubernetes_version == KUBERNETES_VERSION
    assert report.nodes_total is None
    assert report.error is not None
    assert "403" in report.error
    assert "system:serviceaccount:kaas-system:kaas-agent" in report.error


async def test_report_serialises_to_json_and_back(
    forwarder: ApiserverForwarder, kube: KubeStandinHandle
) -> None:
    kube.standin.apply([node("cp-0", ready="True")])
    report = await collect_status(forwarder)

    decoded = json.loads(report.to_json())

    assert decoded["nodes_total"] == 1
    assert decoded["nodes_ready"] == 1
    assert decoded["kubernetes_version"] == KUBERNETES_VERSION
    assert decoded["schema_version"] == 1
    assert ClusterStatusReport.from_dict(decoded) == report


async def test_unreachable_apiserver_is_reported_not_raised() -> None:
    connection = ApiserverConnection(
        base_url=f"http://127.0.0.1:{free_port()}", ssl_context=None, token_source=StaticToken("t")
    )
    async with ApiserverForwarder(connection, connect_timeout_seconds=2) as forwarder:
        report = await collect_status(forwarder)

    assert not report.apiserver_reachable
    assert report.kubernetes_version is None
    assert report.nodes_total is None
    assert report.error is not None
    assert "unreachable" in report.error
