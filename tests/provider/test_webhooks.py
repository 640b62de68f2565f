"""Webhook notifications end to end: a webhook created through the API, an operation finished by the
reconciler against simcloud on PostgreSQL, the delivery POSTed to a real HTTP receiver on 127.0.0.1.

Deliveries are driven the way the Celery chain drives them (``deliver_once``, honouring ``retry_after``);
the last tests run the real tasks on a Redis broker.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.app import create_app
from kaas_api.config import ApiSettings
from kaas_api.projects.service import set_member
from kaas_api.users.service import create_user
from kaas_core.db.models import Project, Role, Webhook, WebhookDelivery, utcnow
from kaas_core.db.session import session_scope
from kaas_core.egress import EgressPolicy
from provider.celery_app import make_celery, run_embedded_worker, worker_queues
from provider.config import ProviderSettings
from provider.reconciler.context import ProviderContext, WebhookLimits
from provider.webhooks.delivery import DeliveryResult, deliver_once
from provider.webhooks.outbox import due_deliveries
from simcloud.testing import SimCloudHandle, run_simcloud
from tests.kaas_api.conftest import RecordingDispatcher
from tests.provider.factories import TEST_SECRET_KEY, PoolSpec, create_cluster, ensure_project
from tests.provider.harness import make_context, run_until_settled
from tests.provider.webhook_receiver import Receiver, run_receiver

LOOPBACK = EgressPolicy.from_strings(["127.0.0.0/8"])  # the test receivers listen on 127.0.0.1
FAST_WEBHOOKS = WebhookLimits(
    max_attempts=3, timeout_seconds=2.0, backoff_base_seconds=0.05, backoff_max_seconds=0.2, egress=LOOPBACK
)
BOTH = ["operation.succeeded", "operation.failed"]


@pytest.fixture
def simcloud(tmp_path: Path) -> Iterator[SimCloudHandle]:
    with run_simcloud(state_dir=tmp_path / "simcloud", boot_delay=0.0) as handle:
        yield handle


@pytest.fixture
def ctx(session_factory: sessionmaker[Session], simcloud: SimCloudHandle) -> ProviderContext:
    context = make_context(session_factory, simcloud.clouds_yaml)
    context.webhooks = FAST_WEBHOOKS
    return context


@dataclass
class Api:
    client: TestClient
    token: str

    def call(self, method: str, path: str, body: Any = None) -> Any:
        response = self.client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {self.token}"}
        )
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def add_webhook(self, url: str, events: list[str] = BOTH) -> tuple[str, str]:
        created = self.call("POST", "/v1/projects/team/webhooks", {"url": url, "events": events})
        return str(created["id"]), str(created["secret"])

    def deliveries(self, webhook_id: str) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = self.call("GET", f"/v1/projects/team/webhooks/{webhook_id}/deliveries")
        return listed


@pytest.fixture
def api(session_factory: sessionmaker[Session]) -> Iterator[Api]:
    """The real API app on the same database, with an owner of the factories' project ``team``."""
    settings = ApiSettings(
        secret_key=TEST_SECRET_KEY,
        database_url="postgresql+psycopg://unused/unused",
        webhook_allowed_networks=("127.0.0.0/8",),  # the operator allows the test receivers' network
    )
    app = create_app(settings, session_factory=session_factory, dispatcher=RecordingDispatcher())
    with session_scope(session_factory) as session:
        _user, token = create_user(session, name="hooker")
        set_member(session, ensure_project(session), "hooker", Role.OWNER)
    with TestClient(app) as client:
        yield Api(client=client, token=token)


def finish(ctx: ProviderContext, cluster_id: str) -> list[str]:
    """Run the cluster's passes until settled; the webhook deliveries they asked to send."""
    return [d for result in run_until_settled(ctx, cluster_id) for d in result.deliveries]


def deliver_until_settled(
    ctx: ProviderContext, delivery_id: str, *, max_calls: int = 20
) -> list[DeliveryResult]:
    results = []
    for _ in range(max_calls):
        result = deliver_once(
            ctx.session_factory, delivery_id, secret_box=ctx.secret_box, limits=ctx.webhooks
        )
        results.append(result)
        if result.retry_after is None:
            return results
        time.sleep(result.retry_after)
    raise AssertionError(f"delivery {delivery_id} did not settle: {results[-3:]}")


