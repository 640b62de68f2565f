"""Issue 12's node rules on ``kaas up`` with the real Kubernetes programs: a scale-down drains its node first
(a PodDisruptionBudget that allows no eviction keeps the server alive; once it allows, the pods move and only
then the server goes), a worker NotReady too long is replaced as an audited repair, and when three of three
workers are NotReady nothing is replaced and NodesHealthy says why.

A node is made NotReady through the cloud, as a kubelet that stops posting its status: nodesim holds a
server's Node NotReady while its Nova metadata says ``kaas-sim-fault: not-ready`` (``nodesim.faults``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import KaasUp, running_kaas_up
from tests.e2e.day2 import FAULT, admin_compute, create_cluster, kubectl
from tests.kube_targets import REAL, missing_programs

pytestmark = pytest.mark.e2e  # the "processes" group: one kaas up at a time, never beside a chaos run

WEB = """
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
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web, namespace: default}
spec:
  minAvailable: 3
  selector: {matchLabels: {app: web}}
"""


def workers(up: KaasUp) -> dict[str, Any]:
    return {
        s.name: s for s in admin_compute(up).servers(all_projects=True) if (s.metadata or {}).get("kaas-pool")
    }


def eventually(check: Callable[[], Any], *, what: str, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def cluster(up: KaasUp) -> dict[str, Any]:
    shown = up.cli("cluster", "get", "demo", "-o", "json")
    assert shown.returncode == 0, shown.stderr
    found: dict[str, Any] = json.loads(shown.stdout)
    return found


def operations(up: KaasUp) -> list[dict[str, Any]]:
    listed = up.cli("operation", "list", "demo", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    found: list[dict[str, Any]] = json.loads(listed.stdout)
    return found


def web_pods(up: KaasUp, kubeconfig: Path) -> dict[str, str]:
    """Running pods of web → their node."""
    listed = json.loads(kubectl(up, kubeconfig, "get", "pods", "-l", "app=web", "-o", "json").stdout)["items"]
    return {
        p["metadata"]["name"]: p["spec"].get("nodeName", "")
        for p in listed
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    }


def test_scale_down_drains_first_a_not_ready_worker_is_replaced_and_three_of_three_short_circuit(
    tmp_path: Path,
) -> None:
    with running_kaas_up(
        tmp_path,
        "--boot-delay",
        "0.5",
        "--sweep-interval",
        "5",
        control_planes=1,
        env={"KAAS_NODE_UNHEALTHY_SECONDS": "30"},
    ) as up:
        if up.kubernetes != REAL:
            missing_programs("drains through the Eviction API need the real programs")
        kubeconfig = create_cluster(up, control_planes=1, workers=3, manifest=WEB)
        before = set(workers(up))
        assert len(before) == 3

        # scale-down: the PDB allows no eviction, so the chosen node drains and its server stays
        scaled = up.cli("cluster", "node-pool", "set", "demo", "workers", "--count", "2")
        assert scaled.returncode == 0, scaled.stderr

        def draining() -> str | None:
            nodes = operations(up)[0].get("nodes") or []
            return next((n["name"] for n in nodes if n["state"] == "draining"), None)

        victim = eventually(draining, what="a node to start draining")
        time.sleep(15)  # what must NOT happen meanwhile: the server of a node still holding pods goes
        assert victim in workers(up)
        assert victim in web_pods(up, kubeconfig).values()
        assert kubectl(up, kubeconfig, "delete", "pdb", "web").returncode == 0
        eventually(lambda: victim not in workers(up), what=f"{victim}'s server to go after its drain")
        pods = eventually(lambda: (p := web_pods(up, kubeconfig)) and len(p) == 3 and p, what="3 web pods")
        assert victim not in pods.values()  # evicted and rescheduled on the nodes that stay
        assert eventually(lambda: cluster(up)["phase"] == "running", what="the cluster running again")

        # a worker NotReady longer than KAAS_NODE_UNHEALTHY_SECONDS is replaced
        sick_name, sick = sorted(workers(up).items())[0]
        admin_compute(up).set_server_metadata(sick, **FAULT)
        eventually(lambda: sick_name not in workers(up), what="the NotReady worker's server to be replaced")
        eventually(
            lambda: len(workers(up)) == 2 and cluster(up)["phase"] == "running", what="2 workers again"
        )
        repairs = [o for o in operations(up) if o["kind"] == "repair"]
        assert repairs, operations(up)
        assert repairs[0]["params"]["replaced"] == [sick_name]

        # three of three NotReady: the cause is probably not the nodes, nothing is replaced
        regrown = up.cli(
            "cluster", "node-pool", "set", "demo", "workers", "--count", "3", "--wait", timeout=600
        )
        assert regrown.returncode == 0, regrown.stderr
        three = workers(up)
        assert len(three) == 3
        for server in three.values():
            admin_compute(up).set_server_metadata(server, **FAULT)

        def short_circuited() -> dict[str, Any] | None:
            conditions = {c["type"]: c for c in cluster(up).get("conditions") or []}
            healthy = conditions.get("NodesHealthy")
            return healthy if healthy and healthy.get("reason") == "ShortCircuited" else None

        healthy = eventually(short_circuited, what="NodesHealthy to short-circuit")
        assert "3 of 3" in healthy["message"]
        time.sleep(10)  # a further pass or two: still nothing replaced
        assert set(workers(up)) == set(three)
