"""The webhook outbox: delivery rows written in the same transaction that finishes or pauses an operation.

Called by ``provider.reconciler.reconcile`` right after it marks an operation succeeded or failed
(``record_operation_finished``), and by the rollout when it pauses one (``record_operation_paused``), inside
the pass's one transaction: a rolled-back pass leaves no notification behind, a committed one always has
its rows. The pass returns the new delivery ids and the task ``provider.reconcile_cluster`` sends
``provider.deliver_webhook`` for each only after the commit (``provider.tasks``). ``due_deliveries`` is
the sweep's side: pending deliveries whose time has come, so a lost message is repaired.

An operation superseded by a newer one is finished as failed without a notification: the newer operation
reports the outcome. A webhook hears of an operation's pause once (one delivery per webhook, operation and
event): a second pause of the same operation, after a resume, notifies nobody; its reason is on the
operation (``GET /v1/operations/{id}``).
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
    """The JSON document a webhook receives. Stored on the delivery, so every attempt sends the same. A
    pause carries its reason; its ``timestamp`` is when it was recorded (the operation has not finished)."""
    finished_at = operation.finished_at or now
    payload: dict[str, Any] = {
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
    if event is WebhookEvent.OPERATION_PAUSED:
        payload["operation"]["finished_at"] = None
        payload["operation"]["paused_reason"] = operation.paused_reason
    return payload


def record_operation_finished(
    session: Session, operation: Operation | None, cluster: Cluster, *, now: datetime
) -> tuple[str, ...]:
    """Add one pending delivery per enabled webhook of the project subscribed to the operation's outcome.

    No commit, no flush: the caller's transaction carries the rows. Returns the new delivery ids (to send
    after the commit); empty when the operation is not finished or nobody listens.
    """
    if operation is None or operation.state not in EVENT_OF_STATE:
        return ()
    return _record(session, operation, cluster, event=EVENT_OF_STATE[operation.state], now=now)


def record_operation_paused(
    session: Session, operation: Operation | None, cluster: Cluster, *, now: datetime
) -> tuple[str, ...]:
    """Add one pending ``operation.paused`` delivery per enabled, subscribed webhook that has not heard of
    this operation's pause yet. Call it in the pass that set the operation paused (with its reason); the
    same contract as ``record_operation_finished``."""
    if operation is None or operation.state != OperationState.PAUSED.value:
        return ()
    return _record(session, operation, cluster, event=WebhookEvent.OPERATION_PAUSED, now=now)


def _record(
    session: Session, operation: Operation, cluster: Cluster, *, event: WebhookEvent, now: datetime
) -> tuple[str, ...]:
    webhooks = session.scalars(
        select(Webhook)
        .where(Webhook.project_id == operation.project_id, Webhook.enabled.is_(True))
        .order_by(Webhook.created_at, Webhook.id)
    ).all()
    subscribed = [webhook for webhook in webhooks if event.value in (webhook.events or [])]
    if not subscribed:
        return ()
    # the unique (webhook, operation, event) row: an event already recorded is not recorded again (a pause
    # after a resume; the rows of this very transaction are found too, autoflush)
    told = set(
        session.scalars(
            select(WebhookDelivery.webhook_id).where(
                WebhookDelivery.operation_id == operation.id, WebhookDelivery.event == event.value
            )
        )
    )
    subscribed = [webhook for webhook in subscribed if webhook.id not in told]
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