def expected_signature(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def test_a_succeeded_operation_is_delivered_signed_with_the_webhook_secret(
    ctx: ProviderContext, api: Api
) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    with run_receiver([200]) as receiver:
        webhook_id, secret = api.add_webhook(receiver.url)
        [delivery_id] = finish(ctx, created.id)
        results = deliver_until_settled(ctx, delivery_id)
    assert [r.outcome for r in results] == ["succeeded"]
    [request] = receiver.requests
    assert request.path == "/hooks/kaas"
    headers = request.headers
    assert headers["content-type"] == "application/json"
    assert headers["x-kaas-event"] == "operation.succeeded"
    assert headers["x-kaas-delivery"] == delivery_id
    assert abs(int(headers["x-kaas-timestamp"]) - time.time()) < 60
    assert hmac.compare_digest(
        headers["x-kaas-signature"], expected_signature(secret, headers["x-kaas-timestamp"], request.body)
    )
    assert secret not in json.dumps(headers)
    assert secret.encode() not in request.body
    payload = json.loads(request.body)
    assert payload["event"] == "operation.succeeded"
    assert payload["delivery_id"] == delivery_id
    assert payload["project"]["name"] == "team"
    assert payload["cluster"] == {"id": created.id, "name": "demo"}
    assert payload["operation"]["id"] == created.operation_id
    assert payload["operation"]["kind"] == "create"
    assert payload["operation"]["state"] == "succeeded"
    assert payload["operation"]["error"] is None
    assert payload["timestamp"] == payload["operation"]["finished_at"]
    assert payload["timestamp"].endswith("Z")  # RFC 3339 UTC, as every time kaas writes in JSON
    [shown] = api.deliveries(webhook_id)
    assert shown["state"] == "succeeded"
    assert shown["delivered_at"] is not None
    assert [(a["number"], a["status_code"], a["error"]) for a in shown["attempts"]] == [(1, 200, None)]
    assert shown["payload"] == payload


def test_a_signature_over_another_body_or_secret_does_not_verify(ctx: ProviderContext, api: Api) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    with run_receiver([200]) as receiver:
        _, secret = api.add_webhook(receiver.url)
        [delivery_id] = finish(ctx, created.id)
        deliver_until_settled(ctx, delivery_id)
    [request] = receiver.requests
    timestamp, signature = request.headers["x-kaas-timestamp"], request.headers["x-kaas-signature"]
    assert signature != expected_signature(secret, timestamp, request.body + b" ")
    assert signature != expected_signature(secret + "x", timestamp, request.body)
    assert signature != expected_signature(secret, str(int(timestamp) - 1), request.body)


def test_a_receiver_that_fails_once_gets_the_delivery_again_and_both_attempts_are_visible(
    ctx: ProviderContext, api: Api
) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    with run_receiver([500, 200]) as receiver:
        webhook_id, secret = api.add_webhook(receiver.url)
        [delivery_id] = finish(ctx, created.id)
        results = deliver_until_settled(ctx, delivery_id)
    assert [r.outcome for r in results] == ["retrying", "succeeded"]
    assert results[0].retry_after is not None
    assert 0 < results[0].retry_after <= FAST_WEBHOOKS.backoff_max_seconds
    first, second = receiver.requests
    assert first.body == second.body  # the same payload on every attempt
    assert first.headers["x-kaas-delivery"] == second.headers["x-kaas-delivery"] == delivery_id
    for request in (first, second):
        assert request.headers["x-kaas-signature"] == expected_signature(
            secret, request.headers["x-kaas-timestamp"], request.body
        )
    [shown] = api.deliveries(webhook_id)
    assert shown["state"] == "succeeded"
    assert shown["attempt_count"] == 2
    assert shown["last_status_code"] == 200
    assert [(a["number"], a["status_code"]) for a in shown["attempts"]] == [(1, 500), (2, 200)]
    assert shown["attempts"][0]["error"] == "the receiver answered HTTP 500"
    assert shown["attempts"][1]["error"] is None


def test_a_receiver_that_always_fails_ends_failed_after_the_last_attempt(
    ctx: ProviderContext, api: Api
) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    with run_receiver([503]) as receiver:
        webhook_id, _ = api.add_webhook(receiver.url)
        [delivery_id] = finish(ctx, created.id)
        results = deliver_until_settled(ctx, delivery_id)
        again = deliver_once(ctx.session_factory, delivery_id, secret_box=ctx.secret_box, limits=ctx.webhooks)
    assert [r.outcome for r in results] == ["retrying", "retrying", "failed"]
    assert again.outcome == "skipped"
    assert len(receiver.requests) == FAST_WEBHOOKS.max_attempts
    [shown] = api.deliveries(webhook_id)
    assert shown["state"] == "failed"
    assert shown["next_attempt_at"] is None
    assert shown["last_error"] == "the receiver answered HTTP 503"
    assert [a["status_code"] for a in shown["attempts"]] == [503, 503, 503]
    assert delivery_id not in due_deliveries(ctx.session_factory)


def test_a_failed_delivery_sent_again_after_the_receiver_is_fixed_succeeds_with_a_fresh_budget(
    ctx: ProviderContext, api: Api
) -> None:
    """Fail every attempt, point the webhook at a working receiver, redeliver: the sweep sends it."""
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    with run_receiver([503]) as broken:
        webhook_id, _ = api.add_webhook(broken.url)
        [delivery_id] = finish(ctx, created.id)
        assert deliver_until_settled(ctx, delivery_id)[-1].outcome == "failed"
    base = f"/v1/projects/team/webhooks/{webhook_id}"
    with run_receiver([500, 200]) as fixed:
        api.call("PATCH", base, {"url": fixed.url})
        shown = api.call("POST", f"{base}/deliveries/{delivery_id}/redeliver")
        assert shown["state"] == "pending"
        assert delivery_id in due_deliveries(ctx.session_factory)  # what the periodic sweep sends
        results = deliver_until_settled(ctx, delivery_id)
    assert [r.outcome for r in results] == ["retrying", "succeeded"]  # a whole new budget, not one try
    assert len(fixed.requests) == 2
    assert fixed.requests[-1].headers["x-kaas-delivery"] == delivery_id  # the receiver can deduplicate
    [listed] = api.deliveries(webhook_id)
    assert listed["state"] == "succeeded"
    assert [a["number"] for a in listed["attempts"]] == [1, 2, 3, 4, 5]  # the history of both rounds


def test_an_unreachable_receiver_is_retried_and_each_connection_error_recorded(
    ctx: ProviderContext, api: Api
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    webhook_id, _ = api.add_webhook(f"http://127.0.0.1:{port}/hook")
    [delivery_id] = finish(ctx, created.id)
    results = deliver_until_settled(ctx, delivery_id)
    assert [r.outcome for r in results] == ["retrying", "retrying", "failed"]
    [shown] = api.deliveries(webhook_id)
    assert shown["state"] == "failed"
    assert all(a["status_code"] is None for a in shown["attempts"])
    assert all(a["error"].startswith("could not reach the receiver: ConnectError") for a in shown["attempts"])


def test_a_failed_operation_notifies_only_the_webhooks_subscribed_to_failures(
    ctx: ProviderContext, api: Api
) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(flavor="m1.gigantic"),))
    with run_receiver([200]) as failures, run_receiver([200]) as successes:
        failure_hook, _ = api.add_webhook(failures.url, ["operation.failed"])
        success_hook, _ = api.add_webhook(successes.url, ["operation.succeeded"])
        [delivery_id] = finish(ctx, created.id)
        deliver_until_settled(ctx, delivery_id)
    assert successes.requests == []
    assert api.deliveries(success_hook) == []
    [request] = failures.requests
    assert request.headers["x-kaas-event"] == "operation.failed"
    payload = json.loads(request.body)
    assert payload["operation"]["state"] == "failed"
    assert "m1.gigantic" in payload["operation"]["error"]
    [shown] = api.deliveries(failure_hook)
    assert shown["event"] == "operation.failed"
    assert shown["state"] == "succeeded"


