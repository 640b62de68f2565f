"""The images' install step works: ``deploy/images/install.sh``, the one step both Dockerfiles run, builds
the wheels and installs them into a fresh venv, and every entry point the manifests use starts from it.

This stands in for building the images, which CI does not do (deploy/README.md says why). It runs the
script exactly as the Dockerfiles do (``install.sh VENV SOURCE``), outside the checkout's venv, and calls
the programs by the paths the images' ENTRYPOINTs name.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, ROOT

pytestmark = pytest.mark.e2e

INSTALL = DEPLOY / "images" / "install.sh"
INSTALL_TIMEOUT_SECONDS = 900
# what the manifests run: deploy/kustomize/base's args, and the Job's
SERVER_ENTRY_POINTS = (("api",), ("worker",), ("beat",), ("tunnel",), ("db", "upgrade"))


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("KAAS_", "PYTHON", "VIRTUAL_ENV"))}
    return {**env, "HOME": str(tmp_path)}


def install(venv: Path, source: Path, *, tmp_path: Path) -> None:
    result = subprocess.run(["sh", str(INSTALL), str(venv), str(source)], capture_output=True, text=True,
                            timeout=INSTALL_TIMEOUT_SECONDS, check=False, cwd=tmp_path,
                            env=clean_env(tmp_path))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


def test_the_agent_installs_alone_and_its_entry_point_runs(tmp_path: Path) -> None:
    venv = tmp_path / "kaas-agent"
    install(venv, ROOT / "agents", tmp_path=tmp_path)
    agent = venv / "bin" / "kaas-agent"
    version = subprocess.run([str(agent), "--version"], capture_output=True, text=True, timeout=60,
                             check=False, cwd=tmp_path, env=clean_env(tmp_path))
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("kaas-agent ")
    # a run with no config file: the whole program loads, then refuses with its config error (exit 2)
    run = subprocess.run([str(agent), "--config", str(tmp_path / "missing.yaml")], capture_output=True,
                         text=True, timeout=60, check=False, cwd=tmp_path, env=clean_env(tmp_path))
    assert run.returncode == 2, run.stderr
    assert "missing.yaml does not exist" in run.stderr
    # the agent's image has the agent alone: nothing of the server side
    site = next((venv / "lib").glob("python*/site-packages"))
    assert (site / "agents").is_dir()
    server_side = ("kaas_core", "kaas_api", "provider", "fastapi", "celery")
    assert not [name for name in server_side if (site / name).exists()]


def test_the_server_installs_and_every_entry_point_the_manifests_run_starts(tmp_path: Path) -> None:
    venv = tmp_path / "kaas"
    install(venv, ROOT, tmp_path=tmp_path)
    for command in SERVER_ENTRY_POINTS:
        result = subprocess.run([str(venv / "bin" / "kaas"), *command, "--help"], capture_output=True,
                                text=True, timeout=120, check=False, cwd=tmp_path, env=clean_env(tmp_path))
        assert result.returncode == 0, f"kaas {' '.join(command)}: {result.stderr[-2000:]}"
        assert "Usage" in result.stdout
    # the migration Job's command migrates (SQLite here; PostgreSQL in the cluster)
    database = tmp_path / "upgrade.db"
    upgrade = subprocess.run([str(venv / "bin" / "kaas"), "db", "upgrade"], capture_output=True, text=True,
                             timeout=120, check=False, cwd=tmp_path,
                             env={**clean_env(tmp_path), "KAAS_DATABASE_URL": f"sqlite:///{database}"})
    assert upgrade.returncode == 0, upgrade.stderr[-2000:]
    assert database.stat().st_size > 0
