"""``kaas operation list|get|watch``: read and follow operations (the progress of a cluster's changes)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from kaas_cli.commands.common import (
    OutputOption,
    ProjectOption,
    TimeoutOption,
    api_client,
    items,
    resolve_project,
)
from kaas_cli.output import OutputFormat, err_console, print_object, print_rows
from kaas_cli.wait import OperationTimeout, wait_for_operation

app = typer.Typer(help="Operations (the progress of changes).", no_args_is_help=True)

OPERATION_COLUMNS = [
    ("id", "ID"),
    ("kind", "KIND"),
    ("state", "STATE"),
    ("step", "STEP"),
    ("progress", "%"),
    ("error", "ERROR"),
    ("created_at", "CREATED"),
    ("finished_at", "FINISHED"),
]


@app.command("list")
def list_operations(
    cluster: Annotated[str, typer.Argument(help="cluster name or id")],
    project: ProjectOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """A cluster's operations, newest first."""
    with api_client() as (client, config):
        ops = client.get(f"/v1/projects/{resolve_project(config, project)}/clusters/{cluster}/operations")
        print_rows(items(ops), OPERATION_COLUMNS, output)


def _show_final(operation: dict[str, Any], output: OutputFormat) -> None:
    print_object(operation, output)
    if operation.get("state") == "failed":
        raise typer.Exit(1)


def _watch(operation_id: str, *, timeout: float, output: OutputFormat) -> None:
    with api_client() as (client, _config):
        try:
            operation = wait_for_operation(
                client, operation_id, timeout=timeout, quiet=output is not OutputFormat.TABLE
            )
        except OperationTimeout as exc:
            err_console.print(f"[yellow]timeout:[/] {exc}")
            raise typer.Exit(3) from exc
        _show_final(operation, output)


@app.command()
def get(
    operation_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="follow until it ends (as `watch`)")] = False,
    timeout: TimeoutOption = 1800,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Show an operation (exit code 1 if it failed)."""
    if follow:
        _watch(operation_id, timeout=timeout, output=output)
        return
    with api_client() as (client, _config):
        _show_final(client.get(f"/v1/operations/{operation_id}"), output)


@app.command()
def watch(
    operation_id: str,
    timeout: Annotated[float, typer.Option(help="seconds to follow before giving up (exit code 3)")] = 1800,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Follow an operation with live progress until it ends, then show it (exit code 1 if it failed)."""
    _watch(operation_id, timeout=timeout, output=output)
