"""Issue 12's "done when", on ``kaas up`` with the real Kubernetes programs: a cluster of 3 control planes and
3 workers running a Deployment with a PodDisruptionBudget upgrades from the older built minor to the newer
one through ``kaas cluster upgrade --wait``; every node is at the new version afterwards (``kubectl get
nodes`` through kaas), a probe of the control-plane endpoint through kaas during the upgrade sees no failed
request, and the Deployment never had fewer available replicas than the PDB's ``minAvailable``."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.conftest import KaasUp, running_kaas_up
from tests.e2e.day2 import FAULT, admin_compute, create_cluster, kubectl
from tests.kube_targets import NEWEST, OLDEST, REAL, missing_programs

pytestmark = pytest.mark.e2e  # the "processes" group: one kaas up at a time, never beside a chaos run

WEB_WITH_PDB = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: registry.k8s.io/pause:3.10}]
      tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web, namespace: default}
spec:
  minAvailable: 2
  selector: {matchLabels: {app: web}}
"""


@dataclass
class Probe:
    """GETs of the cluster's endpoint through kaas, and the Deployment's available replicas, until stopped."""

    client: httpx.Client
    base: str
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    min_available: int | None = None
    availability_reads: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                version = self.client.get(f"{self.base}/version")
                deployment = self.client.get(f"{self.base}/apis/apps/v1/namespaces/default/deployments/web")
            except httpx.HTTPError as exc:
                self.failed.append(f"{type(exc).__name__}: {exc}")
                continue
            for response in (version, deployment):
                if response.status_code == 200:
                    self.ok += 1
                else:
                    self.failed.append(f"{response.status_code}: {response.text[:200]}")
            if deployment.status_code == 200:
                available = int(deployment.json().get("status", {}).get("availableReplicas") or 0)
                self.availability_reads += 1
                self.min_available = (
                    available if self.min_available is None else min(self.min_available, available)
                )
            time.sleep(0.1)


@pytest.fixture
def kaas_up(tmp_path: Path) -> Iterator[KaasUp]:
    # one cluster: one slot (its 3 or 4 apiservers share one etcd, controller manager and scheduler)
    with running_kaas_up(tmp_path, "--boot-delay", "0.5", "--sweep-interval", "5", control_planes=1) as up:
        yield up


def test_a_three_control_plane_cluster_upgrades_a_minor_with_no_failed_request_and_the_pdb_kept(
    kaas_up: KaasUp,
) -> None:
    if kaas_up.kubernetes != REAL:
        missing_programs("an upgrade between real releases needs the real programs")
    kubeconfig = create_cluster(kaas_up, control_planes=3, workers=3, version=OLDEST, manifest=WEB_WITH_PDB)
    pods_before = set(
        kubectl(kaas_up, kubeconfig, "get", "pods", "-l", "app=web", "-o", "name").stdout.split()
    )
    assert len(pods_before) == 3

    config = yaml.safe_load(kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    token = config["users"][0]["user"].get("token")
    assert token, "the kubeconfig carries a kaas token"
    verify = ssl.create_default_context(cafile=str(kaas_up.ca_file))
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, verify=verify, timeout=30) as client:
        probe = Probe(client, server)
        thread = threading.Thread(target=probe.run, daemon=True)
        thread.start()
        started = time.monotonic()
        try:
            upgraded = kaas_up.cli(
                "cluster",
                "upgrade",
                "demo",
                NEWEST.removeprefix("v"),
                "--wait",
                "--timeout",
                "1200",
                timeout=1300,
            )
        finally:
            probe.stop.set()
            thread.join(timeout=60)
        took = time.monotonic() - started
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr

    nodes = json.loads(kubectl(kaas_up, kubeconfig, "get", "nodes", "-o", "json").stdout)["items"]
    versions = sorted(n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes)
    assert versions == [NEWEST] * 6, versions
    server_version = json.loads(kubectl(kaas_up, kubeconfig, "version", "-o", "json").stdout)["serverVersion"]
    assert server_version["gitVersion"] == NEWEST
    print(
        f"probe: {probe.ok} requests answered, {len(probe.failed)} failed;"
        f" min available {probe.min_available}"
    )
    pods_after = set(
        kubectl(kaas_up, kubeconfig, "get", "pods", "-l", "app=web", "-o", "name").stdout.split()
    )
    print(
        f"upgrade of 3+3 nodes: {took:.0f} s; pods before {sorted(pods_before)}, after {sorted(pods_after)}"
    )
    assert len(pods_after) == 3
    assert not pods_before & pods_after  # every node was drained: each pod was evicted and replaced
    assert probe.failed == []
    assert probe.ok > 100
    assert probe.availability_reads > 50
    assert probe.min_available is not None
    assert probe.min_available >= 2


