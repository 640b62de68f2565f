"""The admin dashboard over HTTP: login with a session cookie, CSRF on every form, admins only, every page
renders, actions go through the services and are audited as dashboard actions. (The same flows in a real
browser: tests/e2e/test_dashboard_browser.py.)"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.auth.service import issue_token
from kaas_core.db.models import AdminSession, ApiToken, AuditEvent, Cluster, Operation, Region, User, utcnow
from tests.kaas_api.conftest import World

PAGES = ("/admin", "/admin/clusters", "/admin/regions", "/admin/projects", "/admin/users", "/admin/audit")
OWN_ORIGIN = "http://testserver"  # the test client's base URL: where its "browser" loaded the pages


@pytest.fixture(autouse=True)
def _forms_come_from_the_dashboard(world: World) -> None:
    """A browser sends the page's Origin with every form POST; the tests' client does the same."""
    world.client.headers["Origin"] = OWN_ORIGIN


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def login(client: TestClient, token: str) -> TestClient:
    form = client.get("/admin/login")
    assert form.status_code == 200
    response = client.post(
        "/admin/login",
        data={"token": token, "csrf_token": csrf_of(form.text), "next": "/admin"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return client


@pytest.fixture
def admin_client(world: World) -> TestClient:
    return login(world.client, world.tokens["admin"])


def test_without_a_session_every_page_sends_the_browser_to_the_login(world: World) -> None:
    for page in (*PAGES, f"/admin/clusters/{world.cluster_id}"):
        response = world.client.get(page, follow_redirects=False)
        assert response.status_code == 303, page
        assert response.headers["location"].startswith("/admin/login?next=")


def test_an_api_bearer_token_is_not_a_dashboard_session(world: World) -> None:
    response = world.client.get("/admin", headers=world.auth("admin"), follow_redirects=False)
    assert response.status_code == 303


def test_an_admin_logs_in_with_a_cookie_that_scripts_cannot_read(world: World) -> None:
    form = world.client.get("/admin/login")
    response = world.client.post(
        "/admin/login",
        data={"token": world.tokens["admin"], "csrf_token": csrf_of(form.text), "next": "/admin/clusters"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/clusters"
    cookie = next(h for h in response.headers.get_list("set-cookie") if h.startswith("kaas_admin_session="))
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/admin" in cookie
    page = world.client.get("/admin")
    assert page.status_code == 200
    assert "Fleet overview" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_the_session_id_is_stored_only_as_a_hash(
    admin_client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    cookie = admin_client.cookies.get("kaas_admin_session")
    assert cookie
    with session_factory() as session:
        rows = list(session.scalars(select(AdminSession)))
    assert len(rows) == 1
    assert rows[0].id_hash != cookie
    assert cookie not in rows[0].id_hash


@pytest.mark.parametrize("who", ["owner", "member", "viewer", "outsider"])
def test_a_non_admin_cannot_log_in(world: World, who: str) -> None:
    form = world.client.get("/admin/login")
    response = world.client.post(
        "/admin/login",
        data={"token": world.tokens[who], "csrf_token": csrf_of(form.text)},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert "global admins only" in response.text
    assert "kaas_admin_session" not in world.client.cookies
    assert world.client.get("/admin", follow_redirects=False).status_code == 303


def test_a_bad_token_or_a_forged_login_form_is_refused(world: World) -> None:
    form = world.client.get("/admin/login")
    bad = world.client.post("/admin/login", data={"token": "kaas_nope", "csrf_token": csrf_of(form.text)})
    assert bad.status_code == 401
    assert "not valid" in bad.text
    forged = world.client.post(
        "/admin/login", data={"token": world.tokens["admin"], "csrf_token": "forged"}, follow_redirects=False
    )
    assert forged.status_code == 403
    assert "kaas_admin_session" not in world.client.cookies


def test_the_login_never_redirects_off_the_dashboard(world: World) -> None:
    form = world.client.get("/admin/login?next=https://evil.example/x")
    assert 'value="/admin"' in form.text
    response = world.client.post(
        "/admin/login",
        data={"token": world.tokens["admin"], "csrf_token": csrf_of(form.text), "next": "//evil.example"},
        follow_redirects=False,
    )
    assert response.headers["location"] == "/admin"


def test_every_page_renders_for_an_admin(admin_client: TestClient, world: World) -> None:
    for page in (*PAGES, f"/admin/clusters/{world.cluster_id}"):
        response = admin_client.get(page)
        assert response.status_code == 200, (page, response.text[:500])
    cluster_page = admin_client.get(f"/admin/clusters/{world.cluster_id}").text
    assert "alpha / c1" in cluster_page
    assert "create" in cluster_page  # the operation timeline


def test_the_cluster_table_searches_filters_and_paginates(admin_client: TestClient, world: World) -> None:
    for index in range(3):
        body = {
            "name": f"search-{index}",
            "region": "r1",
            "control_plane": {"count": 1, "flavor": "small"},
            "node_pools": [],
        }
        assert world.call("owner", "POST", "/v1/projects/alpha/clusters", body).status_code == 202
    found = admin_client.get("/admin/clusters?q=search-1").text
    assert "search-1" in found
    assert "search-0" not in found
    assert ">c1<" not in found
    by_phase = admin_client.get("/admin/clusters?phase=running").text
    assert "no cluster matches" in by_phase
    assert "(4)" in admin_client.get("/admin/clusters?project=alpha").text


def test_a_form_without_the_sessions_csrf_token_changes_nothing(
    admin_client: TestClient, world: World, session_factory: sessionmaker[Session]
) -> None:
    for token in ("", "forged"):
        response = admin_client.post(f"/admin/clusters/{world.cluster_id}/pause", data={"csrf_token": token})
        assert response.status_code == 403
        assert "stale" in response.text
    with session_factory() as session:
        cluster = session.get(Cluster, world.cluster_id)
        assert cluster is not None
        assert cluster.paused is False


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "http://testserver.evil.example"},
        {"Origin": "https://testserver"},  # another scheme is another origin
        {"Origin": "null"},
        {"Referer": "https://evil.example/admin/clusters"},
        {},
    ],
    ids=["foreign", "lookalike", "other-scheme", "null", "foreign-referer", "neither"],
)
def test_a_form_from_another_origin_is_refused_even_with_the_csrf_token(
    admin_client: TestClient, world: World, session_factory: sessionmaker[Session], headers: dict[str, str]
) -> None:
    page = admin_client.get(f"/admin/clusters/{world.cluster_id}")
    del admin_client.headers["Origin"]
    response = admin_client.post(
        f"/admin/clusters/{world.cluster_id}/pause", data={"csrf_token": csrf_of(page.text)}, headers=headers
    )
    assert response.status_code == 403
    assert "not sent from a page of this dashboard" in response.text
    with session_factory() as session:
        assert session.get_one(Cluster, world.cluster_id).paused is False
        refused = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "dashboard_pause_cluster")
        ).one()
    assert (refused.outcome, refused.status_code) == ("refused", 403)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": OWN_ORIGIN},
        {"Referer": f"{OWN_ORIGIN}/admin/clusters?q=c1"},
        {"Origin": "http://127.0.0.1:8000"},  # KAAS_PUBLIC_URL's origin (the default)
    ],
    ids=["origin", "referer-without-origin", "public-url"],
)
def test_a_form_from_the_dashboards_own_origin_is_accepted(
    admin_client: TestClient, world: World, session_factory: sessionmaker[Session], headers: dict[str, str]
) -> None:
    page = admin_client.get(f"/admin/clusters/{world.cluster_id}")
    del admin_client.headers["Origin"]
    response = admin_client.post(
        f"/admin/clusters/{world.cluster_id}/pause",
        data={"csrf_token": csrf_of(page.text)},
        headers=headers,
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    with session_factory() as session:
        assert session.get_one(Cluster, world.cluster_id).paused is True


def test_the_login_form_from_another_origin_is_refused(world: World) -> None:
    form = world.client.get("/admin/login")
    response = world.client.post(
        "/admin/login",
        data={"token": world.tokens["admin"], "csrf_token": csrf_of(form.text)},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert "kaas_admin_session" not in world.client.cookies


def test_pause_and_resume_go_through_the_service_and_are_audited_as_dashboard_actions(
    admin_client: TestClient, world: World, session_factory: sessionmaker[Session]
) -> None:
    page = admin_client.get(f"/admin/clusters/{world.cluster_id}")
    paused = admin_client.post(
        f"/admin/clusters/{world.cluster_id}/pause", data={"csrf_token": csrf_of(page.text)}
    )
    assert paused.status_code == 200
    assert "reconciliation paused" in paused.text
    with session_factory() as session:
        cluster = session.get(Cluster, world.cluster_id)
        assert cluster is not None
        assert cluster.paused is True
    sent_before = len(world.client.app.state.kaas.dispatcher.sent)  # type: ignore[attr-defined]
    resumed = admin_client.post(
        f"/admin/clusters/{world.cluster_id}/resume", data={"csrf_token": csrf_of(paused.text)}
    )
    assert "Resume reconciliation" not in resumed.text
    assert len(world.client.app.state.kaas.dispatcher.sent) == sent_before + 1  # type: ignore[attr-defined]
    with session_factory() as session:
        actions = [
            (e.action, e.via, e.actor_name, e.cluster_id, e.outcome)
            for e in session.scalars(
                select(AuditEvent).where(AuditEvent.via == "dashboard").order_by(AuditEvent.at)
            )
        ]
    assert ("dashboard_pause_cluster", "dashboard", "admin", world.cluster_id, "success") in actions
    assert ("dashboard_resume_cluster", "dashboard", "admin", world.cluster_id, "success") in actions


def test_retry_needs_a_failed_operation_and_starts_a_new_one(
    admin_client: TestClient, world: World, session_factory: sessionmaker[Session]
) -> None:
    page = admin_client.get(f"/admin/clusters/{world.cluster_id}")
    refused = admin_client.post(
        f"/admin/clusters/{world.cluster_id}/retry", data={"csrf_token": csrf_of(page.text)}
    )
    assert refused.status_code == 409
    assert "no failed operation" in refused.text
    with session_factory() as session:
        operation = session.get(Operation, world.operation_id)
        cluster = session.get(Cluster, world.cluster_id)
        assert operation is not None
        assert cluster is not None
        operation.state, operation.error, cluster.phase = "failed", "control_plane: flavor gone", "error"
        session.commit()
    page = admin_client.get(f"/admin/clusters/{world.cluster_id}")
    assert "flavor gone" in page.text
    assert "Retry failed operation" in page.text
    retried = admin_client.post(
        f"/admin/clusters/{world.cluster_id}/retry", data={"csrf_token": csrf_of(page.text)}
    )
    assert retried.status_code == 200
    with session_factory() as session:
        cluster = session.get(Cluster, world.cluster_id)
        newest = session.scalars(
            select(Operation)
            .where(Operation.cluster_id == world.cluster_id)
            .order_by(Operation.created_at.desc())
        ).first()
        assert cluster is not None
        assert newest is not None
        assert (cluster.phase, newest.kind, newest.state) == ("provisioning", "create", "pending")


def test_delete_needs_the_name_typed_and_force_delete_works_on_a_paused_cluster(
    admin_client: TestClient, world: World, session_factory: sessionmaker[Session]
) -> None:
    page = admin_client.get(f"/admin/clusters/{world.cluster_id}")
    admin_client.post(f"/admin/clusters/{world.cluster_id}/pause", data={"csrf_token": csrf_of(page.text)})
    wrong = admin_client.post(
        f"/admin/clusters/{world.cluster_id}/delete",
        data={"csrf_token": csrf_of(page.text), "confirm_name": "c2"},
    )
    assert wrong.status_code == 422
    assert "to confirm its deletion" in wrong.text
    forced = admin_client.post(
        f"/admin/clusters/{world.cluster_id}/delete",
        data={"csrf_token": csrf_of(page.text), "confirm_name": "c1", "force": "true"},
    )
    assert forced.status_code == 200
    with session_factory() as session:
        cluster = session.get(Cluster, world.cluster_id)
        assert cluster is not None
        assert (cluster.phase, cluster.paused) == ("deleting", False)
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "dashboard_delete_cluster")
        ).all()
        assert [e.outcome for e in event] == ["refused", "success"]


def test_editing_a_regions_versions_and_flavors(admin_client: TestClient, world: World) -> None:
    page = admin_client.get("/admin/regions")
    saved = admin_client.post(
        "/admin/regions/r1",
        data={
            "csrf_token": csrf_of(page.text),
            "kubernetes_versions": "1.31.0, 1.30.2",
            "default_kubernetes_version": "1.31.0",
            "flavors": "small 2 4096\nhuge 32 131072\n",
        },
    )
    assert saved.status_code == 200
    region = world.call("admin", "GET", "/v1/regions/r1").json()
    assert region["kubernetes_versions"] == ["1.31.0", "1.30.2"]
    assert region["default_kubernetes_version"] == "1.31.0"
    assert [f["name"] for f in region["flavors"]] == ["small", "huge"]
    bad = admin_client.post(
        "/admin/regions/r1", data={"csrf_token": csrf_of(page.text), "flavors": "broken line"}
    )
    assert bad.status_code == 422
    assert "name vcpus ram_mb" in bad.text


def test_the_regions_page_shows_the_clouds_limits_and_use_once_observed(
    admin_client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    page = admin_client.get("/admin/regions")
    assert "limits and use are not observed yet" in page.text
    with session_factory() as session:
        region = session.scalars(select(Region).where(Region.name == "r1")).one()
        region.cloud_capacity = {
            "cores_limit": 200,
            "cores_used": 50,
            "ram_mb_limit": None,
            "ram_mb_used": 8192,
            "instances_limit": 40,
            "instances_used": 10,
        }
        region.cloud_capacity_at = utcnow() - timedelta(minutes=3)
        session.commit()
    text = re.sub(r"\s+", " ", admin_client.get("/admin/regions").text)
    assert "<strong>50</strong> / 200 vCPUs (25%)" in text
    assert "<strong>8192</strong> / unlimited MiB RAM" in text
    assert "<strong>10</strong> / 40 servers (25%)" in text
    assert "observed 3m ago" in text


def test_revoking_a_token_from_the_dashboard(
    admin_client: TestClient, world: World, session_factory: sessionmaker[Session]
) -> None:
    page = admin_client.get("/admin/users?user=member")
    assert world.call("member", "GET", "/v1/me").status_code == 200
    with session_factory() as session:
        token_ids = [t.id for t in session.scalars(select(ApiToken).join(User).where(User.name == "member"))]
    for token_id in token_ids:
        response = admin_client.post(
            f"/admin/tokens/{token_id}/revoke", data={"csrf_token": csrf_of(page.text)}
        )
        assert response.status_code == 200
        assert "Revoked token" in response.text
    assert world.call("member", "GET", "/v1/me").status_code == 401


def test_revoking_the_sessions_own_token_ends_the_session(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        admin = session.scalar(select(User).where(User.name == "admin"))
        assert admin is not None
        row, token = issue_token(session, admin, ttl=timedelta(hours=1))
        session.commit()
    client = login(world.client, token)
    page = client.get("/admin/users")
    client.post(f"/admin/tokens/{row.id}/revoke", data={"csrf_token": csrf_of(page.text)})
    assert client.get("/admin", follow_redirects=False).status_code == 303


def test_logout_ends_the_session(admin_client: TestClient) -> None:
    page = admin_client.get("/admin")
    cookie = admin_client.cookies.get("kaas_admin_session")
    response = admin_client.post(
        "/admin/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False
    )
    assert response.status_code == 303
    admin_client.cookies.set("kaas_admin_session", cookie or "", path="/admin")
    assert admin_client.get("/admin", follow_redirects=False).status_code == 303


def test_the_audit_page_filters_by_user(admin_client: TestClient, world: World) -> None:
    world.call("viewer", "DELETE", "/v1/projects/alpha/clusters/c1")
    text = admin_client.get("/admin/audit?user=viewer").text
    assert "delete_cluster" in text
    assert "create_cluster" not in text
    bad = admin_client.get("/admin/audit?since=yesterday")
    assert bad.status_code == 422
    assert "date and time" in bad.text
