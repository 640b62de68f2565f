"""``kaas login``: point the CLI at a kaas API with a token."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kaas_cli.client import ApiError
from kaas_cli.commands.common import open_client
from kaas_cli.config import CliConfig
from kaas_cli.output import console, err_console


def login(
    url: Annotated[str, typer.Argument(help="the kaas API, e.g. https://kaas.example.com")],
    token: Annotated[str, typer.Option(prompt=True, hide_input=True, help="your API token")],
    project: Annotated[str | None, typer.Option(help="default project")] = None,
    region: Annotated[str | None, typer.Option(help="default region")] = None,
    ca_file: Annotated[
        Path | None, typer.Option(help="CA certificate of the API, when it is not signed by a public CA")
    ] = None,
) -> None:
    """Check the token against the API and save it for the next commands."""
    config = CliConfig(
        url=url,
        token=token,
        project=project,
        region=region,
        ca_file=str(ca_file.expanduser().resolve()) if ca_file else None,
    )
    try:
        with open_client(config) as client:
            me = client.get("/v1/me")
    except ApiError as exc:
        err_console.print(f"[red]error:[/] {exc.message}")
        raise typer.Exit(1) from exc
    path = config.save()
    console.print(f"logged in as [bold]{me.get('name')}[/]; config saved to {path}")
