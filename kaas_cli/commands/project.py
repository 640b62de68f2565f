"""``kaas project ...``: projects and their members."""

from __future__ import annotations

from typing import Annotated

import typer

from kaas_cli.commands.common import OutputOption, api_client
from kaas_cli.output import OutputFormat, console, print_object, print_rows

app = typer.Typer(help="Projects and members.", no_args_is_help=True)


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
        projects = client.get("/v1/projects")
        rows = projects.get("items", projects) if isinstance(projects, dict) else projects
        print_rows(
            rows,
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
) -> None:
    """Give a user a role in a project."""
    with api_client() as (client, _config):
        client.put(f"/v1/projects/{project}/members/{user}", {"role": role})
        console.print(f"{user} is {role} of {project}")


@app.command("remove-member")
def remove_member(project: str, user: str) -> None:
    """Take a user out of a project."""
    with api_client() as (client, _config):
        client.delete(f"/v1/projects/{project}/members/{user}")
        console.print(f"{user} removed from {project}")
