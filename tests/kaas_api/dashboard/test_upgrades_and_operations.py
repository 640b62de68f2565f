"""Day 2 on the dashboard's cluster page: the Upgrade form (the API's pre-flight and its refusals), the
controls of the current operation (pause, resume, roll back, cancel) shown only when its state allows each,
its per-node progress, the maintenance window and the pending automatic upgrade. Like every dashboard
action: admins only, CSRF and origin checked, audited as ``via="dashboard"``."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import AuditEvent, Cluster, Operation, User
from tests.kaas_api.conftest import RecordingDispatcher, World, upgrade
from tests.kaas_api.dashboard.test_dashboard import OWN_ORIGIN, csrf_of, login

CONTROL_BUTTONS = {
    "pause": "operation-pause",
    "resume": "operation-resume",
    "rollback": "operation-rollback",
    "cancel": "operation-cancel",
}


@pytest.fixture(autouse=True)
def _forms_come_from_the_dashboard(world: World) -> None:
    world.client.headers["Origin"] = OWN_ORIGIN


@pytest.fixture
def admin(ha: World) -> TestClient:
    return login(ha.client, ha.tokens["admin"])


def cluster_id(session_factory: sessionmaker[Session], name: str = "ha") -> str:
    with session_factory() as session:
        found = session.scalar(select(Cluster.id).where(Cluster.name == name))
    assert found is not None
    return found


def page_of(client: TestClient, cluster: str) -> str:
    response = client.get(f"/admin/clusters/{cluster}")
    assert response.status_code == 200, response.text[:500]
    return response.text


def post(client: TestClient, path: str, **form: Any) -> Any:
    page = client.get("/admin")
    return client.post(path, data={"csrf_token": csrf_of(page.text), **form}, follow_redirects=False)


def set_operation(session_factory: sessionmaker[Session], operation_id: str, **values: Any) -> None:
    with session_factory() as session:
        operation = session.get_one(Operation, operation_id)
        for name, value in values.items():
            setattr(operation, name, value)
        session.commit()


def dashboard_events(session_factory: sessionmaker[Session], action: str) -> list[tuple[Any, ...]]:
    with session_factory() as session:
        return [
            (e.via, e.actor_name, e.cluster_id, e.outcome, e.status_code)
            for e in session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.at)
            )
        ]


def buttons(html: str) -> set[str]:
    return {name for name, element in CONTROL_BUTTONS.items() if f'id="{element}"' in html}


@pytest.fixture
def upgrading(ha: World, session_factory: sessionmaker[Session]) -> tuple[str, str]:
    """``ha`` upgrading to 1.30.2 (through the API): its id and the operation's."""
    response = upgrade(ha, "1.30.2")
    assert response.status_code == 202, response.text
    return cluster_id(session_factory), response.json()["operation"]["id"]


# --- the Upgrade form ---------------------------------------------------------------------------------


def test_the_upgrade_form_offers_only_the_versions_the_pre_flight_allows(
    admin: TestClient, session_factory: sessionmaker[Session]
) -> None:
    html = page_of(admin, cluster_id(session_factory))
    select_html = re.search(r'<select name="kubernetes_version".*?</select>', html, re.S)
    assert select_html is not None
    offered = re.findall(r'<option value="([^"]+)"', select_html.group(0))
    # r1 offers 1.28.9, 1.29.6, 1.29.8, 1.30.2, 1.31.0; ha runs 1.29.6: no downgrade, same, or skipped minor
    assert offered == ["1.29.8", "1.30.2"]


