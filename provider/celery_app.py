"""The provider's Celery app, its queues and beat schedule, and an in-process worker for ``kaas up``.

Composition: ``make_celery(settings)`` is called by ``kaas_cli`` (``kaas worker`` / ``kaas beat`` / ``kaas
up``). Queues: ``provider`` (the safety-net sweep, webhook deliveries) and ``region.<name>`` per served
region (reconciles, which the API sends there by name, and the region's due-scan and leak sweep, which beat
sends there: ``provider.beat``). Delivery is at-least-once: ``acks_late`` with prefetch 1 and
``task_reject_on_worker_lost``, so a task whose worker died is delivered again; the cluster lease, the
reconcile ticket and idempotent steps make a second delivery harmless. Recovery from a dead worker does not
wait for that redelivery (Redis holds a dead worker's messages for the visibility timeout): the due-scan
queues its clusters within ``recovery_bound_seconds`` (``provider.reconciler.due``). JSON only.

Real deployments::

    celery -A 'provider.celery_app:app_from_env()' worker -Q provider,region.<name> --pool threads
    celery -A 'provider.celery_app:app_from_env()' beat

Embedded (``kaas up``, one process, ``memory://`` broker)::

    app = make_celery(settings, context=ctx)           # ctx: optional, built from settings if omitted
    handle = run_embedded_worker(app, queues=worker_queues(["sim"]), beat=True)
    ...                                                # the API sends tasks with the same broker URL
    handle.stop()

The in-memory transport only connects producers and consumers *in the same process*, so in embedded mode
the API must send tasks through a Celery app using the same ``memory://`` broker in this process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import Celery
from celery.beat import EmbeddedService
from celery.utils.nodenames import anon_nodename
from celery.worker import WorkController, state
from kombu.entity import Queue

from kaas_core.internal_hop import assertion_key
from kaas_core.tasks import SHARED_QUEUE, SWEEP_TASK, region_queue
from provider.addons.catalog import ADDONS
from provider.addons.reconcile import tunnel_applier_factory
from provider.beat import RegionalScheduler, global_entries
from provider.config import ProviderSettings
from provider.metrics import ReconcileMetrics
from provider.reconciler.context import ProviderContext, ReconcileLimits, WebhookLimits
from provider.request_context import connect_request_id_signals
from provider.rollout.access import tunnel_node_ops_factory
from provider.rollout.health import HealthPolicy
from provider.rollout.plan import RolloutPolicy
from provider.tasks import register_tasks

logger = logging.getLogger(__name__)

DEFAULT_QUEUE = SHARED_QUEUE


def worker_queues(regions: Iterable[str]) -> list[str]:
    """The queues a worker serving ``regions`` consumes: the sweep queue and one per region."""
    return [DEFAULT_QUEUE, *(region_queue(r) for r in regions)]


def build_context(settings: ProviderSettings, *, metrics: ReconcileMetrics | None = None) -> ProviderContext:
    """The production context: the database of the settings, drivers from the clouds.yaml; passes and
    steps recorded on ``metrics`` (a registry of its own unless given)."""
    from kaas_core.db.session import make_engine, make_session_factory
    from kaas_core.security import SecretBox
    from provider.cloud.registry import DriverRegistry

    registry = DriverRegistry(settings.clouds_yaml)
    return ProviderContext(
        session_factory=make_session_factory(make_engine(settings.database_url)),
        driver_factory=registry.get,
        secret_box=SecretBox(settings.secret_key),
        tunnel_url=settings.tunnel_url,
        agent_image=settings.agent_image,
        addons=tunnel_applier_factory(assertion_key(settings.tunnel_internal_secret.get_secret_value()))
        if settings.manage_addons
        else None,
        addon_catalog=tuple(addon for addon in ADDONS if addon.name not in settings.addons_left_out),
        # drains need a way into the cluster, which is what add-ons go through too
        node_ops=tunnel_node_ops_factory(assertion_key(settings.tunnel_internal_secret.get_secret_value()))
        if settings.manage_addons
        else None,
        limits=ReconcileLimits.from_settings(settings),
        rollout_defaults=RolloutPolicy(
            drain_timeout=timedelta(seconds=settings.drain_timeout_seconds),
            node_ready_timeout=timedelta(seconds=settings.node_ready_timeout_seconds),
        ),
        health_policy=HealthPolicy(
            unhealthy_after=timedelta(seconds=settings.node_unhealthy_seconds),
            max_unhealthy_percent=settings.max_unhealthy_percent,
        ),
        autoscale_scale_down_after=timedelta(seconds=settings.autoscale_scale_down_after_seconds),
        webhooks=WebhookLimits.from_settings(settings),
        require_agent=settings.require_agent,
        metrics=metrics if metrics is not None else ReconcileMetrics(),
    )


class ProviderCelery(Celery):  # type: ignore[misc]
    """A Celery app that carries the provider's settings, its (lazily built) context and its metrics."""

    def __init__(
        self,
        settings: ProviderSettings,
        context: ProviderContext | None,
        *,
        metrics: ReconcileMetrics | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if context is not None and metrics is not None and context.metrics is not metrics:
            raise ValueError("pass the metrics in the context, or no context")
        self.provider_settings = settings
        self._provider_context = context
        # what ``kaas worker --metrics-port`` serves: the context's, built or given
        self.provider_metrics = context.metrics if context is not None else metrics or ReconcileMetrics()
        self._context_lock = threading.Lock()

    def provider_context(self) -> ProviderContext:
        with self._context_lock:
            if self._provider_context is None:
                self._provider_context = build_context(self.provider_settings, metrics=self.provider_metrics)
            return self._provider_context

    def provider_regions(self) -> list[str]:
        return list(self.provider_settings.regions)


def make_celery(
    settings: ProviderSettings,
    *,
    context: ProviderContext | None = None,
    regions: Iterable[str] | None = None,
    metrics: ReconcileMetrics | None = None,
) -> ProviderCelery:
    """The provider app. ``regions`` (default ``settings.regions``) declares the region queues;
    ``metrics`` is where a context built from ``settings`` records (``kaas up`` shares the API's registry).
    """
    region_names = list(settings.regions if regions is None else regions)
    app = ProviderCelery(
        settings,
        context,
        metrics=metrics,
        main="kaas-provider",
        broker=settings.broker_url,
        backend=settings.result_backend,
        set_as_current=False,
    )
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_reject_on_worker_lost=True,
        task_ignore_result=settings.result_backend is None,
        task_default_queue=DEFAULT_QUEUE,
        task_queues=[Queue(q) for q in worker_queues(region_names)],  # type: ignore[no-untyped-call]
        task_routes={SWEEP_TASK: {"queue": DEFAULT_QUEUE}},
        task_create_missing_queues=True,
        # Redis only: how long a reserved, unacknowledged message stays invisible (see the settings)
        broker_transport_options={"visibility_timeout": settings.broker_visibility_timeout_seconds},
        beat_schedule=global_entries(settings),  # the per-region entries come from the database
        beat_scheduler="provider.beat:RegionalScheduler",
        # beat wakes at least this often, so a due-scan is never late by more than its own interval
        beat_max_loop_interval=settings.due_scan_interval_seconds,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_concurrency=settings.worker_concurrency,
        enable_utc=True,
        timezone="UTC",
    )
    register_tasks(app)
    connect_request_id_signals()
    return app


