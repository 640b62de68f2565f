"""The rollout's way into a cluster (``provider.rollout.run.NodeOps``): drain and observe through the tunnel.

Built by the composition root (``provider.celery_app.build_context``) as ``ProviderContext.node_ops``; each
pass that needs the cluster opens one ``TunnelKubeClient`` (the signed internal hop as kaas:system, the
same the add-ons use) and calls ``provider.rollout.drain`` and ``provider.rollout.observe`` on its
CoreV1Api. Their ``ClusterAccessError`` leaves as ``NodeOpsError``, temporary or not as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kubernetes.client.exceptions import ApiException

from provider.addons.kube_client import TunnelKubeClient
from provider.rollout import drain
from provider.rollout.observe import ClusterAccessError, ClusterObservation, observe_cluster
from provider.rollout.run import DrainResult, NodeOps, NodeOpsError, NodeOpsFactory


class TunnelNodeOps:
    """``NodeOps`` on one cluster's CoreV1Api."""

    def __init__(self, core_api: Any) -> None:
        self._core = core_api

    def cordon(self, node: str) -> None:
        with _as_node_ops_error():
            drain.cordon(self._core, node)

    def drain_step(self, node: str) -> DrainResult:
        with _as_node_ops_error():
            progress = drain.drain_step(self._core, node)
        return DrainResult(
            remaining=len(progress.remaining), blocked=tuple(str(b.pod) for b in progress.blocked)
        )

    def delete_node(self, node: str) -> None:
        try:
            self._core.delete_node(node, _request_timeout=30)
        except ApiException as exc:
            if exc.status != 404:
                raise NodeOpsError(f"delete node {node}: {exc.status} {exc.reason}", temporary=True) from exc

    def observe(self) -> ClusterObservation:
        with _as_node_ops_error():
            return observe_cluster(self._core)


@contextmanager
def _as_node_ops_error() -> Iterator[None]:
    try:
        yield
    except ClusterAccessError as exc:
        raise NodeOpsError(str(exc), temporary=exc.temporary) from exc


def tunnel_node_ops_factory(key: bytes, *, timeout: float = 30.0) -> NodeOpsFactory:
    """Node operations that go through the tunnel, signed with ``key`` (``KAAS_TUNNEL_INTERNAL_SECRET``)."""

    @contextmanager
    def open_node_ops(address: str, cluster_id: str) -> Iterator[NodeOps]:
        with TunnelKubeClient(address=address, cluster_id=cluster_id, key=key, timeout=timeout) as client:
            yield TunnelNodeOps(client.core())

    return open_node_ops
