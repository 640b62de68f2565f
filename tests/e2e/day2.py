"""What the day-2 end-to-end tests share: kubectl through kaas, the simulated cloud as its admin, the fault
nodesim reads from a server's metadata, and a cluster made and reached through the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import openstack
from openstack.config import loader

from tests.e2e.conftest import KaasUp

KUBECTL = Path(sys.executable).parent / "kubectl"
FAULT = {"kaas-sim-fault": "not-ready"}  # nodesim holds such a server's Node NotReady (nodesim.faults)


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


def admin_compute(up: KaasUp) -> Any:
    """Nova of ``kaas up``'s simulated cloud, as its admin (every project's servers, their metadata)."""
    config = loader.OpenStackConfig(
        config_files=[str(up.state_dir / "simcloud" / "clouds.yaml")], load_envvars=False
    )
    return openstack.connection.Connection(config=config.get_one(cloud="sim-admin")).compute


def create_cluster(
    up: KaasUp, *, control_planes: int, workers: int, version: str | None = None, manifest: str | None = None
) -> Path:
    """``demo`` created with ``--wait``, its kubeconfig downloaded, ``manifest`` applied and rolled out."""
    args = ["cluster", "create", "demo", "--control-plane", str(control_planes)]
    args += ["--pool", f"workers:m1.small:{workers}"]
    if version is not None:
        args += ["--version", version.removeprefix("v")]
    created = up.cli(*args, "--wait", timeout=600)
    assert created.returncode == 0, created.stderr
    kubeconfig = up.home / "kc"
    assert up.cli("cluster", "kubeconfig", "demo", "--output-file", str(kubeconfig)).returncode == 0
    if manifest is not None:
        applied = kubectl(up, kubeconfig, "apply", "-f", "-", stdin=manifest)
        assert applied.returncode == 0, applied.stderr
        rolled = kubectl(up, kubeconfig, "rollout", "status", "deployment/web", "--timeout=180s")
        assert rolled.returncode == 0, rolled.stderr
    return kubeconfig