def test_a_delivered_notification_is_never_sent_again(ctx: ProviderContext, api: Api) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    with run_receiver([200]) as receiver:
        api.add_webhook(receiver.url)
        [delivery_id] = finish(ctx, created.id)
        deliver_until_settled(ctx, delivery_id)
        with ctx.session_factory() as session, session.begin():  # as if a stale message or sweep came late
            session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery_id)
                .values(next_attempt_at=utcnow() - timedelta(hours=1))
            )
        again = deliver_once(ctx.session_factory, delivery_id, secret_box=ctx.secret_box, limits=ctx.webhooks)
        assert finish(ctx, created.id) == []  # later passes of the running cluster notify nothing
    assert again.outcome == "skipped"
    assert len(receiver.requests) == 1
    assert due_deliveries(ctx.session_factory) == []


def test_a_delivery_in_flight_is_not_sent_by_another_worker(ctx: ProviderContext, api: Api) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    with run_receiver([200], delay_seconds=1.0) as receiver:
        api.add_webhook(receiver.url)
        [delivery_id] = finish(ctx, created.id)
        results: list[DeliveryResult] = []
        first = threading.Thread(target=lambda: results.extend(deliver_until_settled(ctx, delivery_id)))
        first.start()
        while not receiver.requests:
            time.sleep(0.01)
        second = deliver_once(
            ctx.session_factory, delivery_id, secret_box=ctx.secret_box, limits=ctx.webhooks
        )
        first.join(10)
    assert second.outcome == "skipped"
    assert [r.outcome for r in results] == ["succeeded"]
    assert len(receiver.requests) == 1


