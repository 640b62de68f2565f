"""HTTP endpoints of ``/v1/projects/{project}/webhooks``: owners create, change, delete and redeliver,
viewers read.

The secret appears only in the creation response. Deliveries (with every attempt) are readable by viewers.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, status

from kaas_api.auth.service import authorize_project
from kaas_api.deps import CurrentUser, Settings, Uow
from kaas_api.webhooks import service
from kaas_api.webhooks.schemas import (
    AttemptOut,
    DeliveryOut,
    WebhookCreate,
    WebhookCreated,
    WebhookOut,
    WebhookPatch,
)
from kaas_core.db.models import DeliveryState, Role, Webhook, WebhookDelivery, WebhookEvent
from kaas_core.security import SecretBox

router = APIRouter(prefix="/v1/projects/{project}/webhooks", tags=["webhooks"])


def webhook_out(webhook: Webhook, creator: str | None) -> WebhookOut:
    return WebhookOut(
        id=webhook.id,
        url=webhook.url,
        events=[WebhookEvent(e) for e in webhook.events or []],
        enabled=webhook.enabled,
        created_by=creator,
        created_at=webhook.created_at,
    )


def delivery_out(delivery: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id,
        webhook_id=delivery.webhook_id,
        event=WebhookEvent(delivery.event),
        operation_id=delivery.operation_id,
        cluster_id=delivery.cluster_id,
        state=DeliveryState(delivery.state),
        attempt_count=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at if delivery.state == DeliveryState.PENDING.value else None,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        created_at=delivery.created_at,
        delivered_at=delivery.delivered_at,
        payload=dict(delivery.payload or {}),
        attempts=[
            AttemptOut(
                number=a.number,
                at=a.at,
                status_code=a.status_code,
                error=a.error,
                duration_ms=a.duration_ms,
            )
            for a in delivery.attempt_log
        ],
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WebhookCreated)
def create_webhook(
    project: str, body: WebhookCreate, principal: CurrentUser, uow: Uow, settings: Settings
) -> WebhookCreated:
    """Add a webhook (owners). The response carries the signing secret: the only time it is shown."""
    access = authorize_project(uow.session, principal, project, need=Role.OWNER)
    webhook, secret = service.create_webhook(
        uow.session,
        project=access.project,
        url=body.url,
        events=body.events,
        secret=body.secret,
        created_by=principal.user_row(uow.session),
        secret_box=SecretBox(settings.secret_key),
        egress=settings.webhook_egress,
    )
    shown = webhook_out(webhook, principal.user.name)
    return WebhookCreated(**shown.model_dump(), secret=secret)


@router.get("", response_model=list[WebhookOut])
def list_webhooks(project: str, principal: CurrentUser, uow: Uow) -> list[WebhookOut]:
    access = authorize_project(uow.session, principal, project, need=Role.VIEWER)
    return [webhook_out(w, creator) for w, creator in service.list_webhooks(uow.session, access.project)]


@router.get("/{webhook_id}", response_model=WebhookOut)
def get_webhook(project: str, webhook_id: str, principal: CurrentUser, uow: Uow) -> WebhookOut:
    access = authorize_project(uow.session, principal, project, need=Role.VIEWER)
    return webhook_out(*service.get_webhook(uow.session, access.project, webhook_id))


@router.patch("/{webhook_id}", response_model=WebhookOut)
def update_webhook(
    project: str, webhook_id: str, body: WebhookPatch, principal: CurrentUser, uow: Uow, settings: Settings
) -> WebhookOut:
    """Change the receiver, the events, or turn the webhook off and on (owners). The secret stays."""
    access = authorize_project(uow.session, principal, project, need=Role.OWNER)
    webhook, creator = service.update_webhook(
        uow.session,
        access.project,
        webhook_id,
        url=body.url,
        events=body.events,
        enabled=body.enabled,
        egress=settings.webhook_egress,
    )
    return webhook_out(webhook, creator)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeliveryOut,
)
def redeliver(
    project: str, webhook_id: str, delivery_id: str, principal: CurrentUser, uow: Uow
) -> DeliveryOut:
    """Send a succeeded or failed delivery again with a fresh budget of attempts (owners): it is queued as
    soon as the change is stored (and the periodic sweep sends it should that message be lost). 409 while
    it is still pending or the webhook is off."""
    access = authorize_project(uow.session, principal, project, need=Role.OWNER)
    delivery = service.redeliver(uow.session, access.project, webhook_id, delivery_id)
    uow.deliver_after_commit(delivery.id)  # a lost message: the periodic sweep sends it anyway
    uow.session.refresh(delivery, attribute_names=["attempt_log"])
    return delivery_out(delivery)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(project: str, webhook_id: str, principal: CurrentUser, uow: Uow) -> None:
    """Delete a webhook and its delivery history (owners). Pending deliveries are dropped."""
    access = authorize_project(uow.session, principal, project, need=Role.OWNER)
    service.delete_webhook(uow.session, access.project, webhook_id)


@router.get("/{webhook_id}/deliveries", response_model=list[DeliveryOut])
def list_deliveries(
    project: str,
    webhook_id: str,
    principal: CurrentUser,
    uow: Uow,
    limit: int = Query(default=50, ge=1, le=service.DELIVERIES_MAX_LIMIT, description="Newest first."),
) -> list[DeliveryOut]:
    """The webhook's deliveries, newest first, each with every attempt (status code, error, duration)."""
    access = authorize_project(uow.session, principal, project, need=Role.VIEWER)
    return [
        delivery_out(d) for d in service.list_deliveries(uow.session, access.project, webhook_id, limit=limit)
    ]
