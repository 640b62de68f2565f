"""Tenant isolation: another project's resources answer 404 and never show up in lists."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.projects.service import create_project, set_member
from kaas_api.users.service import create_user
from kaas_core.db.models import Role
from tests.kaas_api.conftest import UNLIMITED, World, bearer, cluster_body
from tests.kaas_api.test_authorization import MATRIX, app_routes, concrete_path


@pytest.fixture
def rival(world: World, session_factory: sessionmaker[Session]) -> dict[str, str]:
    """User ``rival`` owns project ``bravo`` with cluster ``secret``; ``outsider`` is a viewer there."""
    with session_factory() as session:
        user, token = create_user(session, name="rival")
        project = create_project(session, name="bravo", owner=user, policy=UNLIMITED)
        set_member(session, project, "outsider", Role.VIEWER)
        session.commit()
    created = world.client.post(
        "/v1/projects/bravo/clusters", json=cluster_body("secret"), headers=bearer(token)
    )
    assert created.status_code == 202
    return {
        "token": token,
        "cluster_id": created.json()["cluster"]["id"],
        "operation_id": created.json()["operation"]["id"],
    }


def test_project_lists_show_only_own_projects(world: World, rival: dict[str, str]) -> None:
    names = [p["name"] for p in world.call("owner", "GET", "/v1/projects").json()]
    assert names == ["alpha", "empty"]
    rival_names = [p["name"] for p in world.client.get("/v1/projects", headers=bearer(rival["token"])).json()]
    assert rival_names == ["bravo"]
    assert [p["name"] for p in world.call("admin", "GET", "/v1/projects").json()] == [
        "alpha",
        "bravo",
        "empty",
    ]


def test_other_projects_answer_404_like_missing_ones(world: World, rival: dict[str, str]) -> None:
    for path in ("/v1/projects/bravo", "/v1/projects/bravo/clusters", "/v1/projects/bravo/clusters/secret"):
        existing = world.call("owner", "GET", path)
        missing = world.call("owner", "GET", path.replace("bravo", "nothere"))
        assert existing.status_code == missing.status_code == 404
        assert existing.json()["error"] == "not_found"


def test_cluster_ids_of_other_projects_are_not_reachable_through_own_project(
    world: World, rival: dict[str, str]
) -> None:
    response = world.call("owner", "GET", f"/v1/projects/alpha/clusters/{rival['cluster_id']}")
    assert response.status_code == 404
    response = world.call("owner", "DELETE", f"/v1/projects/alpha/clusters/{rival['cluster_id']}")
    assert response.status_code == 404


def test_operations_of_other_projects_answer_404(world: World, rival: dict[str, str]) -> None:
    assert world.call("owner", "GET", f"/v1/operations/{rival['operation_id']}").status_code == 404
    assert world.call("outsider", "GET", f"/v1/operations/{rival['operation_id']}").status_code == 200
    assert world.call("outsider", "GET", f"/v1/operations/{world.operation_id}").status_code == 404


def test_writes_into_other_projects_answer_404_not_403(world: World, rival: dict[str, str]) -> None:
    assert world.call("owner", "POST", "/v1/projects/bravo/clusters", cluster_body("x")).status_code == 404
    assert (
        world.call("owner", "PUT", "/v1/projects/bravo/members/owner", {"role": "owner"}).status_code == 404
    )
    # a viewer sees the project, so a write is forbidden rather than hidden
    assert world.call("outsider", "POST", "/v1/projects/bravo/clusters", cluster_body("x")).status_code == 403


def test_same_cluster_name_in_different_projects_is_fine(world: World, rival: dict[str, str]) -> None:
    assert (
        world.call("owner", "POST", "/v1/projects/alpha/clusters", cluster_body("secret")).status_code == 202
    )


PROJECT_ROUTES = sorted(key for key in MATRIX if "{project}" in key[1])


def test_the_project_scoped_routes_are_the_ones_of_the_authorization_matrix(app: FastAPI) -> None:
    scoped = {key for key in app_routes(app) if "{project}" in key[1]}
    assert scoped == set(PROJECT_ROUTES)
    assert len(scoped) > 20


@pytest.mark.parametrize(("method", "template"), PROJECT_ROUTES)
def test_every_project_scoped_route_answers_an_outsider_exactly_as_for_a_missing_project(
    world: World, method: str, template: str
) -> None:
    """Status and body are the same for ``alpha`` (exists, outsider is no member) and a name that does not
    exist, once the name itself is taken out of the message: nothing tells the two apart."""
    body = MATRIX[(method, template)].body
    path = concrete_path(world, template, "outsider")
    project = path.split("/")[3]
    missing_path = path.replace(f"/v1/projects/{project}", "/v1/projects/zulu", 1)
    assert missing_path != path
    existing = world.call("outsider", method, path, body)
    missing = world.call("outsider", method, missing_path, body)
    assert existing.status_code == missing.status_code == 404, (existing.text, missing.text)
    assert existing.json() == json.loads(missing.text.replace("zulu", project))