def test_an_upgrade_from_the_page_starts_the_apis_operation_and_is_audited(
    admin: TestClient, session_factory: sessionmaker[Session], dispatcher: RecordingDispatcher
) -> None:
    ha = cluster_id(session_factory)
    sent = len(dispatcher.sent)
    response = post(
        admin,
        f"/admin/clusters/{ha}/upgrade",
        kubernetes_version="1.30.2",
        max_surge="2",
        max_unavailable="1",
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == f"/admin/clusters/{ha}?done=upgrade-started"
    assert len(dispatcher.sent) == sent + 1
    with session_factory() as session:
        cluster = session.get_one(Cluster, ha)
        operation = session.scalars(
            select(Operation).where(Operation.cluster_id == ha).order_by(Operation.created_at.desc())
        ).first()
        assert operation is not None
        admin_id = session.scalar(select(User.id).where(User.name == "admin"))
        assert cluster.kubernetes_version == "1.30.2"
        assert (operation.kind, operation.state, operation.requested_by) == ("upgrade", "pending", admin_id)
        assert operation.params["from_version"] == "1.29.6"
        assert (operation.params["max_surge"], operation.params["max_unavailable"]) == (2, 1)
    assert dashboard_events(session_factory, "dashboard_upgrade_cluster") == [
        ("dashboard", "admin", ha, "success", 303)
    ]
    html = page_of(admin, ha)
    assert 'id="current-kind">upgrade<' in html
    assert "1.29.6 → 1.30.2" in html


@pytest.mark.parametrize(
    ("cluster", "form", "status", "reason"),
    [
        ("ha", {"kubernetes_version": "1.31.0"}, 422, "skips a minor version"),
        ("ha", {"kubernetes_version": "1.28.9"}, 422, "kaas does not downgrade"),
        ("ha", {"kubernetes_version": "9.9.9"}, 422, "is not offered in region"),
        (
            "ha",
            {"kubernetes_version": "1.30.2", "max_surge": "0", "max_unavailable": "0"},
            422,
            "cannot both be 0",
        ),
        ("ha", {"kubernetes_version": "1.30.2", "max_surge": "11"}, 422, "max_surge must be from 0 to 10"),
        ("ha", {"kubernetes_version": "1.30.2", "max_surge": "many"}, 422, "max_surge"),
        ("c1", {"kubernetes_version": "1.31.0"}, 422, "one control-plane node"),
    ],
    ids=[
        "skips-minor",
        "downgrade",
        "not-offered",
        "no-room",
        "surge-too-big",
        "surge-not-a-number",
        "single-cp",
    ],
)
def test_a_refused_upgrade_shows_the_pre_flights_reason_and_changes_nothing(
    admin: TestClient,
    session_factory: sessionmaker[Session],
    cluster: str,
    form: dict[str, str],
    status: int,
    reason: str,
) -> None:
    target = cluster_id(session_factory, cluster)
    with session_factory() as session:
        before = session.get_one(Cluster, target).kubernetes_version
    response = post(admin, f"/admin/clusters/{target}/upgrade", **form)
    assert response.status_code == status, response.text[:500]
    assert reason in response.text
    assert 'role="alert"' in response.text  # the dashboard's error page, not a bare API answer
    with session_factory() as session:
        assert session.get_one(Cluster, target).kubernetes_version == before
    assert [e[3] for e in dashboard_events(session_factory, "dashboard_upgrade_cluster")] == ["refused"]


def test_an_upgrade_during_an_unfinished_operation_is_not_offered_and_names_it(
    admin: TestClient, upgrading: tuple[str, str]
) -> None:
    ha, operation_id = upgrading
    html = page_of(admin, ha)
    assert 'id="upgrade-form"' not in html
    assert "An upgrade can start once the upgrade below is finished" in html
    response = post(admin, f"/admin/clusters/{ha}/upgrade", kubernetes_version="1.29.8")
    assert response.status_code == 409
    assert operation_id in response.text


# --- the controls of the current operation -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "state", "rolling_back", "shown"),
    [
        ("upgrade", "pending", False, {"pause", "rollback", "cancel"}),
        ("upgrade", "running", False, {"pause", "rollback", "cancel"}),
        ("upgrade", "paused", False, {"resume", "rollback", "cancel"}),
        ("upgrade", "running", True, {"pause", "cancel"}),
        ("upgrade", "paused", True, {"resume", "cancel"}),
        ("repair", "running", False, {"pause", "cancel"}),
        ("update", "running", False, set()),  # a spec change is undone by another, not cancelled
        ("upgrade", "succeeded", False, set()),
        ("upgrade", "failed", False, set()),
        ("upgrade", "cancelled", False, set()),
    ],
)
def test_each_control_is_shown_only_when_the_operations_state_allows_it(
    admin: TestClient,
    upgrading: tuple[str, str],
    session_factory: sessionmaker[Session],
    kind: str,
    state: str,
    rolling_back: bool,
    shown: set[str],
) -> None:
    ha, operation_id = upgrading
    set_operation(session_factory, operation_id, kind=kind, state=state, rolling_back=rolling_back)
    assert buttons(page_of(admin, ha)) == shown


