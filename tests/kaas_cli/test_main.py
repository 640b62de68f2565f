"""``kaas --help`` lists every command, and every command that prints data offers ``-o table|json|yaml``."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from kaas_cli.main import app

COMMANDS: dict[tuple[str, ...], set[str]] = {
    (): {
        "up", "api", "worker", "beat", "tunnel", "login", "token", "db", "admin",
        "project", "cluster", "operation", "region", "api-token", "webhook",
    },
    ("db",): {"upgrade"},
    ("admin",): {"create-user"},
    ("project",): {"create", "list", "get", "delete", "members", "add-member", "remove-member", "quota"},
    ("project", "quota"): {"get", "set"},
    ("cluster",): {
        "create", "list", "get", "scale", "upgrade", "update", "delete", "nodes", "kubeconfig", "node-pool",
        "kubeconfig-token",
    },
    ("cluster", "node-pool"): {"list", "get", "add", "set", "upgrade", "delete"},
    ("cluster", "kubeconfig-token"): {"list", "revoke"},
    ("operation",): {"list", "get", "watch", "resume", "pause", "rollback", "cancel"},
    ("region",): {"list", "get"},
    ("api-token",): {"list", "create", "revoke"},
    ("webhook",): {"list", "create", "get", "update", "delete", "deliveries", "redeliver"},
}  # fmt: skip

# the commands that print no data, only a message (or run a server): no -o
WITHOUT_OUTPUT = {
    ("up",), ("api",), ("worker",), ("beat",), ("tunnel",), ("login",), ("token",), ("db", "upgrade"),
    ("admin", "create-user"), ("project", "delete"), ("project", "remove-member"),
    ("cluster", "kubeconfig-token", "revoke"), ("api-token", "revoke"), ("webhook", "delete"),
}  # fmt: skip


def listed_in_help(*group: str) -> set[str]:
    """The command names in the Commands panel of ``kaas GROUP --help``."""
    result = CliRunner().invoke(app, [*group, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    panel = result.stdout.split("─ Commands ─", 1)[1]
    return {line.strip("│ ").split()[0] for line in panel.splitlines()[1:] if line.startswith("│ ")}


@pytest.mark.parametrize("group", list(COMMANDS), ids=lambda g: " ".join(("kaas", *g)))
def test_help_lists_every_command(group: tuple[str, ...]) -> None:
    assert listed_in_help(*group) == COMMANDS[group]


def leaves(command: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        return {path: command}
    found: dict[tuple[str, ...], Any] = {}
    for name, sub in subcommands.items():
        if not sub.hidden:
            found.update(leaves(sub, (*path, name)))
    return found


def test_every_command_that_prints_data_offers_table_json_and_yaml() -> None:
    commands = leaves(typer.main.get_command(app))
    with_output = {}
    for path, command in commands.items():
        options = [p for p in command.params if "--output" in getattr(p, "opts", ())]
        if options:
            assert "-o" in options[0].opts, path
            with_output[path] = options[0]
    assert set(with_output) == set(commands) - WITHOUT_OUTPUT
    for path in with_output:
        help_text = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"}).stdout
        [line] = [line for line in help_text.splitlines() if "--output " in line]
        if path == ("cluster", "kubeconfig"):  # a kubeconfig is yaml or json, not a table
            assert "yaml or json [default: yaml]" in line
        else:
            assert "<table|json|yaml>" in line, path