def test_a_retry_is_not_sent_before_it_is_due(ctx: ProviderContext, api: Api) -> None:
    ctx.webhooks = replace(FAST_WEBHOOKS, backoff_base_seconds=60.0, backoff_max_seconds=120.0)
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    with run_receiver([500, 200]) as receiver:
        webhook_id, _ = api.add_webhook(receiver.url)
        [delivery_id] = finish(ctx, created.id)
        first = deliver_once(ctx.session_factory, delivery_id, secret_box=ctx.secret_box, limits=ctx.webhooks)
        early = deliver_once(ctx.session_factory, delivery_id, secret_box=ctx.secret_box, limits=ctx.webhooks)
    assert first.outcome == "retrying"
    assert first.retry_after is not None
    assert 30.0 <= first.retry_after <= 60.0  # equal jitter: half of the first backoff is fixed
    assert early.outcome == "skipped"
    assert len(receiver.requests) == 1
    assert due_deliveries(ctx.session_factory) == []
    [shown] = api.deliveries(webhook_id)
    assert shown["state"] == "pending"
    assert shown["next_attempt_at"] is not None


def test_disabled_webhooks_and_other_projects_get_nothing(
    ctx: ProviderContext, api: Api, session_factory: sessionmaker[Session]
) -> None:
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    with run_receiver([200]) as receiver:
        webhook_id, _ = api.add_webhook(receiver.url)
        with session_scope(session_factory) as session:
            other = Project(name="other")
            session.add(other)
            session.flush()
            set_member(session, other, "hooker", Role.OWNER)
        api.call("POST", "/v1/projects/other/webhooks", {"url": receiver.url, "events": BOTH})
        with session_scope(session_factory) as session:
            session.get_one(Webhook, webhook_id).enabled = False
        assert finish(ctx, created.id) == []
    assert receiver.requests == []


# -- the real Celery tasks on Redis --------------------------------------------------------------------


@pytest.fixture
def region() -> str:
    return f"sim-{uuid.uuid4().hex[:8]}"  # its own queues: other test runs share the Redis database


@pytest.fixture
def celery_ctx(ctx: ProviderContext, redis_url: str, region: str) -> Iterator[Celery]:
    """A worker consuming the region's queue and ``provider`` (where deliveries go); an API-side sender."""
    settings = ProviderSettings(broker_url=redis_url, regions=[region], sweep_interval_seconds=3600)
    app = make_celery(settings, context=ctx)
    handle = run_embedded_worker(app, queues=worker_queues([region]), concurrency=2)
    sender = Celery("kaas-api-test", broker=redis_url, set_as_current=False)
    yield sender
    sender.close()
    handle.stop()
    app.close()