def test_pause_then_resume_from_the_page(
    admin: TestClient,
    upgrading: tuple[str, str],
    session_factory: sessionmaker[Session],
    dispatcher: RecordingDispatcher,
) -> None:
    ha, operation_id = upgrading
    set_operation(session_factory, operation_id, state="running")
    paused = post(admin, f"/admin/clusters/{ha}/operations/{operation_id}/pause")
    assert paused.status_code == 303, paused.text
    assert paused.headers["location"].endswith("done=operation-paused")
    html = page_of(admin, ha)
    assert 'id="current-state">paused<' in html
    assert "paused by admin" in html
    assert buttons(html) == {"resume", "rollback", "cancel"}
    sent = len(dispatcher.sent)
    resumed = post(admin, f"/admin/clusters/{ha}/operations/{operation_id}/resume")
    assert resumed.status_code == 303, resumed.text
    assert len(dispatcher.sent) == sent + 1
    with session_factory() as session:
        operation = session.get_one(Operation, operation_id)
        assert (operation.state, operation.paused_reason) == ("running", None)
    assert dashboard_events(session_factory, "dashboard_pause_operation") == [
        ("dashboard", "admin", ha, "success", 303)
    ]
    assert dashboard_events(session_factory, "dashboard_resume_operation") == [
        ("dashboard", "admin", ha, "success", 303)
    ]


def test_roll_back_from_the_page_brings_the_versions_back_and_shows_rolling_back(
    admin: TestClient, upgrading: tuple[str, str], session_factory: sessionmaker[Session]
) -> None:
    ha, operation_id = upgrading
    set_operation(session_factory, operation_id, state="paused", paused_reason="drain of ha-p1-a blocked")
    response = post(admin, f"/admin/clusters/{ha}/operations/{operation_id}/rollback")
    assert response.status_code == 303, response.text
    with session_factory() as session:
        operation = session.get_one(Operation, operation_id)
        assert (operation.state, operation.rolling_back) == ("running", True)
        assert session.get_one(Cluster, ha).kubernetes_version == "1.29.6"
    html = page_of(admin, ha)
    assert 'id="rolling-back"' in html
    assert "rollback" not in buttons(html)
    assert dashboard_events(session_factory, "dashboard_rollback_operation") == [
        ("dashboard", "admin", ha, "success", 303)
    ]


def test_cancel_from_the_page_asks_a_running_operation_to_stop_and_ends_a_paused_one(
    admin: TestClient, upgrading: tuple[str, str], session_factory: sessionmaker[Session]
) -> None:
    ha, operation_id = upgrading
    set_operation(session_factory, operation_id, state="running")
    assert post(admin, f"/admin/clusters/{ha}/operations/{operation_id}/cancel").status_code == 303
    with session_factory() as session:
        operation = session.get_one(Operation, operation_id)
        assert (operation.state, operation.cancel_requested) == ("running", True)
    assert 'id="cancel-requested"' in page_of(admin, ha)
    set_operation(session_factory, operation_id, state="paused")
    assert post(admin, f"/admin/clusters/{ha}/operations/{operation_id}/cancel").status_code == 303
    with session_factory() as session:
        assert session.get_one(Operation, operation_id).state == "cancelled"
    assert [e[3] for e in dashboard_events(session_factory, "dashboard_cancel_operation")] == [
        "success",
        "success",
    ]


