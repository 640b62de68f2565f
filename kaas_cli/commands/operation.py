"""``kaas operation ...``: read and follow operations."""

from __future__ import annotations

from typing import Annotated

import typer

from kaas_cli.commands.common import OutputOption, api_client
from kaas_cli.output import OutputFormat, err_console, print_object
from kaas_cli.wait import OperationTimeout, wait_for_operation

app = typer.Typer(help="Operations (the progress of changes).", no_args_is_help=True)


@app.command()
def get(
    operation_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="follow until it ends")] = False,
    timeout: Annotated[float, typer.Option()] = 1800,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Show an operation, or follow it with --follow."""
    with api_client() as (client, _config):
        if follow:
            try:
                operation = wait_for_operation(
                    client, operation_id, timeout=timeout, quiet=output is OutputFormat.JSON
                )
            except OperationTimeout as exc:
                err_console.print(f"[yellow]timeout:[/] {exc}")
                raise typer.Exit(3) from exc
        else:
            operation = client.get(f"/v1/operations/{operation_id}")
        print_object(operation, output)
        if operation.get("state") == "failed":
            raise typer.Exit(1)
