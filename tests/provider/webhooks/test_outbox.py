"""The webhook outbox's pause notification: ``record_operation_paused`` writes one delivery per subscribed
webhook, with the reason, once per operation."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import (
    Cluster,
    Operation,
    OperationKind,
    OperationState,
    Webhook,
    WebhookDelivery,
    WebhookEvent,
    utcnow,
)
from provider.webhooks.outbox import record_operation_finished, record_operation_paused
from tests.provider.factories import create_cluster

ALL = [event.value for event in WebhookEvent]


def paused_upgrade(session: Session, cluster_id: str) -> Operation:
    cluster = session.get_one(Cluster, cluster_id)
    operation = Operation(
        cluster_id=cluster.id,
        project_id=cluster.project_id,
        kind=OperationKind.UPGRADE.value,
        state=OperationState.PAUSED.value,
        paused_reason="node demo-p1-x not Ready within 600s",
        started_at=utcnow(),
    )
    session.add(operation)
    session.flush()
    return operation


def add_webhook(session: Session, cluster_id: str, events: list[str], *, enabled: bool = True) -> Webhook:
    cluster = session.get_one(Cluster, cluster_id)
    webhook = Webhook(
        project_id=cluster.project_id,
        url="https://hooks.example.com/kaas",
        secret_encrypted="x",
        events=events,
        enabled=enabled,
    )
    session.add(webhook)
    session.flush()
    return webhook


def test_a_paused_operation_notifies_the_subscribed_webhooks_with_its_reason(
    session_factory: sessionmaker[Session],
) -> None:
    created = create_cluster(session_factory)
    with session_factory() as session:
        listening = add_webhook(session, created.id, ALL)
        add_webhook(session, created.id, ["operation.failed"])  # not subscribed to pauses
        add_webhook(session, created.id, ALL, enabled=False)
        operation = paused_upgrade(session, created.id)
        cluster = session.get_one(Cluster, created.id)
        ids = record_operation_paused(session, operation, cluster, now=utcnow())
        session.flush()
        deliveries = session.scalars(select(WebhookDelivery)).all()
        assert [d.id for d in deliveries] == list(ids)
        assert [d.webhook_id for d in deliveries] == [listening.id]
        payload = deliveries[0].payload
        assert (deliveries[0].event, payload["event"]) == ("operation.paused", "operation.paused")
        assert payload["operation"]["state"] == "paused"
        assert payload["operation"]["paused_reason"] == "node demo-p1-x not Ready within 600s"
        assert payload["operation"]["finished_at"] is None
        session.rollback()


def test_a_second_pause_of_the_same_operation_notifies_nobody_again(
    session_factory: sessionmaker[Session],
) -> None:
    created = create_cluster(session_factory)
    with session_factory() as session:
        add_webhook(session, created.id, ALL)
        operation = paused_upgrade(session, created.id)
        cluster = session.get_one(Cluster, created.id)
        assert len(record_operation_paused(session, operation, cluster, now=utcnow())) == 1
        session.commit()
        assert record_operation_paused(session, operation, cluster, now=utcnow()) == ()
        session.commit()  # would break the unique (webhook, operation, event) constraint otherwise
        assert len(session.scalars(select(WebhookDelivery)).all()) == 1


def test_an_operation_that_is_not_paused_notifies_no_pause(session_factory: sessionmaker[Session]) -> None:
    created = create_cluster(session_factory)
    with session_factory() as session:
        add_webhook(session, created.id, ALL)
        operation = paused_upgrade(session, created.id)
        operation.state = OperationState.RUNNING.value
        cluster = session.get_one(Cluster, created.id)
        assert record_operation_paused(session, operation, cluster, now=utcnow()) == ()
        assert record_operation_paused(session, None, cluster, now=utcnow()) == ()


def test_a_finished_operation_still_notifies_its_outcome_after_a_pause(
    session_factory: sessionmaker[Session],
) -> None:
    created = create_cluster(session_factory)
    with session_factory() as session:
        add_webhook(session, created.id, ALL)
        operation = paused_upgrade(session, created.id)
        cluster = session.get_one(Cluster, created.id)
        record_operation_paused(session, operation, cluster, now=utcnow())
        operation.state = OperationState.SUCCEEDED.value
        operation.finished_at = utcnow()
        assert len(record_operation_finished(session, operation, cluster, now=utcnow())) == 1
        session.commit()
        events = sorted(session.scalars(select(WebhookDelivery.event)).all())
        assert events == ["operation.paused", "operation.succeeded"]
