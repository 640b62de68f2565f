"""The cluster GET from memory (``kaas_api.clusters.view_cache``): a hit reads no database; the caller's own
writes show at once, another process's within the TTL; access taken away answers at once, on every replica;
what a caller may not see is never served to them from memory."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.clusters.view_cache import ClusterView, ClusterViewCache
from kaas_api.projects.service import remove_member
from kaas_core.credential_cache import InProcessRevocationFeed, Revocation
from kaas_core.db.models import Cluster, ClusterPhase, Project, Role
from tests.kaas_api.conftest import World, statements_during

CLUSTER = "/v1/projects/alpha/clusters/c1"


def views_of(client: TestClient) -> ClusterViewCache:
    cache: ClusterViewCache = client.app.state.kaas.cluster_views  # type: ignore[attr-defined]
    return cache


def statements(session_factory: sessionmaker[Session], call: Callable[[], Any]) -> tuple[Any, list[str]]:
    """``call()``'s answer and its statements, without the test's own savepoints."""
    answer, seen = statements_during(session_factory, call)
    return answer, [s for s in seen if not s.startswith(("SAVEPOINT", "RELEASE", "ROLLBACK TO"))]


def test_a_second_get_reads_no_database_and_answers_the_same(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    first, first_statements = statements(session_factory, lambda: world.call("viewer", "GET", CLUSTER))
    second, second_statements = statements(session_factory, lambda: world.call("viewer", "GET", CLUSTER))
    assert (first.status_code, second.status_code) == (200, 200)
    assert first_statements, "the first GET read nothing: was it cached before the test?"
    assert second_statements == []
    assert second.json() == first.json()
    assert second.headers["content-type"] == "application/json"
    assert views_of(world.client).hits >= 1


def test_the_callers_own_write_shows_at_once(world: World) -> None:
    assert world.call("member", "GET", CLUSTER).status_code == 200  # kept
    window = {
        "maintenance_window": {"day": "sat", "start": "02:00", "duration_minutes": 240, "time_zone": "UTC"}
    }
    assert world.call("member", "PATCH", CLUSTER, window).status_code == 202
    shown = world.call("member", "GET", CLUSTER).json()
    assert shown["maintenance_window"]["day"] == "sat"


def test_a_change_committed_here_shows_at_once(world: World, session_factory: sessionmaker[Session]) -> None:
    assert world.call("viewer", "GET", CLUSTER).json()["phase"] != ClusterPhase.RUNNING.value
    with session_factory() as session:  # as a provider worker of `kaas up` does, in this process
        row = session.get(Cluster, world.cluster_id)
        assert row is not None
        row.phase = ClusterPhase.RUNNING.value
        session.commit()
    assert world.call("viewer", "GET", CLUSTER).json()["phase"] == ClusterPhase.RUNNING.value


def test_a_member_removed_is_refused_at_once_and_an_outsider_never_served(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    for _ in range(2):
        assert world.call("member", "GET", CLUSTER).status_code == 200
    assert world.call("outsider", "GET", CLUSTER).status_code == 404  # the view is kept; the role is not
    assert world.call("admin", "GET", CLUSTER).status_code == 200
    with session_factory() as session:
        project = session.scalars(select(Project).where(Project.name == "alpha")).one()
        remove_member(session, project, "member")
        session.commit()
    assert world.call("member", "GET", CLUSTER).status_code == 404


def view(cluster_id: str = "c-1", project_id: str = "p-1") -> ClusterView:
    return ClusterView(project_id=project_id, cluster_id=cluster_id, body=b'{"name": "c1"}')


def keep(cache: ClusterViewCache, ref: str, shown: ClusterView, *, role: Role | None = Role.VIEWER) -> None:
    cache.store(
        generation=cache.generation(),
        project_ref="alpha",
        cluster_ref=ref,
        view=shown,
        user_id="u-1",
        role=role,
    )


def test_a_kept_role_must_be_strong_enough_and_an_admin_needs_none() -> None:
    cache = ClusterViewCache(InProcessRevocationFeed(), ttl_seconds=30.0)
    keep(cache, "c1", view())
    assert cache.answer("u-1", False, "alpha", "c1", need=Role.VIEWER) == b'{"name": "c1"}'
    assert cache.answer("u-1", False, "alpha", "c1", need=Role.MEMBER) is None
    assert cache.answer("u-2", False, "alpha", "c1", need=Role.VIEWER) is None
    assert cache.answer("u-2", True, "alpha", "c1", need=Role.VIEWER) is not None
    assert cache.answer("u-1", False, "alpha", "other", need=Role.VIEWER) is None


def test_a_view_lives_its_ttl_and_a_read_racing_a_change_is_not_kept() -> None:
    now = [10.0]
    cache = ClusterViewCache(InProcessRevocationFeed(), ttl_seconds=1.0, clock=lambda: now[0])
    generation = cache.generation()
    cache.forget({"c-9"})  # any change while a read was in flight
    cache.store(
        generation=generation,
        project_ref="alpha",
        cluster_ref="c1",
        view=view(),
        user_id="u-1",
        role=Role.OWNER,
    )
    assert cache.answer("u-1", False, "alpha", "c1", need=Role.VIEWER) is None
    keep(cache, "c1", view())
    now[0] += 0.9
    assert cache.answer("u-1", False, "alpha", "c1", need=Role.VIEWER) is not None
    now[0] += 0.2
    assert cache.answer("u-1", False, "alpha", "c1", need=Role.VIEWER) is None


def test_forgetting_a_cluster_keeps_the_others_and_a_revocation_forgets_all() -> None:
    cache = ClusterViewCache(InProcessRevocationFeed(), ttl_seconds=30.0)
    keep(cache, "c1", view("c-1"))
    keep(cache, "c2", view("c-2"))
    cache.forget({"c-1"})
    assert cache.answer("u-1", False, "alpha", "c1", need=Role.VIEWER) is None
    assert cache.answer("u-1", False, "alpha", "c2", need=Role.VIEWER) is not None
    cache.invalidate([Revocation("user", "u-1")])
    assert len(cache) == 0


def warm(client: TestClient, headers: dict[str, str]) -> None:
    """Until the replica answers this caller's GET from memory."""
    cache = views_of(client)
    deadline = time.monotonic() + 10.0
    hits = cache.hits
    while cache.hits == hits:
        assert client.get(CLUSTER, headers=headers).status_code == 200
        assert time.monotonic() < deadline, "the replica never answered from memory"
        time.sleep(0.02)


