"""The admin dashboard in a real headless Chromium (Debian's, driven by Playwright) against the real API
served by uvicorn on 127.0.0.1 and PostgreSQL: log in, see the overview, find a cluster by name, open it,
pause and resume it (confirming the dialogs), read its operation timeline, revoke a token; upgrade a cluster
and steer its rollout (a paused upgrade's reason and per-node progress, Resume); a non-admin is refused.
Each page's screenshot is kept in docs/screenshots/."""

from __future__ import annotations

import os
import shutil

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import ApiToken, Cluster, Operation, Region, utcnow
from kaas_core.security import hash_token
from tests.conftest import ROOT
from tests.kaas_api.conftest import World, cluster_body

# committing: uvicorn serves the browser's requests side by side, in threads of its own
pytestmark = [pytest.mark.e2e, pytest.mark.committing]

SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("KAAS_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def more_clusters(world: World, session_factory: sessionmaker[Session]) -> None:
    """A small fleet: a second running-looking cluster and one whose create failed."""
    for name in ("web-frontend", "batch-jobs"):
        response = world.call("owner", "POST", "/v1/projects/alpha/clusters", cluster_body(name))
        assert response.status_code == 202, response.text
    with session_factory() as session:
        failed = session.scalar(select(Cluster).where(Cluster.name == "batch-jobs"))
        assert failed is not None
        failed.phase = "error"
        operation = session.scalar(select(Operation).where(Operation.cluster_id == failed.id))
        assert operation is not None
        operation.state, operation.step, operation.progress = "failed", "control_plane", 40
        operation.error = "control_plane: flavor 'small' does not exist in the cloud"
        region = session.scalar(select(Region).where(Region.name == "r1"))
        assert region is not None
        region.cloud_capacity = {  # as the region's periodic sweep records what the cloud says
            "cores_limit": 200,
            "cores_used": 12,
            "ram_mb_limit": 409600,
            "ram_mb_used": 24576,
            "instances_limit": 50,
            "instances_used": 6,
        }
        region.cloud_capacity_at = utcnow()
        session.commit()


def shoot(page: object, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def test_an_admin_steers_the_fleet_in_a_real_browser(
    browser: object, base_url: str, world: World, session_factory: sessionmaker[Session]
) -> None:
    more_clusters(world, session_factory)
    context = browser.new_context(viewport={"width": 1360, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())

    # log in
    page.goto(base_url + "/admin")
    assert page.url.startswith(base_url + "/admin/login")
    shoot(page, "01-login")
    page.fill("#token", world.tokens["admin"])
    page.click("button[type=submit]")
    page.wait_for_selector("text=Fleet overview")
    assert page.inner_text("#clusters-live") == "3"
    assert "error" in page.inner_text("#by-phase")
    shoot(page, "02-overview")

    # find a cluster by name and open it
    page.click("nav >> text=Clusters")
    page.fill("#search", "web")
    page.click("form[role=search] button")
    rows = page.locator("#clusters tr")
    assert rows.count() == 2  # the header and web-frontend
    assert "web-frontend" in page.inner_text("#clusters")
    shoot(page, "03-clusters")
    page.click("#clusters >> text=web-frontend")
    page.wait_for_selector("h1 >> text=web-frontend")

    # pause and resume it, confirming each dialog
    page.click("#pause")
    page.wait_for_selector("#paused")
    assert "paused" in page.inner_text("#flash")
    shoot(page, "04-cluster-paused")
    with session_factory() as session:
        paused = session.scalar(select(Cluster).where(Cluster.name == "web-frontend"))
        assert paused is not None
        assert paused.paused
    page.click("#resume")
    page.wait_for_selector("#pause")
    assert page.locator("#paused").count() == 0

    # the operation timeline, and its audit entries
    assert "create" in page.inner_text("#operations")
    audit = page.inner_text("#audit")
    assert "dashboard_pause_cluster" in audit
    assert "dashboard_resume_cluster" in audit
    shoot(page, "05-cluster")

    # a failed cluster shows its error on the timeline
    page.goto(base_url + "/admin/clusters?phase=error")
    page.click("#clusters >> text=batch-jobs")
    timeline = page.inner_text("#operations")
    assert "failed" in timeline
    assert "does not exist in the cloud" in timeline
    assert page.locator("#retry").count() == 1
    shoot(page, "06-cluster-failed")

    # revoke a token
    assert world.call("member", "GET", "/v1/me").status_code == 200
    with session_factory() as session:
        token = session.scalar(
            select(ApiToken).where(ApiToken.token_hash == hash_token(world.tokens["member"]))
        )
        assert token is not None
        token_id = token.id
    page.goto(base_url + "/admin/users?user=member")
    page.click(f"#token-{token_id} button")
    page.wait_for_selector("#flash")
    assert "revoked" in page.inner_text(f"#token-{token_id}")
    assert world.call("member", "GET", "/v1/me").status_code == 401
    shoot(page, "07-users-and-tokens")

    page.goto(base_url + "/admin/regions")
    assert "6 / 50 servers (12%)" in " ".join(page.inner_text("#region-r1").split())
    shoot(page, "08-regions")
    page.goto(base_url + "/admin/projects")
    shoot(page, "09-projects")
    page.goto(base_url + "/admin/audit?user=admin")
    assert "dashboard_revoke_token" in page.inner_text("#audit-log")
    shoot(page, "10-audit-log")

    page.click("text=Log out")
    page.wait_for_selector("#token")
    page.goto(base_url + "/admin")
    assert page.url.startswith(base_url + "/admin/login")
    context.close()


def test_a_non_admin_is_refused_in_a_real_browser(browser: object, base_url: str, world: World) -> None:
    context = browser.new_context(viewport={"width": 1000, "height": 600})  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto(base_url + "/admin/login")
    page.fill("#token", world.tokens["owner"])
    page.click("button[type=submit]")
    page.wait_for_selector("[role=alert]")
    assert "global admins only" in page.inner_text("[role=alert]")
    shoot(page, "11-non-admin-refused")
    page.goto(base_url + "/admin/clusters")
    assert page.url.startswith(base_url + "/admin/login")
    context.close()


def test_an_admin_upgrades_a_cluster_and_resumes_its_paused_rollout_in_a_real_browser(
    browser: object, base_url: str, ha: World, session_factory: sessionmaker[Session]
) -> None:
    context = browser.new_context(viewport={"width": 1360, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(base_url + "/admin/login")
    page.fill("#token", ha.tokens["admin"])
    page.click("button[type=submit]")
    page.wait_for_selector("text=Fleet overview")
    with session_factory() as session:
        cluster = session.scalar(select(Cluster).where(Cluster.name == "ha"))
        assert cluster is not None
        cluster_id = cluster.id
    page.goto(f"{base_url}/admin/clusters/{cluster_id}")
    assert "1.29.8 pending" in page.inner_text("#pending-upgrade")  # r1's automatic upgrade on 1.29

    # upgrade it from the page: the API's operation starts
    page.select_option("#upgrade-version", "1.30.2")
    page.fill("#max-surge", "2")
    page.click("#upgrade")
    page.wait_for_selector("#flash")
    assert "upgrade-started" in page.inner_text("#flash")
    assert page.inner_text("#current-kind") == "upgrade"
    with session_factory() as session:
        operation = session.scalar(
            select(Operation).where(Operation.cluster_id == cluster_id, Operation.kind == "upgrade")
        )
        assert operation is not None
        assert (operation.state, operation.params["max_surge"]) == ("pending", 2)
        operation_id = operation.id

    # the rollout pauses on a blocked drain, as a provider pass would record it
    with session_factory() as session:
        operation = session.get_one(Operation, operation_id)
        operation.state, operation.progress, operation.step = "paused", 40, "node_pools"
        operation.paused_reason = "drain of ha-p1-a blocked for 600s: a PodDisruptionBudget refuses evictions"
        operation.nodes = [
            {"name": "ha-cp-0", "role": "control-plane", "pool": None, "version": "1.30.2", "state": "new"},
            {"name": "ha-cp-1", "role": "control-plane", "pool": None, "version": "1.30.2", "state": "new"},
            {"name": "ha-cp-2", "role": "control-plane", "pool": None, "version": "1.30.2", "state": "new"},
            {"name": "ha-p1-a", "role": "worker", "pool": "p1", "version": "1.29.6", "state": "draining"},
            {"name": "ha-p1-b", "role": "worker", "pool": "p1", "version": "1.29.6", "state": "old"},
            {"name": "ha-p1-c", "role": "worker", "pool": "p1", "version": "1.30.2", "state": "surging"},
            {"name": "ha-p2-a", "role": "worker", "pool": "p2", "version": "1.29.6", "state": "old"},
        ]
        session.commit()
    # the page's live refresh brings the paused state in without a reload
    page.wait_for_selector("#paused-reason", timeout=15_000)
    assert "PodDisruptionBudget" in page.inner_text("#paused-reason")
    assert page.inner_text("#current-state") == "paused"
    nodes = page.inner_text("#operation-nodes")
    assert "ha-p1-a" in nodes
    assert "draining" in nodes
    draining = page.locator("#operation-nodes tr.node-draining .node-state")
    old = page.locator("#operation-nodes tr.node-old .node-state").first
    assert draining.evaluate("e => getComputedStyle(e).backgroundColor") != old.evaluate(
        "e => getComputedStyle(e).backgroundColor"
    )
    assert page.locator("#operation-pause").count() == 0
    assert page.locator("#operation-rollback").count() == 1
    shoot(page, "12-cluster-upgrade-paused")

    # resume it: running again, the reason gone
    page.click("#operation-resume")
    page.wait_for_selector("#flash >> text=operation-resumed")
    assert page.inner_text("#current-state") == "running"
    assert page.locator("#paused-reason").count() == 0
    assert page.locator("#operation-pause").count() == 1
    with session_factory() as session:
        assert session.get_one(Operation, operation_id).state == "running"
    context.close()
