"""The webhook outbox: delivery rows written in the same transaction that finishes an operation.

Called by ``provider.reconciler.reconcile`` right after it marks an operation succeeded or failed, inside
the pass's one transaction: a rolled-back pass leaves no notification behind, a committed one always has
its rows. The pass returns the new delivery ids and the task ``provider.reconcile_cluster`` sends
``provider.deliver_webhook`` for each only after the commit (``provider.tasks``). ``due_deliveries`` is
the sweep's side: pending deliveries whose time has come, so a lost message is repaired.

An operation superseded by a newer one is finished as failed without a notification: the newer operation
reports the outcome.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import (
    Cluster,
    DeliveryState,
    Operation,
    OperationState,
    Project,
    Webhook,
    WebhookDelivery,
    WebhookEvent,
    new_id,
    rfc3339,
    utcnow,
)

EVENT_OF_STATE = {
    OperationState.SUCCEEDED.value: WebhookEvent.OPERATION_SUCCEEDED,
    OperationState.FAILED.value: WebhookEvent.OPERATION_FAILED,
}


def build_payload(
    *,
    event: WebhookEvent,
    delivery_id: str,
    operation: Operation,
    cluster: Cluster,
    project_name: str,
    now: datetime,
) -> dict[str, Any]:
    """The JSON document a webhook receives. Stored on the delivery, so every attempt sends the same."""
    finished_at = operation.finished_at or now
    return {
        "event": event.value,
        "delivery_id": delivery_id,
        "timestamp": rfc3339(finished_at),
        "project": {"id": operation.project_id, "name": project_name},
        "cluster": {"id": cluster.id, "name": cluster.name},
        "operation": {
            "id": operation.id,
            "kind": operation.kind,
            "state": operation.state,
            "error": operation.error,
            "started_at": rfc3339(operation.started_at) if operation.started_at else None,
            "finished_at": rfc3339(finished_at),
        },
    }


def record_operation_finished(
    session: Session, operation: Operation | None, cluster: Cluster, *, now: datetime
) -> tuple[str, ...]:
    """Add one pending delivery per enabled webhook of the project subscribed to the operation's outcome.

    No commit, no flush: the caller's transaction carries the rows. Returns the new delivery ids (to send
    after the commit); empty when the operation is not finished or nobody listens.
    """
    if operation is None or operation.state not in EVENT_OF_STATE:
        return ()
    event = EVENT_OF_STATE[operation.state]
    webhooks = session.scalars(
        select(Webhook)
        .where(Webhook.project_id == operation.project_id, Webhook.enabled.is_(True))
        .order_by(Webhook.created_at, Webhook.id)
    ).all()
    subscribed = [webhook for webhook in webhooks if event.value in (webhook.events or [])]
    if not subscribed:
        return ()
    project_name = session.scalar(select(Project.name).where(Project.id == operation.project_id)) or ""
    ids = []
    for webhook in subscribed:
        delivery_id = new_id()
        session.add(
            WebhookDelivery(
                id=delivery_id,
                webhook_id=webhook.id,
                project_id=operation.project_id,
                operation_id=operation.id,
                cluster_id=cluster.id,
                event=event.value,
                payload=build_payload(
                    event=event,
                    delivery_id=delivery_id,
                    operation=operation,
                    cluster=cluster,
                    project_name=project_name,
                    now=now,
                ),
                state=DeliveryState.PENDING.value,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
        ids.append(delivery_id)
    return tuple(ids)


def due_deliveries(
    session_factory: sessionmaker[Session], *, now: datetime | None = None, limit: int = 500
) -> list[str]:
    """Pending deliveries whose next attempt is due (oldest first): their message may have been lost.

    Sending one twice is harmless: the delivery task claims a delivery before it sends, so only one
    message per due attempt gets through.
    """
    now = now or utcnow()
    with session_factory() as session:
        return list(
            session.scalars(
                select(WebhookDelivery.id)
                .where(
                    WebhookDelivery.state == DeliveryState.PENDING.value,
                    or_(WebhookDelivery.next_attempt_at.is_(None), WebhookDelivery.next_attempt_at <= now),
                )
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(limit)
            ).all()
        )
