"""``kaas cluster kubeconfig`` (formats, a private file, the exec plugin's absolute path) and
``kaas cluster kubeconfig-token list|revoke``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kaas_cli.commands.kubeconfig import kaas_executable, with_exec_command
from tests.kaas_cli.commands.conftest import RFC3339_SECONDS, Cli, column, rows


def test_the_kubeconfig_is_yaml_by_default_and_carries_a_new_token(cli: Cli) -> None:
    document = yaml.safe_load(cli.ok("cluster", "kubeconfig", "c1").stdout)
    assert document["current-context"] == "kaas-alpha-c1"
    assert document["users"][0]["user"]["token"].startswith("kaaskc_")
    as_yaml = yaml.safe_load(cli.ok("cluster", "kubeconfig", "c1", "-o", "yaml").stdout)
    assert as_yaml["clusters"] == document["clusters"]


def test_json_is_the_same_kubeconfig(cli: Cli) -> None:
    document = json.loads(cli.ok("cluster", "kubeconfig", "c1", "--output", "json").stdout)
    assert document["kind"] == "Config"
    assert document["clusters"][0]["cluster"]["server"].endswith(f"/k8s/clusters/{cli.world.cluster_id}")
    assert document["users"][0]["user"]["token"].startswith("kaaskc_")


def test_output_file_writes_an_owner_only_file(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "kc"
    target.write_text("an older kubeconfig")
    target.chmod(0o644)
    result = cli.ok("cluster", "kubeconfig", "c1", "--output-file", str(target))
    assert result.stdout == ""
    assert f"kubeconfig written to {target}" in result.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert yaml.safe_load(target.read_text())["users"][0]["user"]["token"].startswith("kaaskc_")


@pytest.mark.parametrize("value", ["kc", "/tmp/kubeconfig", "table"])
def test_output_is_a_format_and_a_file_name_there_says_to_use_output_file(cli: Cli, value: str) -> None:
    result = cli.run("cluster", "kubeconfig", "c1", "-o", value)
    assert result.exit_code == 2
    assert ("--output-file" in result.stderr) is (value != "table")
    assert result.stdout == ""
    assert cli.data("cluster", "kubeconfig-token", "list") == []  # refused before anything was downloaded


def test_the_exec_kubeconfig_runs_this_kaas_by_its_absolute_path(cli: Cli, tmp_path: Path) -> None:
    """kubectl runs the exec command with its own PATH: no activated virtualenv, so ``kaas`` alone would
    not be found. The command written is this kaas's absolute path, and it runs with PATH empty."""
    document = yaml.safe_load(cli.ok("cluster", "kubeconfig", "c1", "--exec").stdout)
    plugin = document["users"][0]["user"]["exec"]
    assert Path(plugin["command"]).is_absolute()
    assert plugin["command"] == str(Path(sys.executable).absolute().parent / "kaas")
    assert plugin["args"] == ["token", "--cluster", cli.world.cluster_id]
    ran = subprocess.run(
        [plugin["command"], *plugin["args"]],
        env={"PATH": "", "KAAS_CLI_CONFIG": str(cli.config_path), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["status"]["token"] == cli.world.tokens["owner"]


def test_the_running_kaas_is_found_as_started_then_beside_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    script = bin_dir / "kaas"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    link = tmp_path / "kaas"
    link.symlink_to(script)
    assert kaas_executable(argv0=str(link), python="/nowhere/python") == str(script)
    assert kaas_executable(argv0="/usr/lib/python3/pytest", python=str(bin_dir / "python")) == str(script)
    monkeypatch.setenv("PATH", "")
    os.chmod(script, 0o644)  # not executable: not a kaas to run
    assert kaas_executable(argv0=str(script), python=str(bin_dir / "python")) is None


def test_the_exec_command_is_replaced_and_the_header_kept() -> None:
    document = "# kaas cluster c1\n# WARNING: plain HTTP\n" + yaml.safe_dump(
        {"users": [{"name": "u", "user": {"exec": {"command": "kaas", "args": ["token"]}}}]}
    )
    rewritten = with_exec_command(document, "/opt/kaas/bin/kaas")
    assert rewritten.startswith("# kaas cluster c1\n# WARNING: plain HTTP\n")
    assert yaml.safe_load(rewritten)["users"][0]["user"]["exec"] == {
        "command": "/opt/kaas/bin/kaas",
        "args": ["token"],
    }


def test_kubeconfig_token_list_shows_each_download(cli: Cli) -> None:
    cli.ok("cluster", "kubeconfig", "c1")
    cli.ok("cluster", "kubeconfig", "c1", "--ttl-days", "3")
    tokens = cli.data("cluster", "kubeconfig-token", "list")
    assert [(t["user"], t["project"], t["cluster"], t["revoked_at"]) for t in tokens] == [
        ("owner", "alpha", "c1", None)
    ] * 2
    assert all(t["prefix"].startswith("kaaskc_") for t in tokens)
    assert cli.data("cluster", "kubeconfig-token", "list", "c1") == tokens
    assert cli.data("cluster", "kubeconfig-token", "list", "other") == []
    table = cli.shown("table", "cluster", "kubeconfig-token", "list")
    assert rows(table)[0][:5] == ["ID", "PREFIX", "USER", "PROJECT", "CLUSTER"]
    assert column(table, "ID") == [t["id"] for t in tokens]
    assert column(table, "REVOKED") == ["-", "-"]
    assert all(RFC3339_SECONDS.match(at) for at in column(table, "EXPIRES"))


def test_kubeconfig_token_revoke_revokes_it(cli: Cli) -> None:
    cli.ok("cluster", "kubeconfig", "c1")
    [token] = cli.data("cluster", "kubeconfig-token", "list")
    result = cli.ok("cluster", "kubeconfig-token", "revoke", token["id"])
    assert result.stdout.strip() == f"kubeconfig token {token['id']} revoked"
    [after] = cli.data("cluster", "kubeconfig-token", "list")
    assert after["revoked_at"] is not None
    cli.login("member")
    refused = cli.run("cluster", "kubeconfig-token", "revoke", token["id"])
    assert refused.exit_code == 1
    assert "not found" in refused.stderr
