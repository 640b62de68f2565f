"""The rollout reaches a real cluster the way a pass reaches it: one real control plane (with kwok, whose
fake nodes run pods: its stages make a scheduled pod Running and Ready and remove a deleted one), kaas's
RBAC, a real agent connected to a real tunnel server, and the ``kubernetes`` CoreV1Api of
``TunnelKubeClient`` through the signed internal hop as kaas:system.

The control plane is the package's (Nodes are cluster-wide, so not the session's shared one); each test
gets its own namespace and its own kwok nodes (``Arrangement``), labelled with a group of its own that its
workloads select, so tests do not see each other's pods. Arranging and checking go straight to the
apiserver as its admin; only the code under test goes through the tunnel. The reconcile-pass tests use the
reconciler's fixtures (simcloud on a free port and a context on it).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from agents.config import AgentConfig, KubeconfigApiserver
from kaas_core.db.models import ClusterAgent
from kaas_core.internal_hop import assertion_key
from nodesim.control_planes import AGENT_NAMESPACE
from nodesim.kube_admin import admin_client, create_node, delete_node, wait_for_service_account
from nodesim.kube_real import RealControlPlane, fake_node, start_control_plane, write_cluster_pki
from provider.addons.kube_client import TunnelKubeClient
from simcloud.kube.testing import write_kubeconfig
from tests.kaas_tunnel.conftest import (
    INTERNAL_SECRET,
    ServerFactory,
    make_server,
    registry,
    running_agent,
    wait_until,
)
from tests.kube_targets import NEWEST, control_plane_slots, prepare_real_cluster, release_dir
from tests.provider.factories import create_cluster
from tests.provider.reconciler.conftest import ctx, simcloud

__all__ = ["ctx", "make_server", "registry", "simcloud"]
GROUP_LABEL = "kaas-test/group"
WAIT_SECONDS = 60.0


@dataclass
class RealCluster:
    control_plane: RealControlPlane
    agent_token: str = field(repr=False)


@pytest.fixture(scope="package")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    base = tmp_path_factory.mktemp("rollout-kube")
    with control_plane_slots():
        write_cluster_pki(base / "pki")
        with start_control_plane(
            bin_dir=release_dir(NEWEST), pki_dir=base / "pki", work_dir=base / "cp"
        ) as cp:
            agent_token, _ = prepare_real_cluster(cp)
            yield RealCluster(control_plane=cp, agent_token=agent_token)


@pytest.fixture
async def core_api(
    real_cluster: RealCluster,
    make_server: ServerFactory,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> AsyncIterator[Any]:
    """The CoreV1Api a pass gets from ``TunnelKubeClient.core()``, its agent connected for the test.
    Call it from a thread (``asyncio.to_thread``): the tunnel server and the agent run on the test's loop."""
    cluster = create_cluster(session_factory)
    server = await make_server()
    kubeconfig = write_kubeconfig(
        tmp_path / "agent.kubeconfig",
        server=real_cluster.control_plane.url,
        token=real_cluster.agent_token,
        ca=real_cluster.control_plane.ca_pem,
        namespace=AGENT_NAMESPACE,
    )
    config = AgentConfig(
        tunnel_url=server.tunnel_url,
        cluster_id=cluster.id,
        agent_token=SecretStr(cluster.agent_token),
        apiserver=KubeconfigApiserver(kubeconfig=kubeconfig),
        report_interval_seconds=0.3,
    )
    async with running_agent(config):

        def tunnel_address() -> str | None:
            with session_factory() as session:
                agent = session.get(ClusterAgent, cluster.id)
                return agent.tunnel_address if agent and agent.connected else None

        await wait_until(tunnel_address, what="the tunnel server to record the agent's session")
        with TunnelKubeClient(
            address=str(tunnel_address()),
            cluster_id=cluster.id,
            key=assertion_key(INTERNAL_SECRET),
            timeout=30,
        ) as client:
            yield client.core()


