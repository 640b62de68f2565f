"""The controls of an operation: resume, pause, roll back, cancel; which states allow each, who may."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import AuditEvent, Cluster, NodePool, Operation
from tests.kaas_api.conftest import HA, RecordingDispatcher, World, upgrade

ACTIONS = ("resume", "pause", "rollback", "cancel")


@pytest.fixture
def upgrading(ha: World) -> tuple[World, str]:
    response = upgrade(ha, "1.30.2")
    assert response.status_code == 202, response.text
    return ha, response.json()["operation"]["id"]


def set_state(session_factory: sessionmaker[Session], operation_id: str, **values: Any) -> None:
    with session_factory() as session:
        operation = session.get(Operation, operation_id)
        assert operation is not None
        for name, value in values.items():
            setattr(operation, name, value)
        session.commit()


def control(world: World, operation_id: str, action: str, who: str = "member") -> Any:
    return world.call(who, "POST", f"/v1/operations/{operation_id}/{action}")


def test_pausing_a_running_upgrade_records_who_paused_it(
    upgrading: tuple[World, str], session_factory: sessionmaker[Session]
) -> None:
    world, operation_id = upgrading
    set_state(session_factory, operation_id, state="running")
    response = control(world, operation_id, "pause")
    assert response.status_code == 200, response.text
    assert (response.json()["state"], response.json()["paused_reason"]) == ("paused", "paused by member")


def test_resuming_a_paused_upgrade_clears_the_reason_and_asks_for_a_pass(
    upgrading: tuple[World, str], session_factory: sessionmaker[Session], dispatcher: RecordingDispatcher
) -> None:
    world, operation_id = upgrading
    set_state(session_factory, operation_id, state="paused", paused_reason="node ha-p1-x not Ready in 600s")
    sent = len(dispatcher.sent)
    response = control(world, operation_id, "resume")
    assert response.status_code == 200, response.text
    assert (response.json()["state"], response.json()["paused_reason"]) == ("running", None)
    assert len(dispatcher.sent) == sent + 1


@pytest.mark.parametrize("state", ["pending", "running", "succeeded", "failed", "cancelled"])
def test_only_a_paused_operation_resumes(
    upgrading: tuple[World, str], session_factory: sessionmaker[Session], state: str
) -> None:
    world, operation_id = upgrading
    set_state(session_factory, operation_id, state=state)
    assert control(world, operation_id, "resume").status_code == 409


@pytest.mark.parametrize("state", ["paused", "succeeded", "failed", "cancelled"])
def test_only_a_pending_or_running_operation_pauses(
    upgrading: tuple[World, str], session_factory: sessionmaker[Session], state: str
) -> None:
    world, operation_id = upgrading
    set_state(session_factory, operation_id, state=state)
    assert control(world, operation_id, "pause").status_code == 409


def test_an_update_operation_does_not_pause(ha: World) -> None:
    scaled = ha.call("member", "PATCH", HA, {"node_pools": [{"name": "p1", "count": 3}]})
    response = control(ha, scaled.json()["operation"]["id"], "pause")
    assert response.status_code == 409
    assert "only upgrades and repairs" in response.json()["message"]


def test_a_rollback_restores_the_versions_it_started_from_and_runs_again(
    upgrading: tuple[World, str], session_factory: sessionmaker[Session]
) -> None:
    world, operation_id = upgrading
    set_state(session_factory, operation_id, state="paused", paused_reason="drain blocked")
    response = control(world, operation_id, "rollback")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["state"], body["rolling_back"], body["paused_reason"]) == ("running", True, None)
    assert body["target_generation"] == 3
    cluster = world.call("viewer", "GET", HA).json()
    assert cluster["kubernetes_version"] == "1.29.6"
    assert [p["kubernetes_version"] for p in cluster["node_pools"]] == ["1.29.6", "1.29.6"]
    assert cluster["generation"] == 3
    with session_factory() as session:
        pools = session.scalars(select(NodePool).join(Cluster).where(Cluster.name == "ha")).all()
        assert {pool.kubernetes_version for pool in pools} == {"1.29.6"}


def test_a_rollback_twice_is_409(upgrading: tuple[World, str]) -> None:
    world, operation_id = upgrading
    assert control(world, operation_id, "rollback").status_code == 200
    response = control(world, operation_id, "rollback")
    assert response.status_code == 409
    assert "already rolling back" in response.json()["message"]


def test_only_an_unfinished_upgrade_rolls_back(
    upgrading: tuple[World, str],
    session_factory: sessionmaker[Session],
    ha: World,
) -> None:
    world, operation_id = upgrading
    set_state(session_factory, operation_id, state="succeeded")
    assert control(world, operation_id, "rollback").status_code == 409
    assert control(world, world.operation_id, "rollback").status_code == 409  # c1's create


def test_cancelling_a_running_upgrade_asks_it_to_stop(
    upgrading: tuple[World, str], session_factory: sessionmaker[Session]
) -> None:
    world, operation_id = upgrading
    set_state(session_factory, operation_id, state="running")
    body = control(world, operation_id, "cancel").json()
    assert (body["state"], body["cancel_requested"], body["finished_at"]) == ("running", True, None)


def test_cancelling_a_paused_upgrade_cancels_it_at_once(
    upgrading: tuple[World, str], session_factory: sessionmaker[Session]
) -> None:
    world, operation_id = upgrading
    set_state(session_factory, operation_id, state="paused", paused_reason="drain blocked")
    body = control(world, operation_id, "cancel").json()
    assert (body["state"], body["cancel_requested"]) == ("cancelled", True)
    assert body["finished_at"] is not None
    # no longer unfinished: the cluster can be changed again
    assert world.call("member", "PATCH", f"{HA}/node-pools/p1", {"count": 3}).status_code == 202


@pytest.mark.parametrize("state", ["succeeded", "failed", "cancelled"])
def test_a_finished_operation_cannot_be_cancelled(
    upgrading: tuple[World, str], session_factory: sessionmaker[Session], state: str
) -> None:
    world, operation_id = upgrading
    set_state(session_factory, operation_id, state=state)
    assert control(world, operation_id, "cancel").status_code == 409


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize(("who", "status"), [("viewer", 403), ("outsider", 404), (None, 401)])
def test_who_may_not_control_an_operation(
    upgrading: tuple[World, str],
    session_factory: sessionmaker[Session],
    action: str,
    who: str | None,
    status: int,
) -> None:
    world, operation_id = upgrading
    set_state(session_factory, operation_id, state="paused" if action == "resume" else "running")
    assert world.call(who, "POST", f"/v1/operations/{operation_id}/{action}").status_code == status
    with session_factory() as session:
        operation = session.get(Operation, operation_id)
        assert operation is not None
        assert (operation.rolling_back, operation.cancel_requested) == (False, False)


@pytest.mark.parametrize("who", ["owner", "admin"])
def test_owners_and_admins_may_control_an_operation(
    upgrading: tuple[World, str], session_factory: sessionmaker[Session], who: str
) -> None:
    world, operation_id = upgrading
    set_state(session_factory, operation_id, state="running")
    assert control(world, operation_id, "pause", who).status_code == 200


def test_an_unknown_operation_is_404(world: World) -> None:
    assert control(world, "00000000-0000-4000-8000-000000000000", "cancel").status_code == 404
    assert control(world, "not-an-id", "cancel").status_code == 404


def test_a_control_is_audited_with_its_operation_and_cluster(
    upgrading: tuple[World, str], session_factory: sessionmaker[Session]
) -> None:
    world, operation_id = upgrading
    set_state(session_factory, operation_id, state="running")
    control(world, operation_id, "pause")
    with session_factory() as session:
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "pause_operation"))
        operation = session.get(Operation, operation_id)
        assert event is not None
        assert operation is not None
        assert (event.resource_type, event.resource_id) == ("operation", operation_id)
        assert (event.cluster_id, event.outcome) == (operation.cluster_id, "success")


def test_an_operation_shows_its_per_node_progress(
    upgrading: tuple[World, str], session_factory: sessionmaker[Session]
) -> None:
    world, operation_id = upgrading
    nodes = [
        {"name": "ha-cp-0", "role": "control-plane", "pool": None, "version": "1.29.6", "state": "draining"},
        {"name": "ha-cp-0-r1", "role": "control-plane", "pool": None, "version": "1.30.2", "state": "new"},
    ]
    set_state(session_factory, operation_id, state="paused", nodes=nodes, paused_reason="drain blocked")
    shown = world.call("viewer", "GET", f"/v1/operations/{operation_id}").json()
    assert shown["nodes"] == nodes
    assert shown["paused_reason"] == "drain blocked"


def test_params_never_show_a_key_that_names_a_secret(
    upgrading: tuple[World, str], session_factory: sessionmaker[Session]
) -> None:
    world, operation_id = upgrading
    set_state(session_factory, operation_id, params={"to_version": "1.30.2", "join_token": "abc"})
    shown = world.call("viewer", "GET", f"/v1/operations/{operation_id}").json()
    assert shown["params"] == {"to_version": "1.30.2"}


def test_a_spec_change_is_not_cancelled(
    upgrading: tuple[World, str], session_factory: sessionmaker[Session]
) -> None:
    """A scale (an update) is undone by changing the spec back; its cancel would leave the spec asking for
    what the provider then does anyway, so it is refused."""
    world, operation_id = upgrading
    set_state(session_factory, operation_id, kind="update", state="running")
    refused = control(world, operation_id, "cancel")
    assert refused.status_code == 409
    assert "only upgrades and repairs are cancelled" in refused.text
