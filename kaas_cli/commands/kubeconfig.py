"""``kaas cluster kubeconfig NAME``: download a kubeconfig that reaches the cluster through kaas; and
``kaas cluster kubeconfig-token list|revoke``: the kubeconfig tokens those downloads created.

Each download creates a new kubeconfig token (only valid for you on that cluster; ``--ttl-days``), unless
``--exec``: then the kubeconfig runs ``kaas token --cluster ID`` for your CLI token, as GKE and EKS do. The
API writes ``command: kaas`` in that exec entry (it cannot know where the caller's ``kaas`` is, and must
never write a command a client chose into a document for someone else); this command replaces it with the
absolute path of the ``kaas`` that is running, so kubectl finds it without an activated virtualenv.

``-o/--output`` is the format, as everywhere (``yaml``, the default, or ``json``, which kubectl reads as
well); ``--output-file PATH`` writes the kubeconfig to a file readable by its owner only.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from itertools import takewhile
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from kaas_cli.commands.common import (
    OutputOption,
    ProjectOption,
    api_client,
    items,
    resolve_project,
)
from kaas_cli.output import OutputFormat, console, err_console, print_rows, write_private_file

KUBECONFIG_FORMATS = (OutputFormat.YAML.value, OutputFormat.JSON.value)


def kaas_executable(*, argv0: str | None = None, python: str | None = None) -> str | None:
    """The absolute path of the ``kaas`` that is running: the script it was started as, else the ``kaas``
    beside this Python (a virtualenv's ``bin/``, where ``python -m kaas_cli.main`` runs), else the one on
    PATH. None when there is none."""
    started = Path(argv0 if argv0 is not None else sys.argv[0])
    if started.name == "kaas" and started.is_file() and os.access(started, os.X_OK):
        return str(started.resolve())
    # sys.executable not resolved: a virtualenv's bin/python is a symlink out of the virtualenv
    beside = Path(python if python is not None else sys.executable).absolute().parent / "kaas"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("kaas")
    return str(Path(found).resolve()) if found else None


def with_exec_command(document: str, command: str) -> str:
    """The kubeconfig ``document`` with every exec plugin entry running ``command``; its leading comments
    are kept."""
    header = "".join(takewhile(lambda line: line.startswith("#"), document.splitlines(keepends=True)))
    data = yaml.safe_load(document)
    for user in data.get("users") or []:
        entry = (user.get("user") or {}).get("exec")
        if isinstance(entry, dict):
            entry["command"] = command
    return header + yaml.safe_dump(data, sort_keys=False)


def _kubeconfig_format(value: str) -> str:
    if value in KUBECONFIG_FORMATS:
        return value
    if value == OutputFormat.TABLE.value:
        raise typer.BadParameter("a kubeconfig is yaml or json")
    raise typer.BadParameter(
        f"{value!r} is not a format: -o/--output is yaml or json; write a file with --output-file PATH"
    )


def kubeconfig(
    name: Annotated[str, typer.Argument(help="cluster name or id")],
    project: ProjectOption = None,
    output: Annotated[
        str,
        typer.Option("--output", "-o", help="yaml or json", callback=_kubeconfig_format, metavar="FORMAT"),
    ] = OutputFormat.YAML.value,
    output_file: Annotated[
        Path | None,
        typer.Option(
            "--output-file", help="write to this file (mode 0600) instead of stdout", dir_okay=False
        ),
    ] = None,
    ttl_days: Annotated[int | None, typer.Option("--ttl-days", help="days the new token lives")] = None,
    exec_plugin: Annotated[
        bool, typer.Option("--exec", help="use `kaas token` (your CLI token) instead of a new token")
    ] = False,
) -> None:
    """Download a kubeconfig for the cluster (its server is the kaas API's k8s proxy)."""
    with api_client() as (client, config):
        document = client.get_text(
            f"/v1/projects/{resolve_project(config, project)}/clusters/{name}/kubeconfig",
            format="exec" if exec_plugin else "token",
            ttl_days=ttl_days,
        )
    if exec_plugin:
        command = kaas_executable()
        if command is None:
            err_console.print("[yellow]warning:[/] cannot tell where `kaas` is; kubectl must find it on PATH")
        else:
            document = with_exec_command(document, command)
    if not config.url.startswith("https://"):
        err_console.print(
            "[yellow]warning:[/] the kaas API is plain HTTP; kubectl sends credentials only over HTTPS"
        )
    if output == OutputFormat.JSON.value:
        document = json.dumps(yaml.safe_load(document), indent=2) + "\n"
    if output_file is None:
        typer.echo(document, nl=False)
        return
    write_private_file(output_file, document)
    err_console.print(
        f"kubeconfig written to {output_file}; try: kubectl --kubeconfig {output_file} get nodes"
    )


token_app = typer.Typer(
    help="Kubeconfig tokens: the tokens inside downloaded kubeconfigs (one user, one cluster each).",
    no_args_is_help=True,
)

KUBECONFIG_TOKEN_COLUMNS = [
    ("id", "ID"),
    ("prefix", "PREFIX"),
    ("user", "USER"),
    ("project", "PROJECT"),
    ("cluster", "CLUSTER"),
    ("created_at", "CREATED"),
    ("expires_at", "EXPIRES"),
    ("revoked_at", "REVOKED"),
    ("last_used_at", "LAST USED"),
]


def _of_cluster(token: dict[str, Any], cluster: str, project: str) -> bool:
    return token.get("cluster_id") == cluster or (
        token.get("cluster") == cluster and token.get("project") == project
    )


@token_app.command("list")
def list_kubeconfig_tokens(
    cluster: Annotated[str | None, typer.Argument(help="only this cluster's (name or id)")] = None,
    project: ProjectOption = None,
    user: Annotated[str | None, typer.Option(help="another user's tokens (admins)")] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Your kubeconfig tokens (admins: everyone's), revoked and expired ones included."""
    with api_client() as (client, config):
        tokens = items(client.get("/v1/kubeconfig-tokens", user=user))
        if cluster is not None:
            chosen = project or config.project or ""
            tokens = [t for t in tokens if _of_cluster(t, cluster, chosen)]
        print_rows(tokens, KUBECONFIG_TOKEN_COLUMNS, output)


@token_app.command("revoke")
def revoke_kubeconfig_token(token_id: Annotated[str, typer.Argument(help="the token's id")]) -> None:
    """Revoke a kubeconfig token: kubeconfigs that carry it stop working at once."""
    with api_client() as (client, _config):
        client.delete(f"/v1/kubeconfig-tokens/{token_id}")
        console.print(f"kubeconfig token {token_id} revoked")