def poll(check: Callable[[], Any], *, what: str, timeout: float = WAIT_SECONDS) -> Any:
    """``check()``'s first truthy result, asked every 0.1 s for at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def is_ready(pod: dict[str, Any]) -> bool:
    """Counted by a PodDisruptionBudget as healthy: Ready, and not being deleted."""
    if pod["metadata"].get("deletionTimestamp"):
        return False
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


class Arrangement:
    """A test's namespace and kwok nodes, and the admin's view of them (straight to the apiserver)."""

    def __init__(self, cluster: RealCluster) -> None:
        self.group = f"g-{secrets.token_hex(4)}"
        self.namespace = self.group
        self.client = admin_client(cluster.control_plane)
        self.nodes: list[str] = []

    def close(self) -> None:
        self.client.delete(f"/api/v1/namespaces/{self.namespace}")
        for node in self.nodes:
            delete_node(self.client, node)
        self.client.close()

    def post(self, path: str, document: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post(path, json=document)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def get(self, path: str) -> dict[str, Any]:
        response = self.client.get(path)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def add_nodes(self, count: int, *, kubelet_version: str = "v1.37.2") -> list[str]:
        """kwok nodes of this test's group (32 cpu, 256Gi each), once kwok has made them Ready."""
        names = [f"{self.group}-n{len(self.nodes) + i}" for i in range(count)]
        for name in names:
            node = fake_node(name, labels={GROUP_LABEL: self.group})
            node["status"]["nodeInfo"] = {"kubeletVersion": kubelet_version}
            create_node(self.client, node)
            self.nodes.append(name)
        for name in names:
            poll(lambda name=name: is_ready(self.get(f"/api/v1/nodes/{name}")), what=f"node {name} Ready")
        return names

    def namespace_ready(self) -> None:
        self.post(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}},
        )
        wait_for_service_account(self.client, namespace=self.namespace)

    def pods(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get(f"/api/v1/namespaces/{self.namespace}/pods")["items"]
        return items

    def pod_spec(self, **extra: Any) -> dict[str, Any]:
        return {
            "nodeSelector": {GROUP_LABEL: self.group},
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": "busybox"}],
            **extra,
        }

    def deployment(self, name: str, *, replicas: int) -> None:
        """``replicas`` pods of app ``name``, at most one per node (a required anti-affinity)."""
        labels = {"app": name}
        anti_affinity = {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": labels}, "topologyKey": "kubernetes.io/hostname"}
                ]
            }
        }
        self.post(
            f"/apis/apps/v1/namespaces/{self.namespace}/deployments",
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": self.pod_spec(affinity=anti_affinity),
                    },
                },
            },
        )

    def budget(self, app: str, *, min_available: int) -> None:
        self.post(
            f"/apis/policy/v1/namespaces/{self.namespace}/poddisruptionbudgets",
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": app},
                "spec": {"minAvailable": min_available, "selector": {"matchLabels": {"app": app}}},
            },
        )

    def budget_allows(self, app: str) -> int:
        path = f"/apis/policy/v1/namespaces/{self.namespace}/poddisruptionbudgets/{app}"
        return int(self.get(path).get("status", {}).get("disruptionsAllowed", 0))

    def daemonset(self, name: str) -> None:
        labels = {"app": name}
        self.post(
            f"/apis/apps/v1/namespaces/{self.namespace}/daemonsets",
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": name},
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": self.pod_spec()},
                },
            },
        )

    def ready_pods(self, app: str) -> dict[str, str]:
        """Pod name → node, of app's Ready pods."""
        return {
            p["metadata"]["name"]: p["spec"].get("nodeName", "")
            for p in self.pods()
            if p["metadata"].get("labels", {}).get("app") == app and is_ready(p)
        }

    def wait_ready(self, app: str, count: int) -> dict[str, str]:
        def ready() -> dict[str, str] | None:
            pods = self.ready_pods(app)
            return pods if len(pods) == count else None

        found: dict[str, str] = poll(ready, what=f"{count} Ready pods of {app}")
        return found


@pytest.fixture
def arrange(real_cluster: RealCluster) -> Iterator[Arrangement]:
    arrangement = Arrangement(real_cluster)
    arrangement.namespace_ready()
    yield arrangement
    arrangement.close()


class ReadyPodsLow:
    """The fewest Ready pods of one app there ever were while it watched (a watch: no change is missed).
    Each watch request ends on the server after a second, so that ``stop()`` never waits on a read."""

    def __init__(self, arrangement: Arrangement, app: str, cluster: RealCluster) -> None:
        self._base = f"/api/v1/namespaces/{arrangement.namespace}/pods?labelSelector=app%3D{app}"
        listed = arrangement.get(self._base)
        self.pods = {p["metadata"]["name"]: p for p in listed["items"]}
        self.lowest = self._count()
        self._version = str(listed["metadata"]["resourceVersion"])
        self._client = admin_client(cluster.control_plane)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._watch, name="ready-pods-watch", daemon=True)
        self._thread.start()

    def _count(self) -> int:
        return sum(1 for pod in self.pods.values() if is_ready(pod))

    def _watch(self) -> None:
        try:
            while not self._stop.is_set():
                path = f"{self._base}&watch=1&timeoutSeconds=1&resourceVersion={self._version}"
                with self._client.stream("GET", path) as response:
                    assert response.status_code == 200, response.read()
                    for line in response.iter_lines():
                        event = json.loads(line)
                        assert event["type"] != "ERROR", event
                        pod = event["object"]
                        with self._lock:
                            self._version = pod["metadata"]["resourceVersion"]
                            if event["type"] == "DELETED":
                                self.pods.pop(pod["metadata"]["name"], None)
                            else:
                                self.pods[pod["metadata"]["name"]] = pod
                            self.lowest = min(self.lowest, self._count())
        except BaseException as exc:  # the test sees it in stop()
            self.error = exc

    def settle(self, predicate: Callable[[dict[str, dict[str, Any]]], bool], *, what: str) -> None:
        """Until the watch itself has seen ``predicate`` hold (so it is not behind the test's reads)."""

        def seen() -> bool:
            with self._lock:
                return predicate(dict(self.pods))

        poll(seen, what=f"the watch to see {what}")

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=10)
        self._client.close()
        assert not self._thread.is_alive()
        assert self.error is None, repr(self.error)
        return self.lowest


async def in_thread(scenario: Callable[[], None]) -> None:
    """Run a test's synchronous body off the loop that serves the tunnel and the agent."""
    await asyncio.to_thread(scenario)
