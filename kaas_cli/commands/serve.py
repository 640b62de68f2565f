"""``kaas api|worker|beat|tunnel|db``: run the parts of kaas separately, as a real deployment does.

Each command reads its deployable's settings, configures the process's logs from them (``KAAS_LOG_JSON``,
``KAAS_LOG_LEVEL``; ``kaas_core.logs``) and runs the part.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from fastapi import FastAPI

from kaas_api.config import ApiSettings
from kaas_cli.output import err_console
from kaas_core.db.migrate import upgrade_database
from kaas_core.logs import configure_logging
from kaas_core.serving.limits import run_server, server_config

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply the Alembic migrations to KAAS_DATABASE_URL."""
    upgrade_database(ApiSettings().database_url, revision)
    err_console.print(f"database at {revision}")


def api(
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    reuse_port: Annotated[
        bool,
        typer.Option(
            help="bind with SO_REUSEPORT: run one process per core on the same port and the kernel spreads"
            " connections over them, as a Service over pods (docs/architecture.md, the API's process layout)"
        ),
    ] = False,
) -> None:
    """Run the API server (settings from KAAS_* environment variables)."""
    settings = ApiSettings()
    settings.validate_for_production()
    configure_logging(json=settings.log_json, level=settings.log_level)
    app = api_app(settings)
    config = server_config(
        app, limits=settings.http_limits, host=host, port=port, log_level=settings.log_level.lower()
    )
    run_server(config, reuse_port=reuse_port)


def api_app(settings: ApiSettings) -> FastAPI:
    """The API as ``kaas api`` serves it: the deployment's database and broker, and the tunnel registry in
    Redis (``KAAS_REDIS_URL``), where the tunnel processes record which of them holds each cluster's agent.
    Without it the k8s proxy would look in a registry of its own, empty, and answer 503 for every cluster."""
    from celery import Celery

    from kaas_api.app import create_app
    from kaas_api.dispatch import CeleryDispatcher
    from kaas_core.credential_cache import RedisRevocationFeed
    from kaas_core.db.session import make_engine, make_session_factory
    from kaas_core.tunnel_registry import RedisTunnelRegistry, bounded_redis

    engine = make_engine(settings.database_url, pool_size=settings.database_pool_size)
    celery_client = Celery("kaas-api", broker=settings.broker_url, backend=settings.result_backend)
    # a bounded pool whose callers wait: hundreds of watches opened at once each look their cluster up
    registry = RedisTunnelRegistry(bounded_redis(settings.redis_url)) if settings.redis_url else None
    # revocations this API commits reach every tunnel process's and API replica's credential cache
    feed = RedisRevocationFeed(settings.redis_url) if settings.redis_url else None
    return create_app(
        settings,
        session_factory=make_session_factory(engine),
        dispatcher=CeleryDispatcher(celery_client),
        tunnel_registry=registry,
        revocation_feed=feed,
    )


def _keep_kaas_logging() -> None:
    """Stop Celery from configuring logging itself: a receiver of ``setup_logging`` replaces its setup."""
    from celery import signals

    def keep(**_: Any) -> None:
        return None

    signals.setup_logging.connect(keep, weak=False, dispatch_uid="kaas-keep-logging")


def worker(
    region: Annotated[list[str], typer.Option("--region", help="region whose queue to serve (repeatable)")],
    concurrency: Annotated[int, typer.Option(help="worker processes or threads")] = 2,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork, threads or solo")] = "prefork",
    metrics_port: Annotated[
        int | None,
        typer.Option(help="serve reconcile metrics at http://<metrics-host>:<port>/metrics (default off)"),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="address the metrics server binds; scrapes need KAAS_METRICS_TOKEN")
    ] = "127.0.0.1",
) -> None:
    """Run a provider worker for one or more regions (settings from KAAS_* environment variables)."""
    from provider.celery_app import make_celery, worker_queues
    from provider.config import ProviderSettings
    from provider.metrics import start_metrics_server

    if metrics_port is not None and pool == "prefork":
        # prefork children would count in their own memory, out of reach of the server in the parent
        raise typer.BadParameter("metrics need --pool threads or --pool solo", param_hint="--metrics-port")
    settings = ProviderSettings(regions=region)
    configure_logging(json=settings.log_json, level=settings.log_level)
    _keep_kaas_logging()
    app = make_celery(settings)
    if metrics_port is not None:
        if settings.metrics_token is None:
            raise typer.BadParameter(
                "set KAAS_METRICS_TOKEN: Prometheus scrapes with it", param_hint="--metrics-port"
            )
        server = start_metrics_server(
            app.provider_metrics.registry,
            host=metrics_host,
            port=metrics_port,
            token=settings.metrics_token.get_secret_value(),
        )
        err_console.print(f"reconcile metrics at http://{metrics_host}:{server.port}/metrics")
    queues = ",".join(worker_queues(region))
    app.worker_main(
        [
            "worker",
            f"--loglevel={settings.log_level.upper()}",
            f"--queues={queues}",
            f"--concurrency={concurrency}",
            f"--pool={pool}",
        ]
    )


def beat() -> None:
    """Run the periodic sweep scheduler (exactly one per deployment)."""
    from provider.celery_app import make_celery
    from provider.config import ProviderSettings

    settings = ProviderSettings()
    configure_logging(json=settings.log_json, level=settings.log_level)
    _keep_kaas_logging()
    app = make_celery(settings)
    app.start(["beat", f"--loglevel={settings.log_level.upper()}"])


def tunnel() -> None:
    """Run a tunnel server: agents connect here; the API's k8s proxy reaches them through it."""
    from kaas_tunnel.config import TunnelSettings
    from kaas_tunnel.main import run_tunnel_server

    settings = TunnelSettings()
    configure_logging(json=settings.log_json, level=settings.log_level)
    run_tunnel_server(settings)
