"""``kaas webhook list|create|get|update|delete|deliveries|redeliver``: a project's webhooks (notifications
of operations that succeeded or failed) and their deliveries."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kaas_cli.commands.common import OutputOption, ProjectOption, api_client, items, resolve_project
from kaas_cli.output import OutputFormat, console, err_console, print_data, print_object, print_rows

app = typer.Typer(help="Webhooks of a project and their deliveries.", no_args_is_help=True)

EVENTS = ("operation.succeeded", "operation.failed", "operation.paused")
WEBHOOK_COLUMNS = [
    ("id", "ID"),
    ("url", "URL"),
    ("events", "EVENTS"),
    ("enabled", "ENABLED"),
    ("created_by", "CREATED BY"),
    ("created_at", "CREATED"),
]
DELIVERY_COLUMNS = [
    ("id", "ID"),
    ("event", "EVENT"),
    ("state", "STATE"),
    ("attempt_count", "ATTEMPTS"),
    ("last_status_code", "STATUS"),
    ("last_error", "ERROR"),
    ("created_at", "CREATED"),
    ("delivered_at", "DELIVERED"),
    ("next_attempt_at", "NEXT ATTEMPT"),
]
WebhookArgument = Annotated[str, typer.Argument(help="the webhook's id")]
EventOption = Annotated[
    list[str] | None,
    typer.Option("--event", "-e", help=f"event to be notified of: {' or '.join(EVENTS)} (repeatable)"),
]


def _path(project: str, webhook_id: str | None = None) -> str:
    base = f"/v1/projects/{project}/webhooks"
    return base if webhook_id is None else f"{base}/{webhook_id}"


@app.command("list")
def list_webhooks(project: ProjectOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
    """The project's webhooks."""
    with api_client() as (client, config):
        print_rows(items(client.get(_path(resolve_project(config, project)))), WEBHOOK_COLUMNS, output)


@app.command()
def create(
    url: Annotated[
        str, typer.Argument(help="where kaas POSTs the notifications, e.g. https://hooks.example.com/kaas")
    ],
    event: EventOption = None,
    secret_file: Annotated[
        Path | None,
        typer.Option(
            help="a file holding your own signing secret (16-128 characters); default: generated",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    project: ProjectOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Add a webhook (project owners). Prints its signing secret, only this once."""
    body: dict[str, Any] = {"url": url, "events": list(event or EVENTS)}
    if secret_file is not None:
        body["secret"] = secret_file.read_text().strip()
    with api_client() as (client, config):
        created = client.post(_path(resolve_project(config, project)), body)
    if output is not OutputFormat.TABLE:
        print_data(created, output)
        return
    print_object({k: v for k, v in created.items() if k != "secret"}, output)
    err_console.print("signing secret (verify X-Kaas-Signature with it; shown only this once):")
    console.print(created["secret"], soft_wrap=True, highlight=False)


@app.command()
def get(
    webhook_id: WebhookArgument, project: ProjectOption = None, output: OutputOption = OutputFormat.TABLE
) -> None:
    """Show a webhook (never its secret)."""
    with api_client() as (client, config):
        print_object(client.get(_path(resolve_project(config, project), webhook_id)), output)


@app.command()
def update(
    webhook_id: WebhookArgument,
    url: Annotated[str | None, typer.Option(help="the new receiver address")] = None,
    event: EventOption = None,
    enabled: Annotated[
        bool | None, typer.Option("--enable/--disable", help="turn the webhook on or off")
    ] = None,
    project: ProjectOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Change a webhook's receiver or events, or turn it off and on (project owners). The secret stays."""
    body: dict[str, Any] = {}
    if url is not None:
        body["url"] = url
    if event:
        body["events"] = list(event)
    if enabled is not None:
        body["enabled"] = enabled
    if not body:
        raise typer.BadParameter("nothing to change: give --url, --event, --enable or --disable")
    with api_client() as (client, config):
        print_object(client.patch(_path(resolve_project(config, project), webhook_id), body), output)


@app.command()
def delete(webhook_id: WebhookArgument, project: ProjectOption = None) -> None:
    """Delete a webhook and its delivery history (project owners)."""
    with api_client() as (client, config):
        client.delete(_path(resolve_project(config, project), webhook_id))
    console.print(f"webhook {webhook_id} deleted")


@app.command()
def deliveries(
    webhook_id: WebhookArgument,
    limit: Annotated[int, typer.Option(help="how many, newest first")] = 50,
    project: ProjectOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """The webhook's deliveries, newest first (json and yaml carry every attempt and the payload)."""
    with api_client() as (client, config):
        found = client.get(f"{_path(resolve_project(config, project), webhook_id)}/deliveries", limit=limit)
        print_rows(items(found), DELIVERY_COLUMNS, output)


@app.command()
def redeliver(
    webhook_id: WebhookArgument,
    delivery_id: Annotated[str, typer.Argument(help="the delivery's id (from `kaas webhook deliveries`)")],
    project: ProjectOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Send a succeeded or failed delivery again, with a fresh budget of attempts (project owners)."""
    with api_client() as (client, config):
        path = f"{_path(resolve_project(config, project), webhook_id)}/deliveries/{delivery_id}/redeliver"
        delivery = client.post(path)
    if output is OutputFormat.TABLE:
        err_console.print(f"delivery {delivery_id} queued again")
        print_object({k: v for k, v in delivery.items() if k not in ("payload", "attempts")}, output)
    else:
        print_data(delivery, output)
