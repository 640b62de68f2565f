"""What the deploy/ tests share: where the repository's deploy/ folder and the tools are."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "production")
BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"
IN_CI = os.environ.get("KAAS_REQUIRE_SERVICES") == "1"


def overlay_dir(name: str) -> Path:
    return DEPLOY / "kustomize" / "overlays" / name


def kustomize(path: Path) -> str:
    """``kubectl kustomize`` of a folder: the rendered YAML."""
    result = subprocess.run([str(KUBECTL), "kustomize", str(path)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def require_tool(path: Path, what: str) -> Path:
    """The tool at ``path``; a missing one fails in CI (scripts/test.sh installs it) and skips elsewhere."""
    if path.is_file():
        return path
    message = f"{what} is not installed at {path} (scripts/test.sh installs it)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)
