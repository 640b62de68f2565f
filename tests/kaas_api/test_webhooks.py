"""Webhooks of a project through the API: who may manage them, what is validated, the secret shown once."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.config import ApiSettings
from kaas_core.db.models import Webhook, WebhookAttempt, WebhookDelivery, utcnow
from kaas_core.security import SecretBox
from tests.kaas_api.conftest import SECRET_KEY, RecordingDispatcher, World

HOOKS = "/v1/projects/alpha/webhooks"
URL = "https://hooks.example.com/kaas"
BOTH = ["operation.succeeded", "operation.failed"]


def create(world: World, who: str = "owner", **body: object) -> dict[str, object]:
    response = world.call(who, "POST", HOOKS, {"url": URL, "events": BOTH, **body})
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    return created


def test_an_owner_creates_a_webhook_and_sees_a_generated_secret_once(world: World) -> None:
    created = create(world)
    assert created["url"] == URL
    assert created["events"] == BOTH
    assert created["enabled"] is True
    assert created["created_by"] == "owner"
    assert str(created["secret"]).startswith("kaaswh_")
    assert len(str(created["secret"])) > 40


def test_a_secret_given_by_the_owner_is_the_one_shown(world: World) -> None:
    created = create(world, secret="my-own-secret-of-16-chars")
    assert created["secret"] == "my-own-secret-of-16-chars"


def test_list_and_get_never_show_the_secret(world: World) -> None:
    created = create(world)
    listed = world.call("viewer", "GET", HOOKS).json()
    assert [w["id"] for w in listed] == [created["id"]]
    one = world.call("viewer", "GET", f"{HOOKS}/{created['id']}").json()
    for shown in (listed[0], one):
        assert "secret" not in shown
        assert str(created["secret"]) not in str(shown)
    assert one == listed[0]


def test_the_secret_is_stored_only_encrypted(world: World, session_factory: sessionmaker[Session]) -> None:
    created = create(world)
    secret = str(created["secret"])
    with session_factory() as session:
        row = session.get_one(Webhook, str(created["id"]))
        assert secret not in row.secret_encrypted
        assert SecretBox(SECRET_KEY).decrypt(row.secret_encrypted) == secret
        dumped = session.execute(text("SELECT CAST(webhooks AS TEXT) FROM webhooks")).scalar_one()
    assert secret not in dumped


def test_duplicate_events_are_stored_once(world: World) -> None:
    created = create(world, events=["operation.failed", "operation.failed"])
    assert created["events"] == ["operation.failed"]


@pytest.mark.parametrize("who", ["member", "viewer"])
def test_members_and_viewers_cannot_create_or_delete_webhooks(world: World, who: str) -> None:
    created = create(world)
    response = world.call(who, "POST", HOOKS, {"url": URL, "events": BOTH})
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert world.call(who, "DELETE", f"{HOOKS}/{created['id']}").status_code == 403
    assert world.call(who, "GET", f"{HOOKS}/{created['id']}").status_code == 200


def test_an_outsider_sees_no_webhook_of_the_project(world: World) -> None:
    created = create(world)
    for method, path in (
        ("GET", HOOKS),
        ("GET", f"{HOOKS}/{created['id']}"),
        ("GET", f"{HOOKS}/{created['id']}/deliveries"),
        ("DELETE", f"{HOOKS}/{created['id']}"),
    ):
        response = world.call("outsider", method, path)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"] == "not_found"
    response = world.call("outsider", "POST", HOOKS, {"url": URL, "events": BOTH})
    assert response.status_code == 404


def test_calls_without_a_token_are_unauthenticated(world: World) -> None:
    created = create(world)
    assert world.call(None, "POST", HOOKS, {"url": URL, "events": BOTH}).status_code == 401
    assert world.call(None, "GET", HOOKS).status_code == 401
    assert world.call(None, "GET", f"{HOOKS}/{created['id']}/deliveries").status_code == 401


def test_a_webhook_of_another_project_answers_404(world: World) -> None:
    created = create(world)
    response = world.call("owner", "GET", f"/v1/projects/empty/webhooks/{created['id']}")
    assert response.status_code == 404
    assert world.call("owner", "DELETE", f"/v1/projects/empty/webhooks/{created['id']}").status_code == 404
    assert world.call("owner", "GET", f"{HOOKS}/not-a-uuid").status_code == 404


def test_deleting_a_webhook_removes_it(world: World) -> None:
    created = create(world)
    assert world.call("owner", "DELETE", f"{HOOKS}/{created['id']}").status_code == 204
    assert world.call("owner", "GET", f"{HOOKS}/{created['id']}").status_code == 404
    assert world.call("owner", "GET", HOOKS).json() == []


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("ftp://hooks.example.com/kaas", "must start with https:// or http://"),
        ("hooks.example.com/kaas", "must start with https:// or http://"),
        ("https:///kaas", "has no host name"),
        ("https://user:password@hooks.example.com/kaas", "must not contain a user name or password"),
        ("https://hooks.example.com:99999/kaas", "is not a valid URL"),
        ("https://hooks.example.com/ka as", "must not contain spaces"),
        ("https://hooks.example.com/kaas#frag", "has a #fragment"),
        ("https://hooks.example.com/" + "a" * 2100, "must be at most 2048 characters"),
        ("", "must not be empty"),
    ],
)
def test_a_bad_url_is_refused_with_a_message_to_act_on(world: World, url: str, hint: str) -> None:
    response = world.call("owner", "POST", HOOKS, {"url": url, "events": BOTH})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_input"
    assert body["detail"][0]["field"] == "url"
    assert hint in body["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"url": URL, "events": []},
        {"url": URL, "events": ["cluster.exploded"]},
        {"url": URL},
        {"url": URL, "events": BOTH, "secret": "short"},
        {"url": URL, "events": BOTH, "color": "red"},
    ],
)
def test_bad_events_secrets_and_unknown_fields_are_refused(world: World, body: dict[str, object]) -> None:
    response = world.call("owner", "POST", HOOKS, body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_input"


def test_deliveries_are_listed_newest_first_with_every_attempt(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    created = create(world)
    now = utcnow()
    with session_factory() as session, session.begin():  # the rows the provider writes
        for age, state in ((60, "succeeded"), (0, "pending")):
            delivery = WebhookDelivery(
                webhook_id=str(created["id"]),
                project_id="p",
                operation_id=f"op-{age}",
                cluster_id=world.cluster_id,
                event="operation.succeeded",
                payload={"event": "operation.succeeded"},
                state=state,
                attempts=2 if state == "succeeded" else 0,
                next_attempt_at=now if state == "pending" else None,
                created_at=now - timedelta(seconds=age),
            )
            session.add(delivery)
            session.flush()
            if state == "succeeded":
                session.add(WebhookAttempt(delivery_id=delivery.id, number=2, status_code=200, duration_ms=3))
                session.add(
                    WebhookAttempt(
                        delivery_id=delivery.id, number=1, status_code=500, error="HTTP 500", duration_ms=5
                    )
                )
    response = world.call("viewer", "GET", f"{HOOKS}/{created['id']}/deliveries")
    assert response.status_code == 200, response.text
    listed = response.json()
    assert [d["operation_id"] for d in listed] == ["op-0", "op-60"]
    assert listed[0]["state"] == "pending"
    assert listed[0]["attempts"] == []
    assert [(a["number"], a["status_code"]) for a in listed[1]["attempts"]] == [(1, 500), (2, 200)]
    assert listed[1]["attempt_count"] == 2
    assert listed[1]["next_attempt_at"] is None
    limited = world.call("viewer", "GET", f"{HOOKS}/{created['id']}/deliveries?limit=1").json()
    assert [d["operation_id"] for d in limited] == ["op-0"]


def test_deleting_a_webhook_deletes_its_deliveries(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    created = create(world)
    with session_factory() as session, session.begin():
        session.add(
            WebhookDelivery(
                webhook_id=str(created["id"]),
                project_id="p",
                operation_id="op",
                cluster_id=world.cluster_id,
                event="operation.failed",
                payload={},
            )
        )
    world.call("owner", "DELETE", f"{HOOKS}/{created['id']}")
    with session_factory() as session:
        assert session.scalars(select(WebhookDelivery)).all() == []


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local (cloud metadata)"),
        ("http://127.0.0.1:6379/", "loopback"),
        ("https://10.1.2.3/hook", "private"),
        ("https://[::1]:8443/hook", "loopback"),
    ],
)
def test_a_receiver_at_a_non_public_address_is_refused_at_once(world: World, url: str, kind: str) -> None:
    response = world.call("owner", "POST", HOOKS, {"url": url, "events": BOTH})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["detail"][0]["field"] == "url"
    assert f"is a {kind} address" in body["message"]
    assert "KAAS_WEBHOOK_ALLOWED_NETWORKS" in body["message"]
    assert world.call("owner", "GET", HOOKS).json() == []


def test_a_receiver_at_a_public_address_is_accepted(world: World) -> None:
    created = create(world, url="https://93.184.216.34/kaas")
    assert created["url"] == "https://93.184.216.34/kaas"


def test_the_allowed_networks_setting_takes_a_comma_separated_list_and_names_a_bad_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAAS_WEBHOOK_ALLOWED_NETWORKS", "10.20.0.0/16, fd00:1::/64")
    assert ApiSettings().webhook_allowed_networks == ("10.20.0.0/16", "fd00:1::/64")
    monkeypatch.setenv("KAAS_WEBHOOK_ALLOWED_NETWORKS", "10.20.0.0/16,intranet")
    with pytest.raises(ValidationError, match="'intranet' is not a network in CIDR form"):
        ApiSettings()


def test_an_owner_changes_the_receiver_and_events_and_turns_a_webhook_off(world: World) -> None:
    created = create(world)
    hook = f"{HOOKS}/{created['id']}"
    changed = world.call(
        "owner", "PATCH", hook, {"url": "https://other.example.com/k", "events": ["operation.failed"]}
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["url"], changed.json()["events"], changed.json()["enabled"]) == (
        "https://other.example.com/k",
        ["operation.failed"],
        True,
    )
    off = world.call("owner", "PATCH", hook, {"enabled": False}).json()
    assert (off["url"], off["events"], off["enabled"]) == (
        "https://other.example.com/k",
        ["operation.failed"],
        False,
    )
    assert world.call("viewer", "GET", hook).json()["enabled"] is False
    assert world.call("member", "PATCH", hook, {"enabled": True}).status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        {"events": []},
        {"url": "ftp://x.example.com/"},
        {"url": "http://169.254.169.254/"},
        {"secret": "a-new-secret-of-enough-length"},
        {"enabled": "maybe"},
    ],
)
def test_a_bad_change_is_refused_and_changes_nothing(world: World, body: dict[str, object]) -> None:
    created = create(world)
    response = world.call("owner", "PATCH", f"{HOOKS}/{created['id']}", body)
    assert response.status_code == 422, response.text
    assert world.call("owner", "GET", f"{HOOKS}/{created['id']}").json() == {
        key: created[key] for key in ("id", "url", "events", "enabled", "created_by", "created_at")
    }


def add_delivery(session_factory: sessionmaker[Session], world: World, webhook_id: str, *, state: str) -> str:
    with session_factory() as session, session.begin():
        delivery = WebhookDelivery(
            webhook_id=webhook_id,
            project_id="p",
            operation_id=f"op-{state}",
            cluster_id=world.cluster_id,
            event="operation.failed",
            payload={"event": "operation.failed"},
            state=state,
            attempts=6 if state == "failed" else 1,
            last_error="the receiver answered HTTP 503" if state == "failed" else None,
        )
        session.add(delivery)
        session.flush()
        return delivery.id


def test_a_failed_delivery_is_redelivered_with_a_fresh_budget(
    world: World, session_factory: sessionmaker[Session], dispatcher: RecordingDispatcher
) -> None:
    created = create(world)
    hook = f"{HOOKS}/{created['id']}"
    failed = add_delivery(session_factory, world, str(created["id"]), state="failed")
    response = world.call("owner", "POST", f"{hook}/deliveries/{failed}/redeliver")
    assert response.status_code == 202, response.text
    shown = response.json()
    assert shown["state"] == "pending"
    assert shown["next_attempt_at"] is not None
    with session_factory() as session:
        row = session.get_one(WebhookDelivery, failed)
        assert (row.attempts, row.attempts_at_redelivery) == (6, 6)  # the history stays, the budget restarts
    assert dispatcher.deliveries == [failed]  # queued once the change was committed
    again = world.call("owner", "POST", f"{hook}/deliveries/{failed}/redeliver")
    assert again.status_code == 409
    assert dispatcher.deliveries == [failed]  # a refused redelivery queues nothing
    assert "still pending" in again.json()["message"]


def test_redelivery_needs_an_enabled_webhook_and_its_own_delivery(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    first, second = create(world), create(world)
    failed = add_delivery(session_factory, world, str(first["id"]), state="failed")
    other = world.call("owner", "POST", f"{HOOKS}/{second['id']}/deliveries/{failed}/redeliver")
    assert other.status_code == 404
    unknown = world.call("owner", "POST", f"{HOOKS}/{first['id']}/deliveries/{uuid.uuid4()}/redeliver")
    assert unknown.status_code == 404
    world.call("owner", "PATCH", f"{HOOKS}/{first['id']}", {"enabled": False})
    off = world.call("owner", "POST", f"{HOOKS}/{first['id']}/deliveries/{failed}/redeliver")
    assert off.status_code == 409
    assert "disabled" in off.json()["message"]
