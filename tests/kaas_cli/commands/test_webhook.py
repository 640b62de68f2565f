"""``kaas webhook list|create|get|update|delete|deliveries|redeliver`` against the API, in every format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import WebhookAttempt, WebhookDelivery
from tests.kaas_cli.commands.conftest import FORMATS, RFC3339, Cli, column, fields, rows

URL = "https://hooks.example.com/kaas"
EVERY_EVENT = ["operation.succeeded", "operation.failed", "operation.paused"]  # the default


def webhook(cli: Cli, *args: str) -> dict[str, Any]:
    created: dict[str, Any] = cli.shown("json", "webhook", "create", URL, *args)
    return created


def add_delivery(session_factory: sessionmaker[Session], cli: Cli, webhook_id: str, *, state: str) -> str:
    with session_factory() as session, session.begin():  # what the provider's delivery task writes
        delivery = WebhookDelivery(
            webhook_id=webhook_id,
            project_id="p",
            operation_id=cli.world.operation_id,
            cluster_id=cli.world.cluster_id,
            event="operation.failed",
            payload={"event": "operation.failed"},
            state=state,
            attempts=1,
            last_status_code=503,
            last_error="the receiver answered HTTP 503",
        )
        session.add(delivery)
        session.flush()
        session.add(WebhookAttempt(delivery_id=delivery.id, number=1, status_code=503, duration_ms=7))
        return delivery.id


@pytest.mark.parametrize("fmt", FORMATS)
def test_create_shows_the_webhook_and_its_secret_once(cli: Cli, fmt: str) -> None:
    shown = cli.shown(fmt, "webhook", "create", URL, "--event", "operation.failed")
    if fmt == "table":
        assert (fields(shown)["url"], fields(shown)["events"]) == (URL, '["operation.failed"]')
        assert "secret" not in fields(shown)
        secret = shown.strip().splitlines()[-1]
        assert "shown only this once" in cli.runs[-1].stderr
    else:
        assert (shown["url"], shown["events"], shown["enabled"]) == (URL, ["operation.failed"], True)
        secret = shown["secret"]
    assert secret.startswith("kaaswh_")
    [listed] = cli.data("webhook", "list")
    assert listed["events"] == ["operation.failed"]
    assert secret not in str(listed)


def test_create_with_a_secret_file_uses_that_secret(cli: Cli, tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("my-own-secret-of-16-chars\n")
    assert webhook(cli, "--secret-file", str(secret_file))["secret"] == "my-own-secret-of-16-chars"


def test_list_shows_the_project_webhooks(cli: Cli) -> None:
    created = webhook(cli)
    cli.login("viewer")
    listed = cli.data("webhook", "list")
    assert [(w["id"], w["url"], w["events"], w["created_by"]) for w in listed] == [
        (created["id"], URL, EVERY_EVENT, "owner")
    ]
    table = cli.shown("table", "webhook", "list")
    assert rows(table)[0] == ["ID", "URL", "EVENTS", "ENABLED", "CREATED BY", "CREATED"]
    assert rows(table)[1][:5] == [
        created["id"],
        URL,
        '["operation.succeeded", "operation.failed", "operation.paused"]',
        "yes",
        "owner",
    ]


def test_get_shows_one_webhook_without_its_secret(cli: Cli) -> None:
    created = webhook(cli)
    shown = cli.data("webhook", "get", created["id"])
    assert shown == {k: v for k, v in created.items() if k != "secret"}
    table = cli.shown("table", "webhook", "get", created["id"])
    assert (fields(table)["id"], fields(table)["enabled"]) == (created["id"], "yes")
    assert created["secret"] not in table


@pytest.mark.parametrize("fmt", FORMATS)
def test_update_turns_a_webhook_off_and_changes_its_events(cli: Cli, fmt: str) -> None:
    created = webhook(cli)
    shown = cli.shown(fmt, "webhook", "update", created["id"], "--disable", "-e", "operation.succeeded")
    if fmt == "table":
        assert (fields(shown)["enabled"], fields(shown)["events"]) == ("no", '["operation.succeeded"]')
    else:
        assert (shown["enabled"], shown["events"]) == (False, ["operation.succeeded"])
    assert cli.data("webhook", "get", created["id"])["enabled"] is False


def test_delete_removes_the_webhook(cli: Cli) -> None:
    created = webhook(cli)
    result = cli.ok("webhook", "delete", created["id"])
    assert result.stdout.strip() == f"webhook {created['id']} deleted"
    assert cli.data("webhook", "list") == []


def test_deliveries_shows_each_delivery_with_its_attempts(
    cli: Cli, session_factory: sessionmaker[Session]
) -> None:
    created = webhook(cli)
    delivery_id = add_delivery(session_factory, cli, created["id"], state="failed")
    [delivery] = cli.data("webhook", "deliveries", created["id"])
    assert (delivery["id"], delivery["state"], delivery["last_status_code"]) == (delivery_id, "failed", 503)
    assert [(a["number"], a["status_code"]) for a in delivery["attempts"]] == [(1, 503)]
    assert RFC3339.match(delivery["attempts"][0]["at"])
    table = cli.shown("table", "webhook", "deliveries", created["id"])
    assert rows(table)[0][:6] == ["ID", "EVENT", "STATE", "ATTEMPTS", "STATUS", "ERROR"]
    assert rows(table)[1][:6] == [
        delivery_id,
        "operation.failed",
        "failed",
        "1",
        "503",
        "the receiver answered HTTP 503",
    ]
    assert column(table, "NEXT ATTEMPT") == ["-"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_redeliver_queues_a_failed_delivery_again(
    cli: Cli, fmt: str, session_factory: sessionmaker[Session]
) -> None:
    created = webhook(cli)
    delivery_id = add_delivery(session_factory, cli, created["id"], state="failed")
    shown = cli.shown(fmt, "webhook", "redeliver", created["id"], delivery_id)
    if fmt == "table":
        assert (fields(shown)["id"], fields(shown)["state"]) == (delivery_id, "pending")
        assert f"delivery {delivery_id} queued again" in cli.runs[-1].stderr
    else:
        assert (shown["id"], shown["state"]) == (delivery_id, "pending")
        assert RFC3339.match(shown["next_attempt_at"])
    again = cli.run("webhook", "redeliver", created["id"], delivery_id)
    assert again.exit_code == 1
    assert "still pending" in again.stderr
