"""Sending one webhook delivery: claim it, POST the signed payload, record the attempt, decide what next.

Called by the Celery task ``provider.deliver_webhook`` (``provider.tasks``), which re-queues itself with
``DeliveryResult.retry_after`` as countdown, and by tests. One call makes at most one HTTP request,
bounded by ``WebhookLimits.timeout_seconds``; it never sleeps.

Three short transactions instead of one, on purpose: no database transaction (or row lock) is held while
someone else's server takes its time to answer.

1. Claim: a conditional UPDATE that only matches a pending delivery that is due, and pushes its
   ``next_attempt_at`` past any request's duration (``claim_seconds``). Exactly one caller wins, so a
   message sent twice (by the sweep and by a countdown) sends once; a delivery that succeeded or failed
   is never sent again. A worker that dies mid-request leaves the claim to expire and the sweep re-queues.
2. POST (outside any transaction), headers and signature from ``provider.webhooks.signing``, to the address
   ``provider.webhooks.target`` resolved and checked against the egress policy (no loopback, link-local
   or private receivers unless the operator allows their network). Redirects are not followed (a redirect
   could point anywhere) and the response body is not read.
3. Record: one ``webhook_attempts`` row; 2xx succeeds the delivery; anything else (another status, a
   timeout, a refused connection) retries after exponential backoff with jitter
   (``provider.reconciler.reconcile.backoff_seconds``) until ``max_attempts``, then fails it. A
   redelivery (``kaas_api.webhooks.service.redeliver``) makes it pending again with a fresh budget.

The secret is decrypted only for signing; it is never logged, stored in clear, or sent.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import DeliveryState, Webhook, WebhookAttempt, WebhookDelivery, utcnow
from kaas_core.db.session import session_scope
from kaas_core.security import SecretBox
from provider.reconciler.context import WebhookLimits
from provider.reconciler.reconcile import backoff_seconds
from provider.webhooks.signing import encode_body, request_headers
from provider.webhooks.target import EgressRefused, ReceiverUnreachable, pin_receiver

logger = logging.getLogger(__name__)

# a countdown's ETA and the stored next_attempt_at come from different clock reads: forgive a little
_CLOCK_SLACK = timedelta(seconds=1)
_MAX_ERROR_LENGTH = 1000


@dataclass(frozen=True)
class DeliveryResult:
    """What one call did. ``retry_after`` (seconds) is set when another attempt is scheduled."""

    outcome: str  # succeeded | retrying | failed | skipped
    retry_after: float | None = None
    status_code: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class _Claimed:
    url: str
    secret: str
    event: str
    payload: dict[str, Any]


def deliver_once(
    session_factory: sessionmaker[Session],
    delivery_id: str,
    *,
    secret_box: SecretBox,
    limits: WebhookLimits,
) -> DeliveryResult:
    """One attempt of one delivery, if it is pending and due; see the module docstring."""
    claimed = _claim(session_factory, delivery_id, secret_box=secret_box, limits=limits)
    if isinstance(claimed, DeliveryResult):
        return claimed
    started = utcnow()
    status_code, error, duration_ms = _post(claimed, delivery_id, limits=limits)
    return _record(
        session_factory,
        delivery_id,
        started=started,
        status_code=status_code,
        error=error,
        duration_ms=duration_ms,
        limits=limits,
    )


def _claim(
    session_factory: sessionmaker[Session],
    delivery_id: str,
    *,
    secret_box: SecretBox,
    limits: WebhookLimits,
) -> _Claimed | DeliveryResult:
    now = utcnow()
    statement = (
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.state == DeliveryState.PENDING.value,
            or_(
                WebhookDelivery.next_attempt_at.is_(None),
                WebhookDelivery.next_attempt_at <= now + _CLOCK_SLACK,
            ),
        )
        .values(next_attempt_at=now + timedelta(seconds=limits.claim_seconds))
        .execution_options(synchronize_session=False)
    )
    with session_scope(session_factory) as session:
        result = session.execute(statement)
        assert isinstance(result, CursorResult)
        if result.rowcount != 1:
            return DeliveryResult("skipped", error="not pending, not due, or being sent by another worker")
        delivery, webhook = session.execute(
            select(WebhookDelivery, Webhook)
            .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
            .where(WebhookDelivery.id == delivery_id)
        ).one()
        problem = None
        secret = ""
        if not webhook.enabled:
            problem = "the webhook was disabled"
        else:
            try:
                secret = secret_box.decrypt(webhook.secret_encrypted)
            except ValueError:
                problem = "the webhook's secret cannot be decrypted (was KAAS_SECRET_KEY changed?)"
        if problem is not None:
            delivery.state = DeliveryState.FAILED.value
            delivery.last_error = problem
            delivery.next_attempt_at = None
            logger.warning("webhook delivery %s failed without an attempt: %s", delivery_id, problem)
            return DeliveryResult("failed", error=problem)
        return _Claimed(url=webhook.url, secret=secret, event=delivery.event, payload=dict(delivery.payload))


def _post(
    claimed: _Claimed, delivery_id: str, *, limits: WebhookLimits
) -> tuple[int | None, str | None, int]:
    """POST once; returns (status code or None, error message or None, duration in milliseconds)."""
    body = encode_body(claimed.payload)
    headers = request_headers(
        secret=claimed.secret,
        event=claimed.event,
        delivery_id=delivery_id,
        timestamp=str(int(time.time())),
        body=body,
    )
    started = time.monotonic()
    status_code: int | None = None
    error: str | None = None
    try:
        target = pin_receiver(claimed.url, limits.egress)
        extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else None
        with (
            httpx.Client(timeout=httpx.Timeout(limits.timeout_seconds), follow_redirects=False) as client,
            client.stream(
                "POST",
                target.url,
                content=body,
                headers={**headers, "Host": target.host_header},
                extensions=extensions,
            ) as response,
        ):
            status_code = response.status_code
    except (EgressRefused, ReceiverUnreachable) as exc:
        error = f"not sent: {exc}"
    except httpx.TimeoutException as exc:
        error = f"no answer within {limits.timeout_seconds:g}s ({type(exc).__name__})"
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        error = f"could not reach the receiver: {type(exc).__name__}: {exc}"
    duration_ms = int((time.monotonic() - started) * 1000)
    if status_code is not None and not 200 <= status_code < 300:
        error = f"the receiver answered HTTP {status_code}"
        if 300 <= status_code < 400:
            error += " (redirects are not followed: configure the final URL)"
    return status_code, error[:_MAX_ERROR_LENGTH] if error else None, duration_ms


def _record(
    session_factory: sessionmaker[Session],
    delivery_id: str,
    *,
    started: datetime,
    status_code: int | None,
    error: str | None,
    duration_ms: int,
    limits: WebhookLimits,
) -> DeliveryResult:
    now = utcnow()
    with session_scope(session_factory) as session:
        # the row lock keeps a concurrent delete of the webhook from cascading under our attempt row
        delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
        if delivery is None:
            return DeliveryResult("skipped", status_code=status_code, error="the webhook was deleted")
        number = delivery.attempts + 1
        session.add(
            WebhookAttempt(
                delivery_id=delivery_id,
                number=number,
                at=started,
                status_code=status_code,
                error=error,
                duration_ms=duration_ms,
            )
        )
        delivery.attempts = number
        delivery.last_status_code = status_code
        delivery.last_error = error
        if error is None:
            delivery.state = DeliveryState.SUCCEEDED.value
            delivery.delivered_at = now
            delivery.next_attempt_at = None
            return DeliveryResult("succeeded", status_code=status_code)
        if number - delivery.attempts_at_redelivery >= limits.max_attempts:
            delivery.state = DeliveryState.FAILED.value
            delivery.next_attempt_at = None
            logger.warning("webhook delivery %s failed after %d attempts: %s", delivery_id, number, error)
            return DeliveryResult("failed", status_code=status_code, error=error)
        delay = backoff_seconds(number, base=limits.backoff_base_seconds, maximum=limits.backoff_max_seconds)
        delivery.next_attempt_at = now + timedelta(seconds=delay)
        logger.info(
            "webhook delivery %s attempt %d failed (%s); retrying in %.1fs", delivery_id, number, error, delay
        )
        return DeliveryResult("retrying", retry_after=delay, status_code=status_code, error=error)