@pytest.mark.redis
@pytest.mark.committing
def test_across_replicas_access_goes_at_once_and_status_within_the_ttl(
    world: World, api_replicas: list[TestClient], session_factory: sessionmaker[Session]
) -> None:
    first, second = api_replicas
    member = world.auth("member")
    for client in api_replicas:
        warm(client, member)
    # a member removed on one replica: refused by the other within a second (the revocation feed)
    response = first.delete("/v1/projects/alpha/members/member", headers=world.auth("owner"))
    assert response.status_code == 204, response.text
    removed_at = time.monotonic()
    while (answer := second.get(CLUSTER, headers=member)).status_code == 200:
        assert time.monotonic() - removed_at < 1.0, "a replica still served a removed member"
        time.sleep(0.02)
    assert answer.status_code == 404
    # a status written by another process (a provider worker): shown by every replica within the TTL
    viewer = world.auth("viewer")
    for client in api_replicas:
        warm(client, viewer)
    with session_factory() as session:
        row = session.get(Cluster, world.cluster_id)
        assert row is not None
        row.phase = ClusterPhase.RUNNING.value
        session.commit()
    written_at = time.monotonic()
    for client in api_replicas:
        while client.get(CLUSTER, headers=viewer).json()["phase"] != ClusterPhase.RUNNING.value:
            assert time.monotonic() - written_at < 1.0 + 0.5, "a replica served a status older than its TTL"
            time.sleep(0.02)
