"""Who may create projects (``KAAS_PROJECT_CREATION``, ``KAAS_MAX_PROJECTS_PER_USER``), and what a taken
name tells a caller who is not a member of the project that has it."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.config import ApiSettings
from kaas_api.errors import QuotaExceeded
from kaas_api.projects.policy import CreationPolicy, ProjectCreation
from kaas_api.projects.service import create_project
from kaas_core.db.models import Project, User
from tests.kaas_api.conftest import SECRET_KEY, World


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> ApiSettings:
    overrides: dict[str, Any] = getattr(request, "param", {})
    return ApiSettings(secret_key=SECRET_KEY, database_url="postgresql+psycopg://unused/unused", **overrides)


def create(world: World, who: str, name: str) -> Any:
    return world.call(who, "POST", "/v1/projects", {"name": name})


def test_by_default_a_user_may_create_three_projects_and_deleting_one_frees_its_place(world: World) -> None:
    for index in range(3):
        assert create(world, "member", f"mine-{index}").status_code == 201
    refused = create(world, "member", "mine-3")
    assert refused.status_code == 409
    assert refused.json()["error"] == "quota_exceeded"
    assert refused.json()["detail"] == {"projects_created": 3, "max_projects_per_user": 3}
    assert world.call("member", "DELETE", "/v1/projects/mine-0").status_code == 204
    assert create(world, "member", "mine-3").status_code == 201


@pytest.mark.parametrize("settings", [{"max_projects_per_user": 1}], indirect=True)
def test_handing_a_project_to_someone_else_does_not_free_its_creators_place(world: World) -> None:
    assert create(world, "member", "handed-over").status_code == 201
    put = world.call("member", "PUT", "/v1/projects/handed-over/members/viewer", {"role": "owner"})
    assert put.status_code == 200
    demote = world.call("member", "PUT", "/v1/projects/handed-over/members/member", {"role": "member"})
    assert demote.status_code == 200
    assert create(world, "member", "another").status_code == 409


@pytest.mark.parametrize("settings", [{"project_creation": "admins"}], indirect=True)
def test_with_admins_only_a_user_is_refused_and_an_admin_may(world: World) -> None:
    refused = create(world, "member", "wanted")
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"
    assert create(world, "admin", "wanted").status_code == 201


@pytest.mark.parametrize(
    "settings", [{"project_creation": "anyone", "max_projects_per_user": 1}], indirect=True
)
def test_with_anyone_there_is_no_limit(world: World) -> None:
    for index in range(4):
        assert create(world, "member", f"free-{index}").status_code == 201


@pytest.mark.parametrize("settings", [{"max_projects_per_user": 0}], indirect=True)
def test_admins_are_never_limited(world: World) -> None:
    assert create(world, "admin", "ops-1").status_code == 201
    assert create(world, "admin", "ops-2").status_code == 201
    assert create(world, "member", "nope").status_code == 409


def test_a_taken_name_tells_an_outsider_only_that_it_is_unavailable(world: World) -> None:
    response = create(world, "outsider", "alpha")
    assert response.status_code == 409
    body = response.json()
    assert body == {
        "error": "name_unavailable",
        "message": "the project name 'alpha' is not available: choose another",
        "detail": None,
    }


@pytest.mark.parametrize("who", ["admin", "viewer"])
def test_a_taken_name_is_named_plainly_to_those_who_can_see_the_project(world: World, who: str) -> None:
    response = create(world, who, "alpha")
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"
    assert "already exists" in response.json()["message"]


@pytest.mark.parametrize(
    "settings", [{"project_creation": "admins"}, {"max_projects_per_user": 0}], indirect=True
)
def test_a_user_who_may_not_create_projects_learns_nothing_from_names(world: World) -> None:
    taken = create(world, "outsider", "alpha")
    free = create(world, "outsider", "alphb")
    assert taken.status_code == free.status_code
    assert taken.status_code in (403, 409)
    assert taken.json() == free.json()


@pytest.mark.committing  # two transactions, one waiting for the other's row lock
def test_two_concurrent_creates_cannot_both_take_the_last_place(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    """The creator's row lock: without it, each transaction counts the other's project as not there."""
    policy = CreationPolicy(who=ProjectCreation.LIMITED, max_per_user=1)
    outcome: dict[str, BaseException | None] = {}

    def second() -> None:
        with session_factory() as session:
            user = session.scalars(select(User).where(User.name == "member")).one()
            try:
                create_project(session, name="race-b", owner=user, policy=policy)
                session.commit()
                outcome["b"] = None
            except BaseException as exc:
                outcome["b"] = exc

    with session_factory() as first:
        user = first.scalars(select(User).where(User.name == "member")).one()
        create_project(first, name="race-a", owner=user, policy=policy)  # holds the lock, not committed
        thread = threading.Thread(target=second)
        thread.start()
        _wait_until_a_transaction_waits_for_a_lock(session_factory)
        first.commit()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert isinstance(outcome["b"], QuotaExceeded)
    with session_factory() as session:
        names = set(session.scalars(select(Project.name).where(Project.name.like("race-%"))))
    assert names == {"race-a"}


def _wait_until_a_transaction_waits_for_a_lock(session_factory: sessionmaker[Session]) -> None:
    deadline = time.monotonic() + 10
    with session_factory() as session:
        while time.monotonic() < deadline:
            waiting = session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
            session.rollback()
            if waiting:
                return
            time.sleep(0.02)
    raise AssertionError("the second create never waited for the first one's lock")
