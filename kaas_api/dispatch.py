"""Queuing provider work by task name, only after the request's transaction committed.

``TaskDispatcher`` is the interface the API depends on; ``CeleryDispatcher`` sends
``provider.reconcile_cluster`` and ``provider.deliver_webhook`` by name (the API never imports
``provider``), with the current request id in the message header ``kaas_request_id`` so the worker's log
lines carry it too. ``UnitOfWork`` is the per-request object: services ``flush()`` and ask for reconciles
(and endpoints for webhook deliveries) on it; ``kaas_api.deps`` commits it and only then sends what was
asked for. A rollback drops the requests.
"""

from __future__ import annotations

import logging
from typing import Protocol

import celery
from sqlalchemy.orm import Session

from kaas_core.request_context import current_request_id
from kaas_core.tasks import DELIVER_WEBHOOK_TASK, RECONCILE_TASK, REQUEST_ID_TASK_HEADER, WEBHOOK_QUEUE

log = logging.getLogger(__name__)


class TaskDispatcher(Protocol):
    def send_reconcile(self, cluster_id: str, *, queue: str) -> None: ...

    def send_webhook_delivery(self, delivery_id: str) -> None: ...

    def ping(self) -> bool: ...


def _headers() -> dict[str, str] | None:
    request_id = current_request_id()
    return {REQUEST_ID_TASK_HEADER: request_id} if request_id is not None else None


class CeleryDispatcher:
    """Sends tasks by name through a Celery app's broker connection."""

    def __init__(self, celery_app: celery.Celery) -> None:
        self._celery = celery_app

    def send_reconcile(self, cluster_id: str, *, queue: str) -> None:
        self._celery.send_task(RECONCILE_TASK, args=[cluster_id], queue=queue, headers=_headers())

    def send_webhook_delivery(self, delivery_id: str) -> None:
        self._celery.send_task(
            DELIVER_WEBHOOK_TASK, args=[delivery_id], queue=WEBHOOK_QUEUE, headers=_headers()
        )

    def ping(self) -> bool:
        try:
            with self._celery.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
        except Exception:  # any broker failure means "not ready"; readiness reports, never raises
            log.warning("broker ping failed", exc_info=True)
            return False
        return True


class UnitOfWork:
    """One request's session plus the reconciles to send once its transaction has committed."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._reconciles: dict[str, str] = {}  # cluster id -> queue; one message per cluster is enough
        self._deliveries: dict[str, None] = {}  # webhook delivery ids, in order, once each

    def reconcile_after_commit(self, cluster_id: str, *, queue: str) -> None:
        self._reconciles[cluster_id] = queue

    def deliver_after_commit(self, delivery_id: str) -> None:
        self._deliveries[delivery_id] = None

    @property
    def pending_reconciles(self) -> list[tuple[str, str]]:
        return list(self._reconciles.items())

    def commit(self, dispatcher: TaskDispatcher) -> None:
        """Commit, then send the reconciles. A lost message is repaired by the periodic sweep, so a
        broker failure after the commit is logged rather than turned into an error for a change that
        is already stored."""
        self.session.commit()
        reconciles, self._reconciles = self._reconciles, {}
        for cluster_id, queue in reconciles.items():
            try:
                dispatcher.send_reconcile(cluster_id, queue=queue)
            except Exception:
                log.warning("could not queue reconcile of cluster %s on %s", cluster_id, queue, exc_info=True)
        deliveries, self._deliveries = self._deliveries, {}
        for delivery_id in deliveries:
            try:
                dispatcher.send_webhook_delivery(delivery_id)
            except Exception:
                log.warning("could not queue webhook delivery %s; the sweep will", delivery_id, exc_info=True)

    def rollback(self) -> None:
        self._reconciles = {}
        self._deliveries = {}
        self.session.rollback()
