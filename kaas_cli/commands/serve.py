"""``kaas api|worker|beat|db``: run the parts of kaas separately, as a real deployment does."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from kaas_api.config import ApiSettings
from kaas_cli.migrate import upgrade_database
from kaas_cli.output import err_console

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply the Alembic migrations to KAAS_DATABASE_URL."""
    upgrade_database(ApiSettings().database_url, revision)
    err_console.print(f"database at {revision}")


def api(
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
) -> None:
    """Run the API server (settings from KAAS_* environment variables)."""
    from celery import Celery

    from kaas_api.app import create_app
    from kaas_api.db.session import make_engine, make_session_factory
    from kaas_api.dispatch import CeleryDispatcher

    settings = ApiSettings()
    settings.validate_for_production()
    engine = make_engine(settings.database_url)
    celery_client = Celery("kaas-api", broker=settings.broker_url, backend=settings.result_backend)
    app = create_app(
        settings, session_factory=make_session_factory(engine), dispatcher=CeleryDispatcher(celery_client)
    )
    uvicorn.run(app, host=host, port=port, log_level="info")


def worker(
    region: Annotated[list[str], typer.Option("--region", help="region whose queue to serve (repeatable)")],
    concurrency: Annotated[int, typer.Option(help="worker processes or threads")] = 2,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork, threads or solo")] = "prefork",
) -> None:
    """Run a provider worker for one or more regions (settings from KAAS_* environment variables)."""
    from provider.celery_app import make_celery, worker_queues
    from provider.config import ProviderSettings

    settings = ProviderSettings(regions=region)
    app = make_celery(settings)
    queues = ",".join(worker_queues(region))
    app.worker_main(
        ["worker", "--loglevel=INFO", f"--queues={queues}", f"--concurrency={concurrency}", f"--pool={pool}"]
    )


def beat() -> None:
    """Run the periodic sweep scheduler (exactly one per deployment)."""
    from provider.celery_app import make_celery
    from provider.config import ProviderSettings

    app = make_celery(ProviderSettings())
    app.start(["beat", "--loglevel=INFO"])


def tunnel() -> None:
    """Run a tunnel server: agents connect here; the API's k8s proxy reaches them through it."""
    from provider.tunnel.main import run_tunnel_server

    run_tunnel_server()
