"""Every overlay renders, a real kube-apiserver accepts every rendered object by server-side apply, and
every Deployment's pods run (on kwok nodes: the images need not exist).

One control plane of the module's own (the overlays make a namespace and cluster-wide CRDs), with three
kwok nodes (the production overlay spreads replicas over nodes). The dev overlay is applied first, then
production over it, as an install grows: production's objects and replicas are what is checked last.
The Prometheus operator's CRDs are not there, so minimal ones (prometheus-operator-crds.yaml) are added
first for the production overlay's ServiceMonitor component.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nodesim.kube_admin import admin_client, create_node
from nodesim.kube_real import fake_node
from tests.deploy.conftest import KUBECTL, OVERLAYS, kustomize, overlay_dir
from tests.kube_targets import KubeTarget, dedicated_real_target

pytestmark = pytest.mark.kube_real

NAMESPACE = "kaas"
NODES = ("kwok-a", "kwok-b", "kwok-c")
CRDS = Path(__file__).with_name("prometheus-operator-crds.yaml")
RUNNING_WITHIN_SECONDS = 180
EXPECTED_REPLICAS = {
    "dev": {"api": 1, "tunnel": 1, "worker": 1, "beat": 1},
    "production": {"api": 3, "tunnel": 3, "worker": 3, "beat": 2},  # one beat leads (provider.beat_leader)
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeTarget, Path]]:
    tmp = tmp_path_factory.mktemp("deploy-kube")
    with dedicated_real_target(tmp) as target:
        assert target.control_plane is not None
        with admin_client(target.control_plane) as client:
            for name in NODES:
                create_node(client, fake_node(name))
        yield target, target.write_admin_kubeconfig(tmp / "kubeconfig")


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
    result = subprocess.run([str(KUBECTL), "--kubeconfig", str(kubeconfig), *args], input=stdin,
                            capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"kubectl {' '.join(args[:3])}: {result.stderr[-3000:]}"
    return result.stdout


def documents(rendered: str) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(rendered) if document]


def create_secrets(kubeconfig: Path) -> None:
    """The Secrets the manifests name and nobody commits, as an operator creates them (deploy/README.md)."""
    keys = ("secret-key", "tunnel-internal-secret", "metrics-token")
    values = {key: secrets.token_urlsafe(32) for key in keys}
    literals = [f"--from-literal={key}={value}" for key, value in {
        "database-url": "postgresql+psycopg://kaas:x@postgres.example:5432/kaas",
        "broker-url": "redis://redis.example:6379/0",
        "redis-url": "redis://redis.example:6379/1",
        **values,
    }.items()]
    clouds = ["--from-literal=clouds.yaml=clouds: {}"]
    for name, extra in (("kaas-secrets", literals), ("kaas-clouds", clouds)):
        manifest = kubectl(kubeconfig, "-n", NAMESPACE, "create", "secret", "generic", name, *extra,
                           "--dry-run=client", "-o", "yaml")
        kubectl(kubeconfig, "apply", "--server-side", "-f", "-", stdin=manifest)


def wait_for_running_pods(kubeconfig: Path, deployments: list[dict[str, Any]]) -> dict[str, int]:
    """Until each Deployment has as many Running, Ready pods of its current template as it wants."""
    wanted = {d["metadata"]["name"]: int(d["spec"]["replicas"]) for d in deployments}
    deadline = time.monotonic() + RUNNING_WITHIN_SECONDS
    while True:
        state = json.loads(kubectl(kubeconfig, "-n", NAMESPACE, "get", "deployments", "-o", "json"))
        ready = {
            item["metadata"]["name"]: int(item.get("status", {}).get("readyReplicas", 0))
            for item in state["items"]
            if item.get("status", {}).get("updatedReplicas", 0) == item["spec"]["replicas"]
            and item.get("status", {}).get("replicas", 0) == item["spec"]["replicas"]
        }
        if all(ready.get(name) == count for name, count in wanted.items()):
            return ready
        if time.monotonic() > deadline:
            pytest.fail(f"not Running within {RUNNING_WITHIN_SECONDS} s: want {wanted}, ready {ready}")
        time.sleep(1)


def running_pods(kubeconfig: Path) -> dict[str, int]:
    """Running pods by component label."""
    pods = json.loads(kubectl(kubeconfig, "-n", NAMESPACE, "get", "pods", "-o", "json"))["items"]
    counts: dict[str, int] = {}
    for pod in pods:
        if pod["status"].get("phase") == "Running" and pod["metadata"].get("deletionTimestamp") is None:
            component = pod["metadata"]["labels"]["app.kubernetes.io/component"]
            counts[component] = counts.get(component, 0) + 1
    return counts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlay_is_accepted_whole_by_server_side_apply_and_its_pods_run(
    cluster: tuple[KubeTarget, Path], overlay: str
) -> None:
    _, kubeconfig = cluster
    if overlay == "production":
        kubectl(kubeconfig, "apply", "--server-side", "-f", str(CRDS))
        kubectl(kubeconfig, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    rendered = kustomize(overlay_dir(overlay))
    objects = documents(rendered)
    output = kubectl(kubeconfig, "apply", "--server-side", "-f", "-", stdin=rendered)
    applied = [line for line in output.splitlines() if line.endswith("serverside-applied")]
    assert len(applied) == len(objects), output
    if overlay == OVERLAYS[0]:
        create_secrets(kubeconfig)

    # every object is there as rendered, none dropped on the way
    stored = kubectl(kubeconfig, "get", "-f", "-", "-o", "name", stdin=rendered).split()
    assert len(stored) == len(objects)

    deployments = [document for document in objects if document["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {
        "kaas-api", "kaas-tunnel", "kaas-worker-region-one", "kaas-beat"
    }
    wait_for_running_pods(kubeconfig, deployments)
    replicas = {
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: d["spec"]["replicas"]
        for d in deployments
    }
    expected = EXPECTED_REPLICAS[overlay]
    assert replicas == expected
    counts = running_pods(kubeconfig)
    for component, count in expected.items():
        assert counts.get(component, 0) >= count, counts