@pytest.mark.parametrize(
    ("state", "control", "message"),
    [
        ("running", "resume", "only a paused operation resumes"),
        ("paused", "pause", "only a pending or running one pauses"),
        ("succeeded", "rollback", "only an unfinished upgrade rolls back"),
        ("cancelled", "cancel", "there is nothing to cancel"),
    ],
)
def test_a_control_the_state_does_not_allow_answers_with_the_reason(
    admin: TestClient,
    upgrading: tuple[str, str],
    session_factory: sessionmaker[Session],
    state: str,
    control: str,
    message: str,
) -> None:
    ha, operation_id = upgrading
    set_operation(session_factory, operation_id, state=state)
    response = post(admin, f"/admin/clusters/{ha}/operations/{operation_id}/{control}")
    assert response.status_code == 409, response.text[:500]
    assert message in response.text
    assert 'role="alert"' in response.text
    with session_factory() as session:
        assert session.get_one(Operation, operation_id).state == state
    assert [e[3] for e in dashboard_events(session_factory, f"dashboard_{control}_operation")] == ["refused"]


def test_a_control_never_acts_on_another_clusters_operation(
    admin: TestClient, upgrading: tuple[str, str], session_factory: sessionmaker[Session]
) -> None:
    _, operation_id = upgrading
    set_operation(session_factory, operation_id, state="running")
    c1 = cluster_id(session_factory, "c1")
    response = post(admin, f"/admin/clusters/{c1}/operations/{operation_id}/pause")
    assert response.status_code == 404
    with session_factory() as session:
        assert session.get_one(Operation, operation_id).state == "running"


# --- who may -------------------------------------------------------------------------------------------

ACTIONS = ("upgrade", "pause", "resume", "rollback", "cancel")