def wait_for(receiver: Receiver, count: int, *, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(receiver.requests) < count:
        time.sleep(0.1)
    assert len(receiver.requests) >= count, f"{len(receiver.requests)} of {count} requests arrived"


@pytest.mark.redis
def test_the_reconcile_task_sends_the_delivery_after_its_commit(
    celery_ctx: Celery, api: Api, ctx: ProviderContext, region: str
) -> None:
    created = create_cluster(ctx.session_factory, region=region, pools=(PoolSpec(count=1),))
    with run_receiver([500, 200]) as receiver:
        webhook_id, _ = api.add_webhook(receiver.url)
        celery_ctx.send_task("provider.reconcile_cluster", args=[created.id], queue=f"region.{region}")
        wait_for(receiver, 2)
    deadline = time.monotonic() + 10
    while api.deliveries(webhook_id)[0]["state"] != "succeeded" and time.monotonic() < deadline:
        time.sleep(0.1)
    [shown] = api.deliveries(webhook_id)
    assert shown["state"] == "succeeded"
    assert [a["status_code"] for a in shown["attempts"]] == [500, 200]


@pytest.mark.redis
def test_the_sweep_sends_a_delivery_whose_message_was_lost(
    celery_ctx: Celery, api: Api, ctx: ProviderContext, region: str
) -> None:
    created = create_cluster(ctx.session_factory, region=region, pools=(PoolSpec(count=1),))
    with run_receiver([200]) as receiver:
        api.add_webhook(receiver.url)
        [delivery_id] = finish(ctx, created.id)  # committed, but its message never sent: "lost"
        assert due_deliveries(ctx.session_factory) == [delivery_id]
        celery_ctx.send_task("provider.sweep", queue="provider")
        wait_for(receiver, 1)
    assert receiver.requests[0].headers["x-kaas-delivery"] == delivery_id
    with ctx.session_factory() as session:
        assert session.scalars(select(WebhookDelivery.state)).all() == ["succeeded"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "2130706433"])  # the last: 127.0.0.1 in disguise
def test_a_receiver_outside_the_allowed_networks_gets_nothing_and_the_attempt_says_why(
    ctx: ProviderContext, api: Api, host: str
) -> None:
    """The operator no longer allows loopback: by address, or by any name that resolves there, nothing is
    sent (a disguised address is a name to the API, so only the check at delivery can catch it)."""
    ctx.webhooks = replace(FAST_WEBHOOKS, egress=EgressPolicy())
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    with run_receiver([200]) as receiver:
        webhook_id, _ = api.add_webhook(receiver.url.replace("127.0.0.1", host))
        [delivery_id] = finish(ctx, created.id)
        results = deliver_until_settled(ctx, delivery_id)
    assert receiver.requests == []
    assert results[-1].outcome == "failed"
    [shown] = api.deliveries(webhook_id)
    errors = {attempt["error"] for attempt in shown["attempts"]}
    [error] = errors
    assert error.startswith(f"not sent: webhook receiver {host}")
    assert "loopback" in error
    assert "KAAS_WEBHOOK_ALLOWED_NETWORKS" in error


def test_a_receiver_reached_by_name_sees_its_own_name_as_host(ctx: ProviderContext, api: Api) -> None:
    """The POST goes to the checked address, but the receiver still sees the name it was configured with.

    "127.1" is a host name to kaas (not an IP literal) that the system resolver maps to 127.0.0.1 only,
    unlike "localhost", which may resolve to ::1 first.
    """
    created = create_cluster(ctx.session_factory, pools=(PoolSpec(count=1),))
    with run_receiver([200]) as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        api.add_webhook(f"http://127.1:{port}/hooks/kaas")
        [delivery_id] = finish(ctx, created.id)
        results = deliver_until_settled(ctx, delivery_id)
    assert [r.outcome for r in results] == ["succeeded"]
    [request] = receiver.requests
    assert request.headers["host"] == f"127.1:{port}"
