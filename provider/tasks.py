"""The provider's Celery tasks. They take ids, reload rows, run one bounded pass, and re-queue themselves.

- ``provider.reconcile_cluster(cluster_id)``: sent by the API after its commit (queue ``region.<name>``),
  by the sweep, and by itself with a countdown while the cluster is not converged. Never sleeps.
- ``provider.sweep()``: from beat; queues reconciles, one ``provider.sweep_leaks`` per region, and the
  webhook deliveries that are due (their message was lost).
- ``provider.sweep_leaks(region_name)``: on the region's queue; deletes resources of clusters not in the DB.
- ``provider.deliver_webhook(delivery_id)``: on the ``provider`` queue; sent by the reconcile task after the
  commit that finished an operation, by itself with a countdown to retry, and by the sweep for due ones.

The process-wide ``ProviderContext`` comes from the app (``provider.celery_app.ProviderCelery``), which
``register_tasks`` binds the tasks to.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterable
from typing import Any

from celery import Celery
from sqlalchemy import select

from kaas_core.db.models import Region
from kaas_core.tasks import (
    DELIVER_WEBHOOK_TASK,
    RECONCILE_TASK,
    SWEEP_LEAKS_TASK,
    SWEEP_TASK,
    WEBHOOK_QUEUE,
    region_queue,
)
from provider.cloud.errors import CloudError
from provider.reconciler.context import ProviderContext
from provider.reconciler.reconcile import reconcile_cluster_once
from provider.reconciler.sweep import clean_leaked_resources, observe_capacity, sweep_clusters
from provider.webhooks.delivery import deliver_once
from provider.webhooks.outbox import due_deliveries

logger = logging.getLogger(__name__)



def _context(task: Any) -> ProviderContext:
    context: ProviderContext = task.app.provider_context()
    return context


def _worker_id() -> str:
    """Unique per pass: two passes never share a lease, even in one thread of one process."""
    return f"{socket.gethostname()[:40]}/{uuid.uuid4().hex[:16]}"


def _queue_of(task: Any) -> str | None:
    info = task.request.delivery_info or {}
    routing_key = info.get("routing_key")
    return str(routing_key) if routing_key else None


def reconcile_cluster(self: Any, cluster_id: str) -> dict[str, Any]:
    ctx = _context(self)
    try:
        result = reconcile_cluster_once(ctx, cluster_id, worker_id=_worker_id())
    except Exception:
        # A bug or a database outage: nothing was written. Try again later rather than lose the cluster.
        logger.exception("reconcile of cluster %s crashed", cluster_id)
        self.app.send_task(
            RECONCILE_TASK, args=[cluster_id], queue=_queue_of(self), countdown=ctx.limits.retry_max_seconds
        )
        raise
    if result.requeue_after is not None:
        self.app.send_task(
            RECONCILE_TASK,
            args=[cluster_id],
            queue=result.queue or _queue_of(self),
            countdown=result.requeue_after,
        )
    _send_deliveries(self.app, result.deliveries)
    logger.info("reconcile %s: %s %s", cluster_id, result.outcome, result.message)
    return {"outcome": result.outcome, "requeue_after": result.requeue_after, "message": result.message}


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
    served = self.app.provider_regions()

    def enqueue(cluster_id: str, queue: str) -> None:
        self.app.send_task(RECONCILE_TASK, args=[cluster_id], queue=queue)

    report = sweep_clusters(
        ctx.session_factory,
        enqueue=enqueue,
        stale_after_seconds=ctx.limits.stale_after_seconds,
        regions=set(served) if served else None,
    )
    for region_name in report.regions:
        self.app.send_task(SWEEP_LEAKS_TASK, args=[region_name], queue=region_queue(region_name))
    deliveries = due_deliveries(ctx.session_factory)
    _send_deliveries(self.app, deliveries)
    return {"queued": len(report.queued), "regions": report.regions, "webhook_deliveries": len(deliveries)}


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
    app.task(name=SWEEP_TASK, bind=True, ignore_result=True, shared=False)(sweep)
    app.task(name=SWEEP_LEAKS_TASK, bind=True, acks_late=True, ignore_result=True, shared=False)(sweep_leaks)
    app.task(name=DELIVER_WEBHOOK_TASK, bind=True, acks_late=True, ignore_result=True, shared=False)(
        deliver_webhook
    )