def action_path(cluster: str, operation_id: str, action: str) -> str:
    if action == "upgrade":
        return f"/admin/clusters/{cluster}/upgrade"
    return f"/admin/clusters/{cluster}/operations/{operation_id}/{action}"


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("who", [None, "owner", "member"])
def test_anonymous_and_non_admin_callers_are_sent_to_the_login(
    ha: World,
    upgrading: tuple[str, str],
    session_factory: sessionmaker[Session],
    who: str | None,
    action: str,
) -> None:
    cluster, operation_id = upgrading
    set_operation(session_factory, operation_id, state="paused")  # every action but pause could then work
    headers = ha.auth(who) if who else {}
    response = ha.client.post(
        action_path(cluster, operation_id, action),
        data={"csrf_token": "x", "kubernetes_version": "1.29.8"},
        headers=headers,
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"].startswith("/admin/login?next=")
    with session_factory() as session:
        operation = session.get_one(Operation, operation_id)
        assert (operation.state, operation.rolling_back, operation.cancel_requested) == (
            "paused",
            False,
            False,
        )


@pytest.mark.parametrize("action", ACTIONS)
def test_a_session_of_a_demoted_admin_can_no_longer_act(
    admin: TestClient, upgrading: tuple[str, str], session_factory: sessionmaker[Session], action: str
) -> None:
    cluster, operation_id = upgrading
    csrf = csrf_of(admin.get("/admin").text)
    set_operation(session_factory, operation_id, state="paused")
    with session_factory() as session:
        user = session.scalars(select(User).where(User.name == "admin")).one()
        user.is_admin = False
        session.commit()
    response = admin.post(
        action_path(cluster, operation_id, action),
        data={"csrf_token": csrf, "kubernetes_version": "1.29.8"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"].startswith("/admin/login")
    with session_factory() as session:
        assert session.get_one(Operation, operation_id).state == "paused"


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize(
    ("token", "headers"),
    [("", {}), ("forged", {}), (None, {"Origin": "https://evil.example"})],
    ids=["no-token", "forged-token", "foreign-origin"],
)
def test_an_action_without_the_sessions_csrf_token_or_from_another_origin_changes_nothing(
    admin: TestClient,
    upgrading: tuple[str, str],
    session_factory: sessionmaker[Session],
    action: str,
    token: str | None,
    headers: dict[str, str],
) -> None:
    cluster, operation_id = upgrading
    set_operation(session_factory, operation_id, state="paused")
    csrf = token if token is not None else csrf_of(admin.get("/admin").text)
    response = admin.post(
        action_path(cluster, operation_id, action),
        data={"csrf_token": csrf, "kubernetes_version": "1.29.8"},
        headers=headers,
        follow_redirects=False,
    )
    assert response.status_code == 403
    with session_factory() as session:
        operation = session.get_one(Operation, operation_id)
        assert (operation.state, operation.rolling_back, operation.cancel_requested) == (
            "paused",
            False,
            False,
        )
        assert session.get_one(Cluster, cluster).kubernetes_version == "1.30.2"
    events = dashboard_events(
        session_factory, f"dashboard_{action}_{'cluster' if action == 'upgrade' else 'operation'}"
    )
    assert [e[3:] for e in events] == [("refused", 403)]


# --- what the page shows -------------------------------------------------------------------------------


def test_the_page_shows_the_paused_reason_and_each_nodes_progress(
    admin: TestClient, upgrading: tuple[str, str], session_factory: sessionmaker[Session]
) -> None:
    ha, operation_id = upgrading
    set_operation(
        session_factory,
        operation_id,
        state="paused",
        progress=40,
        paused_reason="drain of ha-p1-a blocked by a PodDisruptionBudget for 600s",
        nodes=[
            {"name": "ha-cp-0", "role": "control-plane", "pool": None, "version": "1.30.2", "state": "new"},
            {"name": "ha-p1-a", "role": "worker", "pool": "p1", "version": "1.29.6", "state": "draining"},
            {"name": "ha-p1-b", "role": "worker", "pool": "p1", "version": "1.29.6", "state": "old"},
            {"name": "ha-p1-c", "role": "worker", "pool": "p1", "version": "1.30.2", "state": "surging"},
        ],
    )
    html = page_of(admin, ha)
    assert 'class="current-op state-paused"' in html
    assert "drain of ha-p1-a blocked by a PodDisruptionBudget for 600s" in html
    assert 'id="current-progress">40 %' in html
    rows = re.findall(
        r'<tr class="node-(\w+)"><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td>', html
    )
    assert rows == [
        ("new", "ha-cp-0", "control-plane", "—", "1.30.2"),
        ("draining", "ha-p1-a", "worker", "p1", "1.29.6"),
        ("old", "ha-p1-b", "worker", "p1", "1.29.6"),
        ("surging", "ha-p1-c", "worker", "p1", "1.30.2"),
    ]
    assert 'class="node-state node-state-draining"' in html


def test_the_page_shows_the_maintenance_window_its_next_opening_and_the_pending_upgrade(
    ha: World, admin: TestClient, session_factory: sessionmaker[Session]
) -> None:
    window = {"day": "sun", "start": "02:00", "duration_minutes": 240, "time_zone": "Asia/Tokyo"}
    response = ha.call("member", "PATCH", "/v1/projects/alpha/clusters/ha", {"maintenance_window": window})
    assert response.status_code == 202, response.text
    api = response.json()["cluster"]
    html = page_of(admin, cluster_id(session_factory))
    assert "every sun at 02:00 for 240 min (Asia/Tokyo)" in html
    start = api["next_maintenance_window"]["start"].replace("T", " ").replace("Z", "")[:19]
    assert start in html  # the same next window as the API's
    # r1's automatic upgrades are 1.29.8 and 1.30.9; ha runs 1.29.6
    assert api["pending_upgrade"] == "1.29.8"
    assert re.search(r'id="pending-upgrade">1\.29\.8 pending<', html)


def test_without_a_window_the_page_says_an_automatic_upgrade_waits_for_one(
    admin: TestClient, session_factory: sessionmaker[Session]
) -> None:
    html = page_of(admin, cluster_id(session_factory))
    assert re.search(r'id="maintenance-window"><span class="muted">none<', html)
    assert "starts only inside a maintenance window" in html
