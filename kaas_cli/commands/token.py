"""``kaas token --cluster ID``: the exec credential plugin of ``?format=exec`` kubeconfigs.

kubectl runs it (``users[].user.exec``) and reads a ``client.authentication.k8s.io/v1`` ExecCredential
carrying the CLI's own API token, which the k8s proxy accepts for any cluster the user may reach. Prints
nothing but JSON on stdout: kubectl parses it.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from kaas_cli.config import CliConfig
from kaas_cli.output import err_console

EXEC_API_VERSION = "client.authentication.k8s.io/v1"


def exec_credential(token: str) -> dict[str, object]:
    return {"apiVersion": EXEC_API_VERSION, "kind": "ExecCredential", "status": {"token": token}}


def token(
    cluster: Annotated[str, typer.Option("--cluster", help="the cluster id (from the kubeconfig)")],
) -> None:
    """Print an ExecCredential with your kaas API token (kubectl calls this)."""
    config = CliConfig.load()
    if not config.token:
        err_console.print(
            "[red]error:[/] no token configured: run `kaas login` (needed for cluster " + cluster + ")"
        )
        raise typer.Exit(1)
    typer.echo(json.dumps(exec_credential(config.token)))
