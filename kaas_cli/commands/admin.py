"""``kaas admin ...``: bootstrap commands that talk to the database directly (no API token needed yet)."""

from __future__ import annotations

from typing import Annotated

import typer

from kaas_api.config import ApiSettings
from kaas_api.users.service import create_user
from kaas_cli.output import console, err_console
from kaas_core.db.session import make_engine, make_session_factory, session_scope

app = typer.Typer(help="Bootstrap administration (direct database access).", no_args_is_help=True)


@app.command("create-user")
def create_user_command(
    name: str,
    admin: Annotated[bool, typer.Option("--admin", help="make the user a global admin")] = False,
) -> None:
    """Create a user and print its first API token (shown only this once)."""
    settings = ApiSettings()
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            _user, token = create_user(session, name=name, is_admin=admin)
    except Exception as exc:  # the service's domain errors carry a message for people
        err_console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()
    err_console.print(f"user [bold]{name}[/] created{' (admin)' if admin else ''}; its token (shown once):")
    console.print(token, soft_wrap=True)
