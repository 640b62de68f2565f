"""What every API-calling command shares: loading the config, opening the client, reporting errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from kaas_cli.client import ApiError, KaasClient
from kaas_cli.config import CliConfig
from kaas_cli.output import OutputFormat, err_console

OutputOption = Annotated[OutputFormat, typer.Option("--output", "-o", help="table or json")]
ProjectOption = Annotated[str | None, typer.Option("--project", "-p", help="project (default: from config)")]


@contextmanager
def api_client() -> Iterator[tuple[KaasClient, CliConfig]]:
    """Open a client from the CLI config; turn API errors into a one-line message and exit code 1."""
    config = CliConfig.load()
    try:
        with KaasClient(config) as client:
            yield client, config
    except ApiError as exc:
        err_console.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(1) from exc


def resolve_project(config: CliConfig, project: str | None) -> str:
    chosen = project or config.project
    if not chosen:
        err_console.print(
            "[red]error:[/] no project given: pass --project or set one with `kaas login --project`"
        )
        raise typer.Exit(2)
    return chosen