def app_from_env() -> ProviderCelery:
    """For the ``celery`` command line: settings from the environment."""
    settings = ProviderSettings()
    settings.validate_for_production()
    return make_celery(settings)


@dataclass
class EmbeddedWorker:
    """A worker (and optionally beat) running in threads of this process. ``stop()`` ends both."""

    worker: WorkController
    thread: threading.Thread
    beat: Any | None

    def stop(self, *, timeout: float = 15.0) -> None:
        if self.beat is not None:
            self.beat.stop()
            self.beat.join(timeout)
        # A warm shutdown, the way Celery's own embedded test worker stops: the consumer loop checks the
        # flag, then the pool finishes the running tasks and shuts its threads down.
        state.should_stop = 0
        self.thread.join(timeout)
        state.should_stop = None
        if self.thread.is_alive():
            raise RuntimeError("the embedded Celery worker did not stop in time")
        executor = getattr(getattr(self.worker, "pool", None), "executor", None)
        if executor is not None:
            executor.shutdown(wait=True)


class _ReadyWorkController(WorkController):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: Any) -> None:
        self.ready.set()


def run_embedded_worker(
    app: Celery,
    *,
    queues: list[str],
    concurrency: int | None = None,
    beat: bool = False,
    start_timeout: float = 30.0,
) -> EmbeddedWorker:
    """Start a thread-pool worker consuming ``queues`` (and beat when asked) in daemon threads.

    One embedded worker per process: stopping uses Celery's process-wide termination flag.
    """
    app.finalize()
    worker = _ReadyWorkController(
        app=app,
        hostname=anon_nodename(),
        pool="threads",
        concurrency=concurrency or app.conf.worker_concurrency or 4,
        queues=queues,
        loglevel="WARNING",
        ready_callback=None,
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
    )

    def run() -> None:
        app.set_current()  # the worker's consumer resolves tasks through the current app of its thread
        worker.start()

    app.set_default()
    thread = threading.Thread(target=run, name="kaas-provider-worker", daemon=True)
    thread.start()
    if not worker.ready.wait(start_timeout):
        raise RuntimeError("the embedded Celery worker did not start in time")
    beat_thread = None
    if beat:
        beat_thread = EmbeddedService(app, thread=True, scheduler_cls=RegionalScheduler)
        beat_thread.start()
    return EmbeddedWorker(worker=worker, thread=thread, beat=beat_thread)
