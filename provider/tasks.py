"""The provider's Celery tasks. They take ids, reload rows, run one bounded pass, and re-queue themselves.

- ``provider.reconcile_cluster(cluster_id, ticket=None)``: sent by the API after its commit (queue
  ``region.<name>``, no ticket), by the due-scan, and by itself with a countdown while the cluster is not
  converged (both with the cluster's reconcile ticket: a superseded message is dropped). Never sleeps.
- ``provider.due_scan(region_name)``: from beat, every few seconds, one per region on that region's queue;
  queues a reconcile of every overdue cluster of the region (``provider.reconciler.due``).
- ``provider.sweep_leaks(region_name)``: from beat, one per region on that region's queue; deletes
  resources of clusters not in the DB and records the cloud's capacity.
- ``provider.observe_region(region_name)``: from beat, one per region on that region's queue, every sweep
  interval; lists the region's cloud once and queues a pass of every running cluster that drifted
  (``provider.reconciler.observe``).
- ``provider.sweep()``: from beat, on the ``provider`` queue; database only, so whichever worker takes it
  covers every region: gives a due time to clusters left without one, and sends the webhook deliveries
  that are due (their message was lost).
- ``provider.deliver_webhook(delivery_id)``: on the ``provider`` queue; sent by the reconcile task after the
  commit that finished an operation, by itself with a countdown to retry, and by the sweep for due ones.

The process-wide ``ProviderContext`` comes from the app (``provider.celery_app.ProviderCelery``), which
``register_tasks`` binds the tasks to.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterable
from typing import Any

from celery import Celery
from sqlalchemy import select

from kaas_core.db.models import Region
from kaas_core.tasks import (
    DELIVER_WEBHOOK_TASK,
    DUE_SCAN_TASK,
    OBSERVE_REGION_TASK,
    RECONCILE_TASK,
    SWEEP_LEAKS_TASK,
    SWEEP_TASK,
    WEBHOOK_QUEUE,
)
from provider.cloud.errors import CloudError
from provider.reconciler.context import ProviderContext
from provider.reconciler.due import make_undated_clusters_due, queue_due_clusters
from provider.reconciler.observe import observe_region as observe_region_once
from provider.reconciler.reconcile import reconcile_cluster_once
from provider.reconciler.sweep import clean_leaked_resources, observe_capacity
from provider.rollout.automatic import start_automatic_upgrades
from provider.webhooks.delivery import deliver_once
from provider.webhooks.outbox import due_deliveries

logger = logging.getLogger(__name__)


def _context(task: Any) -> ProviderContext:
    context: ProviderContext = task.app.provider_context()
    return context


def _worker_id() -> str:
    """Unique per pass (two passes never share a lease, even in one thread of one process), and it names
    the process, so an operator (or the chaos test) can tell whose lease a cluster is under."""
    return f"{socket.gethostname()[:32]}/{os.getpid()}/{uuid.uuid4().hex[:12]}"


def _queue_of(task: Any) -> str | None:
    info = task.request.delivery_info or {}
    routing_key = info.get("routing_key")
    return str(routing_key) if routing_key else None


def reconcile_cluster(self: Any, cluster_id: str, ticket: int | None = None) -> dict[str, Any]:
    ctx = _context(self)
    try:
        result = reconcile_cluster_once(ctx, cluster_id, worker_id=_worker_id(), ticket=ticket)
    except Exception:
        # A bug or a database outage: nothing was written, and the pass gave its cluster a due time (if the
        # database let it): the due-scan tries again rather than lose the cluster.
        logger.exception("reconcile of cluster %s crashed", cluster_id)
        raise
    if result.requeue_after is not None:
        self.app.send_task(
            RECONCILE_TASK,
            args=[cluster_id],
            kwargs={"ticket": result.ticket},
            queue=result.queue or _queue_of(self),
            countdown=result.requeue_after,
        )
    _send_deliveries(self.app, result.deliveries)
    logger.info("reconcile %s: %s %s", cluster_id, result.outcome, result.message)
    return {"outcome": result.outcome, "requeue_after": result.requeue_after, "message": result.message}


def due_scan(self: Any, region_name: str) -> dict[str, Any]:
    ctx = _context(self)

    def enqueue(cluster_id: str, ticket: int, queue: str) -> None:
        self.app.send_task(RECONCILE_TASK, args=[cluster_id], kwargs={"ticket": ticket}, queue=queue)

    claimed = queue_due_clusters(
        ctx.session_factory,
        region_name,
        enqueue=enqueue,
        now=ctx.clock(),
        grace_seconds=ctx.limits.requeue_grace_seconds,
        limit=ctx.limits.due_scan_batch,
    )
    if claimed:
        logger.info("due-scan of region %s queued %d cluster(s)", region_name, len(claimed))
    return {"region": region_name, "queued": len(claimed)}


def observe_region(self: Any, region_name: str) -> dict[str, Any]:
    ctx = _context(self)
    with ctx.session_factory() as session:
        cloud = session.scalars(select(Region.cloud).where(Region.name == region_name)).one_or_none()
    if cloud is None:
        return {"region": region_name, "clusters": 0, "drifted": 0}

    def enqueue(cluster_id: str, ticket: int, queue: str) -> None:
        self.app.send_task(RECONCILE_TASK, args=[cluster_id], kwargs={"ticket": ticket}, queue=queue)

    try:
        seen = observe_region_once(
            ctx.session_factory,
            region_name,
            ctx.driver(cloud),
            enqueue=enqueue,
            now=ctx.clock(),
            grace_seconds=ctx.limits.requeue_grace_seconds,
            limit=ctx.limits.due_scan_batch,
        )
    except CloudError:
        logger.warning("observing region %s failed; the next observation retries", region_name, exc_info=True)
        return {"region": region_name, "clusters": 0, "drifted": 0}
    # the benchmark reads this line (benchmarks/control_plane.py)
    logger.info(
        "observed region %s: %d running cluster(s), %d drifted, %d queued, %d cloud call(s) in %.2fs",
        region_name,
        seen.clusters,
        len(seen.drifted),
        len(seen.queued),
        seen.cloud_calls,
        seen.seconds,
    )
    return {"region": region_name, "clusters": seen.clusters, "drifted": len(seen.drifted)}


def _send_deliveries(app: Any, delivery_ids: Iterable[str]) -> None:
    """Queue webhook deliveries whose rows are committed; a lost message is re-sent by the sweep."""
    for delivery_id in delivery_ids:
        try:
            app.send_task(DELIVER_WEBHOOK_TASK, args=[delivery_id], queue=WEBHOOK_QUEUE)
        except Exception:
            logger.warning("could not queue webhook delivery %s; the sweep will", delivery_id, exc_info=True)


def deliver_webhook(self: Any, delivery_id: str) -> dict[str, Any]:
    ctx = _context(self)
    result = deliver_once(ctx.session_factory, delivery_id, secret_box=ctx.secret_box, limits=ctx.webhooks)
    if result.retry_after is not None:
        self.app.send_task(
            DELIVER_WEBHOOK_TASK, args=[delivery_id], queue=WEBHOOK_QUEUE, countdown=result.retry_after
        )
    logger.info("webhook delivery %s: %s", delivery_id, result.outcome)
    return {"outcome": result.outcome, "retry_after": result.retry_after, "status_code": result.status_code}


def sweep(self: Any) -> dict[str, Any]:
    ctx = _context(self)
    undated = make_undated_clusters_due(
        ctx.session_factory, now=ctx.clock(), running_observed_in_bulk=not ctx.require_agent
    )
    if undated:
        logger.warning("the sweep made %d undated cluster(s) due; the due-scans queue them", undated)
    deliveries = due_deliveries(ctx.session_factory)
    _send_deliveries(self.app, deliveries)
    return {"made_due": undated, "webhook_deliveries": len(deliveries)}


def sweep_leaks(self: Any, region_name: str) -> list[str]:
    ctx = _context(self)
    with ctx.session_factory() as session:
        cloud = session.scalars(select(Region.cloud).where(Region.name == region_name)).one_or_none()
    if cloud is None:
        return []
    try:
        observe_capacity(ctx.session_factory, region_name, ctx.driver(cloud))
    except CloudError:
        logger.warning(
            "reading the capacity of region %s failed; the next sweep retries",
            region_name,
            exc_info=True,
        )
    started = start_automatic_upgrades(ctx.session_factory, region_name, now=ctx.clock())
    if started:
        logger.info("started automatic upgrades of clusters %s in region %s", started, region_name)
    try:
        leaked = clean_leaked_resources(ctx.session_factory, ctx.driver(cloud))
    except CloudError:
        logger.warning("leak sweep of region %s failed; the next sweep retries", region_name, exc_info=True)
        return []
    if leaked:
        logger.info("deleted leaked resources of clusters %s in region %s", leaked, region_name)
    return leaked


def register_tasks(app: Celery) -> None:
    """Bind the tasks to ``app`` (a ``ProviderCelery``), so ``self.app`` inside them is that app."""
    app.task(name=RECONCILE_TASK, bind=True, acks_late=True, ignore_result=True, shared=False)(
        reconcile_cluster
    )
    app.task(name=DUE_SCAN_TASK, bind=True, ignore_result=True, shared=False)(due_scan)
    app.task(name=OBSERVE_REGION_TASK, bind=True, ignore_result=True, shared=False)(observe_region)
    app.task(name=SWEEP_TASK, bind=True, ignore_result=True, shared=False)(sweep)
    app.task(name=SWEEP_LEAKS_TASK, bind=True, acks_late=True, ignore_result=True, shared=False)(sweep_leaks)
    app.task(name=DELIVER_WEBHOOK_TASK, bind=True, acks_late=True, ignore_result=True, shared=False)(
        deliver_webhook
    )
