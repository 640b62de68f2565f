"""``kaas project ...``: projects, their members and their quota (``kaas project quota get|set``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from kaas_cli.commands.common import OutputOption, api_client, items, resolve_project
from kaas_cli.output import OutputFormat, console, print_data, print_object, print_rows

app = typer.Typer(help="Projects, members and quotas.", no_args_is_help=True)


@app.command()
def create(
    name: str,
    description: Annotated[str, typer.Option(help="free text")] = "",
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Create a project; you become its owner."""
    with api_client() as (client, _config):
        print_object(client.post("/v1/projects", {"name": name, "description": description}), output)


@app.command("list")
def list_projects(output: OutputOption = OutputFormat.TABLE) -> None:
    """Projects you are a member of (all of them for admins)."""
    with api_client() as (client, _config):
        print_rows(
            items(client.get("/v1/projects")),
            [("name", "NAME"), ("role", "ROLE"), ("description", "DESCRIPTION"), ("created_at", "CREATED")],
            output,
        )


@app.command()
def get(name: str, output: OutputOption = OutputFormat.TABLE) -> None:
    """Show a project."""
    with api_client() as (client, _config):
        print_object(client.get(f"/v1/projects/{name}"), output)


@app.command()
def delete(name: str) -> None:
    """Delete an empty project."""
    with api_client() as (client, _config):
        client.delete(f"/v1/projects/{name}")
        console.print(f"project {name} deleted")


@app.command("add-member")
def add_member(
    project: str,
    user: str,
    role: Annotated[str, typer.Option(help="owner, member or viewer")] = "member",
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Give a user a role in a project."""
    with api_client() as (client, _config):
        member = client.put(f"/v1/projects/{project}/members/{user}", {"role": role})
    if output is OutputFormat.TABLE:
        console.print(f"{user} is {role} of {project}")
    else:
        print_data(member, output)


@app.command()
def members(name: str, output: OutputOption = OutputFormat.TABLE) -> None:
    """A project's members and their roles."""
    with api_client() as (client, _config):
        found = client.get(f"/v1/projects/{name}/members")
        print_rows(items(found), [("user", "USER"), ("role", "ROLE"), ("created_at", "SINCE")], output)


@app.command("remove-member")
def remove_member(project: str, user: str) -> None:
    """Take a user out of a project."""
    with api_client() as (client, _config):
        client.delete(f"/v1/projects/{project}/members/{user}")
        console.print(f"{user} removed from {project}")


quota_app = typer.Typer(help="A project's quota: its limits and what it uses.", no_args_is_help=True)
app.add_typer(quota_app, name="quota")

QUOTA_FIELDS = (
    ("clusters", "max_clusters"),
    ("nodes", "max_nodes"),
    ("vcpus", "max_vcpus"),
    ("ram_mb", "max_ram_mb"),
)
LimitOption = Annotated[str | None, typer.Option(metavar="N|unlimited")]


def print_quota(answer: dict[str, Any], output: OutputFormat) -> None:
    if output is not OutputFormat.TABLE:
        print_data(answer, output)
        return
    limits, usage = answer.get("quota") or {}, answer.get("usage") or {}
    rows = [
        {
            "resource": name,
            "used": usage.get(name),
            "limit": limits.get(field) if limits.get(field) is not None else "unlimited",
        }
        for name, field in QUOTA_FIELDS
    ]
    print_rows(rows, [("resource", "RESOURCE"), ("used", "USED"), ("limit", "LIMIT")], output)


def parse_limit(text: str, *, option: str) -> int | None:
    """``unlimited`` → None; a whole number → itself."""
    if text.strip().lower() in ("unlimited", "none"):
        return None
    if not text.strip().isdigit():
        raise typer.BadParameter(f"{text!r}: a whole number or 'unlimited'", param_hint=option)
    return int(text)


@quota_app.command("get")
def get_quota(
    project: Annotated[str | None, typer.Argument(help="project (default: from config)")] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """The project's limits and usage."""
    with api_client() as (client, config):
        print_quota(client.get(f"/v1/projects/{resolve_project(config, project)}/quota"), output)


@quota_app.command("set")
def set_quota(
    project: Annotated[str | None, typer.Argument(help="project (default: from config)")] = None,
    max_clusters: LimitOption = None,
    max_nodes: LimitOption = None,
    max_vcpus: LimitOption = None,
    max_ram_mb: LimitOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Change the project's limits (admins); the limits not given stay as they are."""
    given = {
        "max_clusters": max_clusters,
        "max_nodes": max_nodes,
        "max_vcpus": max_vcpus,
        "max_ram_mb": max_ram_mb,
    }
    changes = {
        field: parse_limit(text, option="--" + field.replace("_", "-"))
        for field, text in given.items()
        if text is not None
    }
    if not changes:
        raise typer.BadParameter(
            "nothing to change: give --max-clusters, --max-nodes, --max-vcpus or --max-ram-mb"
        )
    with api_client() as (client, config):
        path = f"/v1/projects/{resolve_project(config, project)}/quota"
        # the API replaces all four limits at once: start from the ones in force
        limits = {**client.get(path)["quota"], **changes}
        print_quota(client.put(path, limits), output)
