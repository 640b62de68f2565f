"""``kaas operation list|get|watch`` against the API, in every output format."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import Operation, utcnow
from tests.kaas_cli.commands.conftest import FORMATS, RFC3339, Cli, column, fields, rows


def finish(
    session_factory: sessionmaker[Session], operation_id: str, *, state: str, error: str | None = None
) -> None:
    with session_factory() as session, session.begin():  # what the provider's worker writes
        operation = session.get_one(Operation, operation_id)
        operation.state, operation.progress, operation.step = state, 100, "done"
        operation.error, operation.finished_at = error, utcnow()


def test_list_shows_the_cluster_operations_newest_first(cli: Cli) -> None:
    cli.ok("cluster", "scale", "c1", "p1", "2")
    ops = cli.data("operation", "list", "c1")
    assert [o["kind"] for o in ops] == ["update", "create"]
    assert ops[1]["id"] == cli.world.operation_id
    assert ops[1]["state"] == "failed"  # superseded by the update
    assert all(RFC3339.match(o["created_at"]) for o in ops)
    table = cli.shown("table", "operation", "list", "c1")
    assert rows(table)[0] == ["ID", "KIND", "STATE", "STEP", "%", "ERROR", "CREATED", "FINISHED"]
    assert column(table, "KIND") == ["update", "create"]
    assert column(table, "ERROR")[1] == f"superseded by operation {ops[0]['id']}"
    assert column(table, "FINISHED")[0] == "-"


def test_get_shows_one_operation(cli: Cli) -> None:
    operation = cli.data("operation", "get", cli.world.operation_id)
    assert (operation["id"], operation["kind"], operation["state"]) == (
        cli.world.operation_id,
        "create",
        "pending",
    )
    assert operation["cluster_id"] == cli.world.cluster_id
    table = cli.shown("table", "operation", "get", cli.world.operation_id)
    assert (fields(table)["kind"], fields(table)["state"], fields(table)["finished_at"]) == (
        "create",
        "pending",
        "-",
    )


def test_get_of_a_failed_operation_exits_1(cli: Cli, session_factory: sessionmaker[Session]) -> None:
    finish(session_factory, cli.world.operation_id, state="failed", error="flavor gone")
    result = cli.run("operation", "get", cli.world.operation_id, "-o", "json")
    assert result.exit_code == 1
    assert '"error": "flavor gone"' in result.stdout


@pytest.mark.parametrize("fmt", FORMATS)
def test_watch_follows_the_operation_until_it_ends(
    cli: Cli, fmt: str, session_factory: sessionmaker[Session]
) -> None:
    polls: list[str] = []

    def worker_finishes_after_the_first_poll(request: httpx.Request) -> None:
        if request.url.path == f"/v1/operations/{cli.world.operation_id}":
            polls.append(request.url.path)
            if len(polls) == 2:  # the watcher has seen it pending once
                finish(session_factory, cli.world.operation_id, state="succeeded")

    cli.transport.on_request = worker_finishes_after_the_first_poll
    shown = cli.shown(fmt, "operation", "watch", cli.world.operation_id, "--timeout", "30")
    assert len(polls) == 2
    if fmt == "table":
        assert (fields(shown)["state"], fields(shown)["progress"]) == ("succeeded", "100")
        assert "100%" in cli.runs[-1].stderr  # the live progress
    else:
        assert (shown["state"], shown["step"]) == ("succeeded", "done")
        assert RFC3339.match(shown["finished_at"])
        assert cli.runs[-1].stderr == ""  # no progress bar in a program's output


def test_watch_gives_up_with_exit_code_3_after_the_timeout(cli: Cli) -> None:
    result = cli.run("operation", "watch", cli.world.operation_id, "--timeout", "0", "-o", "json")
    assert result.exit_code == 3
    assert "still pending" in result.stderr
