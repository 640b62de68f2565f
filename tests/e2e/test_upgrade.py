"""Issue 12's "done when", on ``kaas up`` with the real Kubernetes programs: a cluster of 3 control planes and
3 workers running a Deployment with a PodDisruptionBudget upgrades from the older built minor to the newer
one through ``kaas cluster upgrade --wait``; every node is at the new version afterwards (``kubectl get
nodes`` through kaas), a probe of the control-plane endpoint through kaas during the upgrade sees no failed
request, and the Deployment never had fewer available replicas than the PDB's ``minAvailable``."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.conftest import KaasUp, running_kaas_up
from tests.kube_targets import NEWEST, OLDEST, REAL, missing_programs

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("kube_real")]

KUBECTL = Path(sys.executable).parent / "kubectl"
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
    # a 3+3 cluster runs an apiserver per control-plane server (4 during a replacement): two slots' worth
    with running_kaas_up(tmp_path, "--boot-delay", "0.5", "--sweep-interval", "5", control_planes=2) as up:
        yield up


def kubectl(
    up: KaasUp, config: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(config), "--request-timeout", "30s", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=up.env,
    )


def test_a_three_control_plane_cluster_upgrades_a_minor_with_no_failed_request_and_the_pdb_kept(
    kaas_up: KaasUp,
) -> None:
    if kaas_up.kubernetes != REAL:
        missing_programs("an upgrade between real releases needs the real programs")
    created = kaas_up.cli(
        "cluster",
        "create",
        "demo",
        "--version",
        OLDEST.removeprefix("v"),
        "--control-plane",
        "3",
        "--pool",
        "workers:m1.small:3",
        "--wait",
        timeout=600,
    )
    assert created.returncode == 0, created.stderr
    kubeconfig = kaas_up.home / "kc"
    assert kaas_up.cli("cluster", "kubeconfig", "demo", "--output-file", str(kubeconfig)).returncode == 0
    applied = kubectl(kaas_up, kubeconfig, "apply", "-f", "-", stdin=WEB_WITH_PDB)
    assert applied.returncode == 0, applied.stderr
    rolled = kubectl(kaas_up, kubeconfig, "rollout", "status", "deployment/web", "--timeout=180s")
    assert rolled.returncode == 0, rolled.stderr
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
