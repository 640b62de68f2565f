"""``kaas cluster kubeconfig NAME [-o FILE]``: download a kubeconfig that reaches the cluster through kaas.

Each download creates a new kubeconfig token (only valid for you on that cluster; ``--ttl-days``), unless
``--exec``: then the kubeconfig calls ``kaas token --cluster ID`` for your CLI token, as GKE and EKS do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import httpx
import typer

from kaas_cli.commands.common import ProjectOption, resolve_project
from kaas_cli.config import CliConfig
from kaas_cli.output import err_console


def fetch_kubeconfig(
    config: CliConfig, *, project: str, cluster: str, ttl_days: int | None, exec_plugin: bool
) -> str:
    """The kubeconfig YAML from the API; raises ``typer.Exit`` with the server's message on failure."""
    if not config.token:
        err_console.print("[red]error:[/] no token configured: run `kaas up` or `kaas login`")
        raise typer.Exit(1)
    params: dict[str, str | int] = {"format": "exec" if exec_plugin else "token"}
    if ttl_days is not None:
        params["ttl_days"] = ttl_days
    url = f"{config.url.rstrip('/')}/v1/projects/{project}/clusters/{cluster}/kubeconfig"
    try:
        response = httpx.get(
            url,
            params=params,
            headers={"Authorization": f"Bearer {config.token}"},
            timeout=30.0,
            verify=config.verify(),
        )
    except httpx.HTTPError as exc:
        err_console.print(f"[red]error:[/] cannot reach the kaas API at {config.url}: {exc}")
        raise typer.Exit(1) from exc
    if response.status_code >= 400:
        try:
            message = response.json().get("message") or response.text
        except ValueError:
            message = response.text
        err_console.print(f"[red]error:[/] {message}")
        raise typer.Exit(1)
    return response.text


def kubeconfig(
    name: Annotated[str, typer.Argument(help="cluster name or id")],
    project: ProjectOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write to this file (mode 0600) instead of stdout")
    ] = None,
    ttl_days: Annotated[int | None, typer.Option("--ttl-days", help="days the new token lives")] = None,
    exec_plugin: Annotated[
        bool, typer.Option("--exec", help="use `kaas token` (your CLI token) instead of a new token")
    ] = False,
) -> None:
    """Download a kubeconfig for the cluster (its server is the kaas API's k8s proxy)."""
    config = CliConfig.load()
    document = fetch_kubeconfig(
        config,
        project=resolve_project(config, project),
        cluster=name,
        ttl_days=ttl_days,
        exec_plugin=exec_plugin,
    )
    if not config.url.startswith("https://"):
        err_console.print(
            "[yellow]warning:[/] the kaas API is plain HTTP; kubectl sends credentials only over HTTPS"
        )
    if output is None:
        typer.echo(document, nl=False)
        return
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(document)
    output.chmod(0o600)
    err_console.print(f"kubeconfig written to {output}; try: kubectl --kubeconfig {output} get nodes")
