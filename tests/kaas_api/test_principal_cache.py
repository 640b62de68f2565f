"""The API remembers who a bearer token is (``kaas_api.auth.principal_cache``) and forgets it at the commit
that changes it: a revoked token, a disabled user, a lost admin flag answer at once, on every replica."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.auth.principal_cache import PrincipalCache
from kaas_api.auth.service import Actor, Principal, TokenUse
from kaas_core.credential_cache import InProcessRevocationFeed, Revocation
from kaas_core.db.models import User, utcnow
from tests.kaas_api.conftest import World, statements_during

CLUSTER = "/v1/projects/alpha/clusters/c1"


def cache_of(world: World) -> PrincipalCache:
    cache: PrincipalCache = world.client.app.state.kaas.principals  # type: ignore[attr-defined]
    return cache


def token_reads(session_factory: sessionmaker[Session], call: Callable[[], Any]) -> tuple[Any, int]:
    """``call()``'s answer, and how many statements it sent that read ``api_tokens``."""
    answer, seen = statements_during(session_factory, call)
    return answer, sum("FROM api_tokens" in statement for statement in seen)


def test_a_second_request_reads_no_token(world: World, session_factory: sessionmaker[Session]) -> None:
    cache = cache_of(world)
    first, first_reads = token_reads(session_factory, lambda: world.call("viewer", "GET", CLUSTER))
    second, second_reads = token_reads(session_factory, lambda: world.call("viewer", "GET", CLUSTER))
    assert (first.status_code, second.status_code) == (200, 200)
    assert (first_reads, second_reads) == (1, 0)
    assert cache.hits >= 1
    # a write route authenticates from it as well, and still gets the caller's row where it needs one
    created, created_reads = token_reads(
        session_factory, lambda: world.call("viewer", "POST", "/v1/tokens", {"description": "x"})
    )
    assert created.status_code == 201, created.text
    assert created_reads == 0
    me = world.call("viewer", "GET", "/v1/me")
    assert me.json()["name"] == "viewer"


def test_a_revoked_token_is_refused_at_once(world: World) -> None:
    made = world.call("member", "POST", "/v1/tokens", {"description": "short"})
    assert made.status_code == 201, made.text
    token, token_id = made.json()["token"], made.json()["info"]["id"]
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(2):  # the second from the cache
        assert world.client.get(CLUSTER, headers=headers).status_code == 200
    assert world.call("member", "DELETE", f"/v1/tokens/{token_id}").status_code == 204
    refused = world.client.get(CLUSTER, headers=headers)
    assert refused.status_code == 401
    assert refused.json()["message"] == "token was revoked"


