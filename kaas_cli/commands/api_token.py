"""``kaas api-token list|create|revoke``: your API tokens (the bearer tokens of the CLI, scripts and the
dashboard login).

Not ``kaas token``: that name is the exec credential plugin kubectl runs (``kaas_cli.commands.token``), and
kubeconfigs already downloaded call it by that name. Kubeconfig tokens are ``kaas cluster kubeconfig-token``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from kaas_cli.commands.common import OutputOption, api_client, items
from kaas_cli.output import OutputFormat, console, err_console, print_data, print_object, print_rows

app = typer.Typer(
    help="Your API tokens (kubeconfig tokens: `kaas cluster kubeconfig-token`).", no_args_is_help=True
)

TOKEN_COLUMNS = [
    ("id", "ID"),
    ("prefix", "PREFIX"),
    ("description", "DESCRIPTION"),
    ("created_at", "CREATED"),
    ("expires_at", "EXPIRES"),
    ("revoked_at", "REVOKED"),
    ("last_used_at", "LAST USED"),
]


@app.command("list")
def list_tokens(
    user: Annotated[str | None, typer.Option(help="another user's tokens (admins)")] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Your API tokens, revoked and expired ones included (only their prefixes: a token is shown once)."""
    with api_client() as (client, _config):
        print_rows(items(client.get("/v1/tokens", user=user)), TOKEN_COLUMNS, output)


@app.command()
def create(
    description: Annotated[str, typer.Option(help="what the token is for")] = "",
    ttl_days: Annotated[
        int | None, typer.Option(help="days until it expires (default: the server's)")
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Create an API token for yourself; it is printed only this once."""
    body: dict[str, object] = {"description": description}
    if ttl_days is not None:
        body["ttl_days"] = ttl_days
    with api_client() as (client, _config):
        created = client.post("/v1/tokens", body)
    if output is not OutputFormat.TABLE:
        print_data(created, output)
        return
    print_object(created["info"], output)
    err_console.print("the token (shown only this once; store it now):")
    console.print(created["token"], soft_wrap=True, highlight=False)


@app.command()
def revoke(
    token_id: Annotated[str, typer.Argument(help="the token's id (from `kaas api-token list`)")],
) -> None:
    """Revoke an API token: it stops working at once."""
    with api_client() as (client, config):
        listed = {t["id"]: t for t in items(client.get("/v1/tokens"))}
        client.delete(f"/v1/tokens/{token_id}")
    console.print(f"API token {token_id} revoked")
    mine = listed.get(token_id)
    if mine is not None and config.token and config.token.startswith(mine["prefix"]):
        err_console.print(
            "[yellow]warning:[/] that was the token this CLI uses; log in again with `kaas login`"
        )