def hold_the_first_new_server(up: KaasUp, version: str, *, timeout: float = 120) -> str:
    """Catch the upgrade's first server of ``version`` as Nova creates it and mark it so that its node never
    becomes Ready (a build whose kubelet cannot start); returns its name."""
    compute = admin_compute(up)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for server in compute.servers(all_projects=True):
            if (server.metadata or {}).get("kaas-version") == version:
                compute.set_server_metadata(server, **FAULT)
                return str(server.name)
        time.sleep(0.05)
    raise AssertionError(f"no server of {version} within {timeout} s")


def operation_json(up: KaasUp, *args: str) -> dict[str, Any]:
    shown = up.cli("operation", *args, "-o", "json")
    assert shown.returncode in (0, 1), shown.stderr
    found: dict[str, Any] = json.loads(shown.stdout)
    return found


def wait_for_state(up: KaasUp, operation_id: str, states: set[str], *, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        operation = operation_json(up, "get", operation_id)
        if operation["state"] in states:
            return operation
        assert time.monotonic() < deadline, f"operation still {operation['state']}: {operation}"
        time.sleep(1)


def kubelet_versions(up: KaasUp, kubeconfig: Path) -> list[str]:
    nodes = json.loads(kubectl(up, kubeconfig, "get", "nodes", "-o", "json").stdout)["items"]
    return sorted(n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes)


def upgrade_that_pauses(up: KaasUp) -> tuple[str, str, Path]:
    """A 3+1 cluster at the older release whose upgrade's first new node never becomes Ready: the upgrade
    pauses with that node in its reason. Returns the operation's id, the held server and a kubeconfig."""
    if up.kubernetes != REAL:
        missing_programs("an upgrade between real releases needs the real programs")
    kubeconfig = create_cluster(up, control_planes=3, workers=1, version=OLDEST)
    started = up.cli(
        "cluster", "upgrade", "demo", NEWEST.removeprefix("v"), "--node-ready-timeout", "120", "-o", "json"
    )
    assert started.returncode == 0, started.stderr
    operation_id = json.loads(started.stdout)["operation"]["id"]
    held = hold_the_first_new_server(up, NEWEST.removeprefix("v"))
    paused = wait_for_state(up, operation_id, {"paused", "failed", "succeeded"}, timeout=300)
    assert paused["state"] == "paused", paused
    assert held in paused["paused_reason"]
    assert "Ready" in paused["paused_reason"]
    waited = up.cli("operation", "watch", operation_id, timeout=60)
    assert waited.returncode == 1  # --wait and watch stop at a pause, exit 1 with the reason
    assert held in waited.stdout + waited.stderr
    return operation_id, held, kubeconfig


def test_a_node_that_never_becomes_ready_pauses_the_upgrade_and_resume_after_the_fix_continues(
    kaas_up: KaasUp,
) -> None:
    operation_id, held, kubeconfig = upgrade_that_pauses(kaas_up)
    before = kubelet_versions(kaas_up, kubeconfig)
    assert before.count(OLDEST) == 4  # nothing was replaced while the new node was not Ready

    compute = admin_compute(kaas_up)  # the fix: the node's kubelet starts
    server = next(s for s in compute.servers(all_projects=True) if s.name == held)
    compute.delete_server_metadata(server, list(FAULT))
    resumed = kaas_up.cli("operation", "resume", operation_id)
    assert resumed.returncode == 0, resumed.stderr
    done = wait_for_state(kaas_up, operation_id, {"succeeded", "failed", "paused"}, timeout=900)

    assert done["state"] == "succeeded", done
    assert kubelet_versions(kaas_up, kubeconfig) == [NEWEST] * 4


def test_rollback_of_a_paused_upgrade_returns_every_node_to_the_old_version(kaas_up: KaasUp) -> None:
    operation_id, _held, kubeconfig = upgrade_that_pauses(kaas_up)

    rolled = kaas_up.cli("operation", "rollback", operation_id)
    assert rolled.returncode == 0, rolled.stderr
    done = wait_for_state(kaas_up, operation_id, {"succeeded", "failed", "paused"}, timeout=600)

    assert done["state"] == "succeeded", done
    assert done["rolling_back"] is True
    assert kubelet_versions(kaas_up, kubeconfig) == [OLDEST] * 4
    servers = [
        s for s in admin_compute(kaas_up).servers(all_projects=True) if "kaas-version" in (s.metadata or {})
    ]
    assert sorted(s.metadata["kaas-version"] for s in servers) == [OLDEST.removeprefix("v")] * 4
