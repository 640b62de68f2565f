"""Observing the cluster for the status report (``agents.tunnel.status_report``) the agent sends to kaas.

Owned by the agent. The agent runtime calls ``collect_status`` every ``report_interval_seconds`` and sends
``ClusterStatusReport.to_json()`` up the tunnel when it changed; kaas turns it into the cluster's observed
status. Everything is read with the agent's OWN identity (``ApiserverForwarder.get_json``, never
impersonated): ``/version`` for the Kubernetes version and the node list (paged) for total and Ready nodes.
The agent's service account therefore needs ``get``/``list`` on ``nodes``.

``collect_status`` never raises for apiserver trouble: an unreachable or refusing apiserver is itself the
news kaas needs, so it is reported (``apiserver_reachable`` false, ``error`` set).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlencode

from agents.forward import ApiserverRequestError, UpstreamError
from agents.tunnel.status_report import ClusterStatusReport, NodeStatus

NODE_PAGE_SIZE = 500
ROLE_LABEL_PREFIX = "node-role.kubernetes.io/"


class OwnIdentityClient(Protocol):
    """What ``collect_status`` needs: JSON reads as the agent itself (``ApiserverForwarder`` is one)."""

    async def get_json(self, path: str) -> Any: ...


def node_status(node: dict[str, Any]) -> NodeStatus:
    """A Node object's name, Ready condition (``status: "True"``), roles and kubelet version."""
    metadata = node.get("metadata") or {}
    status = node.get("status") or {}
    ready = any(
        isinstance(condition, dict) and condition.get("type") == "Ready" and condition.get("status") == "True"
        for condition in status.get("conditions") or []
    )
    labels = metadata.get("labels") or {}
    roles = sorted(
        key[len(ROLE_LABEL_PREFIX):] for key in labels if key.startswith(ROLE_LABEL_PREFIX)
    )
    kubelet_version = (status.get("nodeInfo") or {}).get("kubeletVersion")
    return NodeStatus(
        name=str(metadata.get("name", "")),
        ready=ready,
        roles=[role for role in roles if role],
        kubelet_version=str(kubelet_version) if kubelet_version else None,
    )


async def _list_nodes(client: OwnIdentityClient, *, page_size: int) -> list[NodeStatus]:
    nodes: list[NodeStatus] = []
    continue_token = ""
    while True:
        query = {"limit": str(page_size)}
        if continue_token:
            query["continue"] = continue_token
        page = await client.get_json("/api/v1/nodes?" + urlencode(query))
        if not isinstance(page, dict):
            raise ApiserverRequestError("the node list is not a JSON object", status=200, body=None)
        nodes.extend(node_status(item) for item in page.get("items") or [] if isinstance(item, dict))
        continue_token = str((page.get("metadata") or {}).get("continue") or "")
        if not continue_token:
            return nodes


async def collect_status(
    client: OwnIdentityClient, *, page_size: int = NODE_PAGE_SIZE
) -> ClusterStatusReport:
    """Observe the cluster now; apiserver errors become part of the report, never exceptions."""
    collected_at = datetime.now(UTC).isoformat()
    try:
        version = await client.get_json("/version")
    except UpstreamError as exc:
        return ClusterStatusReport(collected_at=collected_at, apiserver_reachable=False, error=str(exc))
    except ApiserverRequestError as exc:
        return ClusterStatusReport(collected_at=collected_at, apiserver_reachable=True, error=str(exc))
    git_version = version.get("gitVersion") if isinstance(version, dict) else None
    kubernetes_version = str(git_version) if git_version else None
    try:
        nodes = await _list_nodes(client, page_size=page_size)
    except UpstreamError as exc:
        return ClusterStatusReport(
            collected_at=collected_at, apiserver_reachable=False, kubernetes_version=kubernetes_version,
            error=str(exc),
        )
    except ApiserverRequestError as exc:
        return ClusterStatusReport(
            collected_at=collected_at, apiserver_reachable=True, kubernetes_version=kubernetes_version,
            error=str(exc),
        )
    return ClusterStatusReport(
        collected_at=collected_at,
        apiserver_reachable=True,
        kubernetes_version=kubernetes_version,
        nodes_total=len(nodes),
        nodes_ready=sum(1 for node in nodes if node.ready),
        nodes=nodes,
    )
