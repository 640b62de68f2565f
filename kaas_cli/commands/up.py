"""``kaas up``: start everything on embedded defaults and leave the CLI ready to use.

The state directory is private to its owner (``kaas_cli.state_dir``): 0700, the secrets and the database
0600, and the process umask 0077 so nothing created later is readable by others either.

The clusters' Kubernetes (``kaas_cli.embedded.choose_kubernetes``): the real programs when
``scripts/kube-bin.sh`` has built them into ``$KAAS_CACHE_DIR`` (default ``~/.cache/kaas``), else the Python
stand-in; the first lines ``kaas up`` prints say which.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated
from urllib.parse import urlsplit

import typer
from pydantic import SecretStr

from kaas_api.config import ApiSettings
from kaas_cli.config import CliConfig
from kaas_cli.embedded import (
    AUTO,
    DEFAULT_REGION,
    REAL,
    KubernetesChoiceError,
    choose_kubernetes,
    ensure_embedded_tls,
    load_or_create_secret_key,
    remembered_port,
    seed_embedded,
)
from kaas_cli.output import console, err_console
from kaas_cli.state_dir import DATABASE_FILE, make_private
from kaas_core.db.migrate import upgrade_database
from kaas_core.db.models import utcnow
from kaas_core.db.session import make_engine, make_session_factory
from kaas_core.serving.limits import run_server, server_config
from kaas_core.settings import default_state_dir


@contextlib.contextmanager
def stopping_signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP stop ``kaas up`` as Ctrl-C does, through its ``finally`` blocks.

    uvicorn handles them while it serves, then raises the signal again under the handler it found: the
    default one would end the process on the spot, before the node booter stops the clusters' control
    planes, and a real one's processes (etcd, kube-apiserver, kwok...) would outlive kaas up."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def up(
    port: Annotated[int, typer.Option(help="API port on 127.0.0.1")] = 8000,
    state_dir: Annotated[
        Path, typer.Option(help="where the database and secrets live")
    ] = default_state_dir(),
    boot_delay: Annotated[float, typer.Option(help="seconds a simulated server takes to boot")] = 2.0,
    sweep_interval: Annotated[float, typer.Option(help="seconds between repair sweeps")] = 30.0,
    kubernetes: Annotated[
        str,
        typer.Option(
            help="the clusters' Kubernetes: auto (the real programs when scripts/kube-bin.sh built them, "
            "else the Python stand-in), real, or stand-in"
        ),
    ] = AUTO,
    kubernetes_version: Annotated[
        str | None,
        typer.Option(help="the region's default Kubernetes version, one it offers (default: the newest)"),
    ] = None,
) -> None:
    """Run API, worker, sweep, tunnel server, simulated OpenStack and simulated nodes in one process.

    Everything lives in the state dir and survives a restart: the database, the simulated cloud (its
    servers, networks and load balancers, same ids and names) and each cluster's objects. The in-memory
    broker does not, so every cluster is reconciled at once on start: an operation a shutdown interrupted
    goes on within seconds instead of waiting for its due time.
    """
    from prometheus_client import CollectorRegistry

    from kaas_api.app import create_app
    from kaas_api.dispatch import CeleryDispatcher
    from kaas_cli.tunnel_thread import BackgroundTunnelServer
    from kaas_core.logs import configure_logging
    from kaas_core.tasks import RECONCILE_TASK
    from kaas_core.tunnel_registry import InMemoryTunnelRegistry
    from kaas_tunnel.config import TunnelSettings
    from kaas_tunnel.metrics import TunnelMetrics
    from provider.bootstrap import rbac_manifest
    from provider.celery_app import make_celery, run_embedded_worker, worker_queues
    from provider.config import ProviderSettings
    from provider.metrics import ReconcileMetrics
    from provider.reconciler.due import make_undated_clusters_due, queue_due_clusters

    try:  # the simulators are their own distribution: production installs do not carry them
        from nodesim.booter import NodeBooter
        from nodesim.kube_releases import built_releases, kube_cache_dir
        from simcloud.testing import run_simcloud
    except ImportError as exc:
        err_console.print(
            f"[red]error:[/] kaas up runs on the simulators of kaas-embedded, which is not installed ({exc})."
            " Install it beside kaas: `pip install ./embedded` in a checkout, `pip install kaas-embedded`"
            " from a package index."
        )
        raise typer.Exit(1) from exc

    cache_dir = kube_cache_dir(os.environ, home=Path.home())
    try:
        kube = choose_kubernetes(
            releases=built_releases(cache_dir),
            cache_dir=cache_dir,
            mode=kubernetes,
            default_version=kubernetes_version,
        )
    except KubernetesChoiceError as exc:
        raise typer.BadParameter(str(exc)) from exc
    state_dir = state_dir.expanduser().resolve()
    # first of all: the umask and the modes, before the database or any secret is opened or written
    tightened = make_private(state_dir)
    if tightened:
        err_console.print(f"[dim]made {len(tightened)} existing file(s) in {state_dir} owner-only[/]")
    secret_key = load_or_create_secret_key(state_dir)
    internal_secret = secrets.token_urlsafe(32)  # API -> tunnel server, within this process's lifetime
    database_url = f"sqlite:///{state_dir / DATABASE_FILE}"
    tls = ensure_embedded_tls(state_dir)
    public_url = f"https://127.0.0.1:{port}"
    console.print(kube.describe(), soft_wrap=True)
    err_console.print(f"[dim]state in {state_dir}; migrating the database…[/]")
    upgrade_database(database_url)
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    registry = InMemoryTunnelRegistry()
    # one process, one /metrics: the API's registry also holds the provider's and the tunnel server's metrics
    metrics_registry = CollectorRegistry()
    tunnel_port_file = state_dir / "tunnel.port"
    tunnel_settings = TunnelSettings(
        database_url=database_url,
        tunnel_port=remembered_port(tunnel_port_file),
        internal_port=0,
        tunnel_internal_secret=SecretStr(internal_secret),
    )

    with (
        run_simcloud(
            state_dir=state_dir / "simcloud", boot_delay=boot_delay, lb_delay=boot_delay, persist=True
        ) as cloud,
        BackgroundTunnelServer(
            tunnel_settings,
            session_factory=factory,
            registry=registry,
            metrics=TunnelMetrics(metrics_registry),
        ) as tunnel,
    ):
        api_settings = ApiSettings(
            database_url=database_url,
            broker_url="memory://",
            secret_key=secret_key,
            public_url=public_url,
            tunnel_url=tunnel.tunnel_url,
            tunnel_internal_secret=SecretStr(internal_secret),
            tls_cert_file=tls.cert_file,
            tls_key_file=tls.key_file,
            tls_ca_file=tls.ca_file,
        )
        provider_settings = ProviderSettings(
            database_url=database_url,
            broker_url="memory://",
            secret_key=secret_key,
            clouds_yaml=cloud.clouds_yaml,
            tunnel_url=tunnel.tunnel_url,
            tunnel_internal_secret=SecretStr(internal_secret),
            sweep_interval_seconds=sweep_interval,
            regions=[DEFAULT_REGION],
            # a real control plane takes upstream's add-on manifests (DaemonSets, CRDs, APIServices) as a
            # VM's would; the stand-in serves kaas's RBAC but not those
            manage_addons=kube.kind == REAL,
            # with no data plane, metrics-server's APIService is never Available, and an unavailable API
            # group stops the namespace controller from deleting any namespace (a VM's cluster runs it)
            addons_left_out=["metrics-server"],
        )
        configure_logging(json=api_settings.log_json, level="WARNING")
        celery_app = make_celery(provider_settings, metrics=ReconcileMetrics(metrics_registry))
        seed = seed_embedded(
            factory,
            cloud_name=cloud.cloud_name,
            saved_token=CliConfig.load().token,
            kubernetes_versions=kube.versions,
            default_kubernetes_version=kube.default_version,
        )
        CliConfig(
            url=public_url,
            token=seed.admin_token,
            project=seed.project,
            region=seed.region,
            ca_file=str(tls.ca_file),
        ).save()

        tunnel_port_file.write_text(str(urlsplit(tunnel.tunnel_url).port))
        dispatcher = CeleryDispatcher(celery_app)
        app = create_app(
            api_settings,
            session_factory=factory,
            dispatcher=dispatcher,
            tunnel_registry=registry,
            metrics_registry=metrics_registry,
        )
        worker = run_embedded_worker(celery_app, queues=worker_queues(provider_settings.regions), beat=True)
        booter = NodeBooter(
            clouds_yaml=cloud.clouds_yaml,
            admin_cloud=cloud.admin_cloud_name,
            rbac_manifest=rbac_manifest(),
            state_dir=state_dir / "nodes",
            kubernetes_version_default=f"v{kube.default_version}",
            persist=True,
            kube_releases=kube.releases,
        )
        booter.start()
        # the memory broker started empty: whatever was in flight when kaas last stopped goes on now
        # (a cluster still leased by a killed earlier run waits for its lease, then the due-scan takes it)
        make_undated_clusters_due(factory, now=utcnow(), every_live_cluster=True)
        queue_due_clusters(
            factory,
            DEFAULT_REGION,
            enqueue=lambda cluster_id, ticket, queue: celery_app.send_task(
                RECONCILE_TASK, args=[cluster_id], kwargs={"ticket": ticket}, queue=queue
            ),
            now=utcnow(),
            grace_seconds=provider_settings.requeue_grace_seconds,
        )
        try:
            console.print(f"kaas is up at [bold]{public_url}[/] (API docs: {public_url}/docs)")
            console.print(f"simulated OpenStack at {cloud.base_url}; agents connect to {tunnel.tunnel_url}")
            console.print(f"admin token (also saved for the CLI): {seed.admin_token}", soft_wrap=True)
            console.print(f"admin dashboard: {public_url}/admin (log in with the admin token)")
            console.print("try: [bold]kaas cluster create demo --wait[/]")
            config = server_config(
                app,
                limits=api_settings.http_limits,
                host="127.0.0.1",
                port=port,
                log_level="warning",
                ssl_certfile=str(tls.cert_file),
                ssl_keyfile=str(tls.key_file),
            )
            with stopping_signals_interrupt():
                run_server(config)
        finally:
            booter.stop()
            worker.stop()
    engine.dispose()
