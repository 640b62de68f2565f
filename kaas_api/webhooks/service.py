"""Webhooks of a project: create (with a secret shown once), list, read, change, delete, and their
deliveries, which may be sent again (``redeliver``).

Called by ``kaas_api.webhooks.endpoints``. Flushes only; the request's unit of work commits. The secret is
stored only encrypted with ``SecretBox`` (the provider decrypts it to sign; it is never returned after
creation, never logged). Deliveries are written and sent by the provider (``provider.webhooks``); this
module only reads them. Raises domain errors only.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from kaas_api.errors import Conflict, InvalidInput, NotFound
from kaas_api.validation import is_uuid
from kaas_core.db.models import DeliveryState, Project, User, Webhook, WebhookDelivery, WebhookEvent, utcnow
from kaas_core.egress import EgressPolicy, EgressRefused, literal_address
from kaas_core.security import SecretBox, generate_token

WEBHOOK_SECRET_PREFIX = "kaaswh_"  # noqa: S105 (a prefix, not a secret)
MAX_WEBHOOKS_PER_PROJECT = 20
DELIVERIES_MAX_LIMIT = 200


def create_webhook(
    session: Session,
    *,
    project: Project,
    url: str,
    events: Sequence[WebhookEvent],
    secret: str | None,
    created_by: User,
    secret_box: SecretBox,
    egress: EgressPolicy,
) -> tuple[Webhook, str]:
    """A new enabled webhook; returns it and its secret (generated when ``secret`` is None), never stored."""
    _check_receiver(url, egress)
    count = session.scalar(select(func.count()).select_from(Webhook).where(Webhook.project_id == project.id))
    if (count or 0) >= MAX_WEBHOOKS_PER_PROJECT:
        raise Conflict(
            f"project {project.name!r} already has {MAX_WEBHOOKS_PER_PROJECT} webhooks: delete one first",
            detail={"limit": MAX_WEBHOOKS_PER_PROJECT},
        )
    plain = secret if secret is not None else generate_token(WEBHOOK_SECRET_PREFIX)
    ordered = _event_values(events)
    webhook = Webhook(
        project_id=project.id,
        url=url,
        secret_encrypted=secret_box.encrypt(plain),
        events=ordered,
        enabled=True,
        created_by=created_by.id,
        created_at=utcnow(),
    )
    session.add(webhook)
    session.flush()
    return webhook, plain


def _creator_names(session: Session, webhooks: Sequence[Webhook]) -> dict[str, str]:
    ids = {w.created_by for w in webhooks if w.created_by is not None}
    if not ids:
        return {}
    return dict(session.execute(select(User.id, User.name).where(User.id.in_(ids))).all())


def list_webhooks(session: Session, project: Project) -> list[tuple[Webhook, str | None]]:
    """The project's webhooks, oldest first, each with its creator's name."""
    webhooks = list(
        session.scalars(
            select(Webhook).where(Webhook.project_id == project.id).order_by(Webhook.created_at, Webhook.id)
        )
    )
    names = _creator_names(session, webhooks)
    return [(w, names.get(w.created_by) if w.created_by else None) for w in webhooks]


def get_webhook(session: Session, project: Project, webhook_id: str) -> tuple[Webhook, str | None]:
    """One webhook of the project; another project's (or none) answers 404."""
    webhook = session.get(Webhook, webhook_id) if is_uuid(webhook_id) else None
    if webhook is None or webhook.project_id != project.id:
        raise NotFound(f"webhook {webhook_id[:80]!r} not found in project {project.name!r}")
    return webhook, _creator_names(session, [webhook]).get(webhook.created_by or "")


def _event_values(events: Sequence[WebhookEvent]) -> list[str]:
    """The events as stored: each once, in the enum's order."""
    wanted = set(events)
    return [event.value for event in WebhookEvent if event in wanted]


def _check_receiver(url: str, egress: EgressPolicy) -> None:
    """A receiver given as an IP address the egress policy refuses is a 422 now; a host name is checked by
    the provider at each delivery, against what it resolves to then."""
    host = urlsplit(url).hostname or ""
    address = literal_address(host)
    if address is None:
        return
    try:
        egress.check(address, host=host)
    except EgressRefused as exc:
        problem = {"field": "url", "message": str(exc), "type": "egress_refused"}
        raise InvalidInput(f"url: {exc}", detail=[problem]) from exc


def update_webhook(
    session: Session,
    project: Project,
    webhook_id: str,
    *,
    url: str | None,
    events: Sequence[WebhookEvent] | None,
    enabled: bool | None,
    egress: EgressPolicy,
) -> tuple[Webhook, str | None]:
    """Change a webhook's receiver, events or whether it is enabled; deliveries already made keep theirs."""
    webhook, creator = get_webhook(session, project, webhook_id)
    if url is not None:
        _check_receiver(url, egress)
        webhook.url = url
    if events is not None:
        webhook.events = _event_values(events)
    if enabled is not None:
        webhook.enabled = enabled
    session.flush()
    return webhook, creator


def redeliver(session: Session, project: Project, webhook_id: str, delivery_id: str) -> WebhookDelivery:
    """Send a finished (succeeded or failed) delivery again, with a fresh budget of attempts.

    It becomes pending and due now; the endpoint queues it after the commit, and the provider's periodic
    sweep sends any pending delivery that is due, so a lost message only delays it."""
    webhook, _ = get_webhook(session, project, webhook_id)
    delivery = session.get(WebhookDelivery, delivery_id) if is_uuid(delivery_id) else None
    if delivery is None or delivery.webhook_id != webhook.id:
        raise NotFound(f"delivery {delivery_id[:80]!r} not found for webhook {webhook.id}")
    if not webhook.enabled:
        raise Conflict("the webhook is disabled: enable it first (PATCH with enabled true)")
    if delivery.state == DeliveryState.PENDING.value:
        raise Conflict(
            f"delivery {delivery.id} is still pending ({delivery.attempts} attempts so far): it is being sent"
        )
    delivery.state = DeliveryState.PENDING.value
    delivery.attempts_at_redelivery = delivery.attempts
    delivery.next_attempt_at = utcnow()
    delivery.delivered_at = None
    session.flush()
    return delivery


def delete_webhook(session: Session, project: Project, webhook_id: str) -> None:
    """Delete a webhook with its deliveries; a delivery in flight is dropped, never retried."""
    webhook, _ = get_webhook(session, project, webhook_id)
    session.delete(webhook)
    session.flush()


def list_deliveries(
    session: Session, project: Project, webhook_id: str, *, limit: int = 50
) -> list[WebhookDelivery]:
    """The webhook's deliveries, newest first, with their attempts loaded."""
    webhook, _ = get_webhook(session, project, webhook_id)
    return list(
        session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.webhook_id == webhook.id)
            .options(selectinload(WebhookDelivery.attempt_log))
            .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
            .limit(min(max(limit, 1), DELIVERIES_MAX_LIMIT))
        )
    )
