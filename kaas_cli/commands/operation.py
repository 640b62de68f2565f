"""``kaas operation list|get|watch``: read and follow operations (the progress of a cluster's changes, a
rollout's per-node progress and why it paused); ``kaas operation resume|pause|rollback|cancel`` steer an
upgrade or repair."""

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
    stopped_short,
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


NODE_COLUMNS = [
    ("name", "NODE"),
    ("role", "ROLE"),
    ("pool", "POOL"),
    ("version", "VERSION"),
    ("state", "STATE"),
]


def print_operation(operation: dict[str, Any], output: OutputFormat) -> None:
    """An operation; for people, its per-node progress as a table of its own under the summary."""
    if output is not OutputFormat.TABLE:
        print_object(operation, output)
        return
    summary = {key: value for key, value in operation.items() if key != "nodes"}
    if not summary.get("params"):
        summary.pop("params", None)
    print_object(summary, output)
    if operation.get("nodes"):
        print_rows(operation["nodes"], NODE_COLUMNS, output)


def _show_final(operation: dict[str, Any], output: OutputFormat, *, stopped_is_error: bool = False) -> None:
    print_operation(operation, output)
    if operation.get("state") == "failed":
        raise typer.Exit(1)
    problem = stopped_short(operation) if stopped_is_error else None
    if problem is not None:
        err_console.print(problem, highlight=False)
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
        _show_final(operation, output, stopped_is_error=True)


@app.command()
def get(
    operation_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="follow until it ends (as `watch`)")] = False,
    timeout: TimeoutOption = 1800,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Show an operation, with a rollout's per-node progress and why it paused (exit code 1 if it failed)."""
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
    """Follow an operation until it ends or pauses, then show it (exit 1 unless it succeeded)."""
    _watch(operation_id, timeout=timeout, output=output)


def _control(operation_id: str, action: str, *, done: str, output: OutputFormat) -> None:
    with api_client() as (client, _config):
        operation = client.post(f"/v1/operations/{operation_id}/{action}")
        if output is OutputFormat.TABLE:
            err_console.print(f"operation {operation_id} {done}")
        print_operation(operation, output)


@app.command()
def resume(operation_id: str, output: OutputOption = OutputFormat.TABLE) -> None:
    """Run a paused upgrade or repair again from where it stopped."""
    _control(operation_id, "resume", done="resumed", output=output)


@app.command()
def pause(operation_id: str, output: OutputOption = OutputFormat.TABLE) -> None:
    """Stop a pending or running upgrade or repair after the node in hand."""
    _control(operation_id, "pause", done="paused", output=output)


@app.command()
def rollback(operation_id: str, output: OutputOption = OutputFormat.TABLE) -> None:
    """Bring an unfinished upgrade's nodes back to the versions it started from."""
    _control(operation_id, "rollback", done="rolling back", output=output)


@app.command()
def cancel(operation_id: str, output: OutputOption = OutputFormat.TABLE) -> None:
    """Stop an unfinished operation after the node in hand (a paused one at once); nodes stay as they are."""
    _control(operation_id, "cancel", done="cancel requested", output=output)