def test_a_disabled_user_and_a_lost_admin_flag_answer_at_once(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    for _ in range(2):
        assert world.call("viewer", "GET", CLUSTER).status_code == 200
        assert world.call("admin", "GET", "/v1/users").status_code == 200
    with session_factory() as session:
        viewer = session.get(User, world.user_ids["viewer"])
        admin = session.get(User, world.user_ids["admin"])
        assert viewer is not None
        assert admin is not None
        viewer.disabled_at = utcnow()
        admin.is_admin = False
        session.commit()
    refused = world.call("viewer", "GET", CLUSTER)
    assert (refused.status_code, refused.json()["message"]) == (401, "user is disabled")
    assert world.call("admin", "GET", "/v1/users").status_code == 403


def test_a_rolled_back_change_forgets_nothing(world: World, session_factory: sessionmaker[Session]) -> None:
    cache = cache_of(world)
    assert world.call("viewer", "GET", CLUSTER).status_code == 200
    with session_factory() as session:
        viewer = session.get(User, world.user_ids["viewer"])
        assert viewer is not None
        viewer.disabled_at = utcnow()
        session.flush()
        session.rollback()
    hits = cache.hits
    assert world.call("viewer", "GET", CLUSTER).status_code == 200
    assert cache.hits == hits + 1


def principal(which: str = "t1", *, user_id: str = "u1", expires_in: float | None = None) -> Principal:
    now = utcnow()
    return Principal(
        user=Actor(id=user_id, name="vera", is_admin=False),
        token=TokenUse(
            id=which,
            expires_at=now + timedelta(seconds=expires_in) if expires_in is not None else None,
            last_used_at=now,
        ),
    )


def test_an_answer_read_while_a_revocation_came_is_not_kept() -> None:
    cache = PrincipalCache(InProcessRevocationFeed(), ttl_seconds=30.0)
    generation = cache.generation()
    cache.invalidate([Revocation("token", "some other token")])  # any revocation: the look-up may be stale
    kept = principal()
    cache.store("h1", kept, generation=generation)
    assert cache.lookup("h1") is None
    cache.store("h1", kept, generation=cache.generation())
    assert cache.lookup("h1") is kept


def test_an_entry_lives_no_longer_than_its_ttl_or_its_token() -> None:
    now = [100.0]
    cache = PrincipalCache(InProcessRevocationFeed(), ttl_seconds=5.0, clock=lambda: now[0])
    cache.store("lasting", principal("t1"), generation=cache.generation())
    cache.store("expiring", principal("t2", expires_in=1.0), generation=cache.generation())
    now[0] += 2.0
    assert cache.lookup("lasting") is not None
    assert cache.lookup("expiring") is None
    now[0] += 3.5
    assert cache.lookup("lasting") is None


def test_a_token_whose_use_is_due_to_be_written_is_read_again() -> None:
    cache = PrincipalCache(InProcessRevocationFeed(), ttl_seconds=30.0)
    stale = Principal(
        user=Actor(id="u1", name="vera", is_admin=False),
        token=TokenUse(id="t1", expires_at=None, last_used_at=None),
    )
    cache.store("h1", stale, generation=cache.generation())
    assert cache.lookup("h1") is None


def test_revocations_forget_only_what_they_concern() -> None:
    cache = PrincipalCache(InProcessRevocationFeed(), ttl_seconds=30.0)
    for key, token_id, user_id in (("a", "t1", "u1"), ("b", "t2", "u1"), ("c", "t3", "u2")):
        cache.store(key, principal(token_id, user_id=user_id), generation=cache.generation())
    cache.invalidate([Revocation("project", "p1"), Revocation("cluster", "c1")])
    assert len(cache) == 3
    cache.invalidate([Revocation("token", "t3")])
    assert cache.lookup("c") is None
    cache.invalidate([Revocation("user", "u1")])
    assert len(cache) == 0


class SilentFeed(InProcessRevocationFeed):
    @property
    def listening(self) -> bool:
        return False


def test_nothing_is_kept_while_the_feed_is_not_listening() -> None:
    cache = PrincipalCache(SilentFeed(), ttl_seconds=30.0)
    cache.store("h1", principal(), generation=cache.generation())
    assert cache.lookup("h1") is None
    assert len(cache) == 0


@pytest.mark.redis
@pytest.mark.committing
def test_a_token_revoked_on_one_replica_is_refused_by_every_replica_within_a_second(
    world: World, api_replicas: list[TestClient]
) -> None:
    made = world.call("member", "POST", "/v1/tokens", {"description": "short"})
    assert made.status_code == 201, made.text
    token, token_id = made.json()["token"], made.json()["info"]["id"]
    headers = {"Authorization": f"Bearer {token}"}
    for client in api_replicas:  # the first request starts the feed; the cache is used once it listens
        cache: PrincipalCache = client.app.state.kaas.principals  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10.0
        while not cache.feed.listening:
            assert client.get(CLUSTER, headers=headers).status_code == 200
            assert time.monotonic() < deadline, "the revocation feed did not subscribe"
            time.sleep(0.02)
        hits = cache.hits
        for _ in range(2):  # the first stores its answer (if the last one above did not), the second uses it
            assert client.get(CLUSTER, headers=headers).status_code == 200
        assert cache.hits > hits, "the replica did not answer from its cache"
    first, second = api_replicas
    assert first.delete(f"/v1/tokens/{token_id}", headers=headers).status_code == 204
    revoked_at = time.monotonic()
    for client in (first, second):
        while (answer := client.get(CLUSTER, headers=headers)).status_code == 200:
            assert time.monotonic() - revoked_at < 1.0, "a replica still let the revoked token through"
            time.sleep(0.02)
        assert (answer.status_code, answer.json()["message"]) == (401, "token was revoked")
