"""``kaas token --cluster ID``: the ExecCredential kubectl reads from the exec plugin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kaas_cli.config import CliConfig
from kaas_cli.main import app


def test_kaas_token_prints_an_exec_credential_with_the_cli_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cli.yaml"
    CliConfig(url="https://kaas.example.com", token="kaas_secret").save(path)
    monkeypatch.setenv("KAAS_CLI_CONFIG", str(path))
    result = CliRunner().invoke(app, ["token", "--cluster", "c-1"])
    assert result.exit_code == 0, result.output
    credential = json.loads(result.stdout)
    assert credential == {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": "kaas_secret"},
    }


def test_kaas_token_without_a_login_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAAS_CLI_CONFIG", str(tmp_path / "missing.yaml"))
    result = CliRunner().invoke(app, ["token", "--cluster", "c-1"])
    assert result.exit_code == 1
