"""The k8s proxies' credential cache: what it remembers, and that every committed revocation empties it.

A real PostgreSQL; the feed is the process's own (``InProcessRevocationFeed``), so a commit through a hooked
session factory reaches the cache as it reaches it over Redis in a deployment (``tests/kaas_tunnel/
test_k8s_proxy.py`` has the two-process form).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.auth.service import Principal, revoke_token
from kaas_api.projects.service import remove_member, set_member
from kaas_api.users.service import create_user
from kaas_core.cluster_access import ClusterNotVisible, InvalidCredentials, ProxyIdentity
from kaas_core.credential_cache import (
    CredentialCache,
    InProcessRevocationFeed,
    LastUsedRecorder,
    Revocation,
    install_revocation_hooks,
)
from kaas_core.db.models import ApiToken, Cluster, Project, Role, User, utcnow
from kaas_core.db.session import session_scope
from tests.provider.factories import CreatedCluster, create_cluster, ensure_project

pytestmark = pytest.mark.committing


@dataclass(frozen=True)
class Member:
    token: str
    cluster: CreatedCluster


@pytest.fixture
def member(session_factory: sessionmaker[Session]) -> Member:
    cluster = create_cluster(session_factory)
    with session_scope(session_factory) as session:
        _user, token = create_user(session, name="mia")
        set_member(session, ensure_project(session), "mia", Role.MEMBER)
    return Member(token=token, cluster=cluster)


def cache_for(session_factory: sessionmaker[Session], **options: object) -> CredentialCache:
    feed = InProcessRevocationFeed()
    install_revocation_hooks(session_factory, feed)
    return CredentialCache(session_factory, feed=feed, ttl_seconds=60.0, **options)  # type: ignore[arg-type]


def bearer(token: str) -> str:
    return f"Bearer {token}"


async def test_a_remembered_answer_costs_no_database_read(
    session_factory: sessionmaker[Session], member: Member
) -> None:
    cache = cache_for(session_factory)
    first = await cache.authorize(bearer(member.token), member.cluster.id)
    second = await cache.authorize(bearer(member.token), member.cluster.id)
    assert (cache.misses, cache.hits) == (1, 1)
    assert second == first
    assert first.groups == ("kaas:authenticated", "kaas:member")


async def test_a_revoked_token_is_refused_at_once_after_the_commit(
    session_factory: sessionmaker[Session], member: Member
) -> None:
    cache = cache_for(session_factory)
    identity = await cache.authorize(bearer(member.token), member.cluster.id)
    with session_scope(session_factory) as session:
        user = session.scalars(select(User).where(User.name == "mia")).one()
        token = session.get(ApiToken, identity.token_id)
        assert token is not None
        revoke_token(session, Principal.of(user, token), token.id)
    with pytest.raises(InvalidCredentials, match="token was revoked"):
        await cache.authorize(bearer(member.token), member.cluster.id)


async def test_a_removed_membership_and_a_deleted_cluster_are_forgotten_at_once(
    session_factory: sessionmaker[Session], member: Member
) -> None:
    cache = cache_for(session_factory)
    other = create_cluster(session_factory, name="other")
    await cache.authorize(bearer(member.token), member.cluster.id)
    await cache.authorize(bearer(member.token), other.id)
    with session_scope(session_factory) as session:
        cluster = session.get(Cluster, other.id)
        assert cluster is not None
        cluster.deleted_at = utcnow()
    with pytest.raises(ClusterNotVisible):
        await cache.authorize(bearer(member.token), other.id)
    assert (await cache.authorize(bearer(member.token), member.cluster.id)).cluster_id == member.cluster.id
    with session_scope(session_factory) as session:
        remove_member(session, session.scalars(select(Project)).one(), "mia")
    with pytest.raises(ClusterNotVisible):
        await cache.authorize(bearer(member.token), member.cluster.id)


async def test_a_rolled_back_change_revokes_nothing(
    session_factory: sessionmaker[Session], member: Member
) -> None:
    cache = cache_for(session_factory)
    await cache.authorize(bearer(member.token), member.cluster.id)
    with session_factory() as session:
        session.scalars(select(ApiToken)).one().revoked_at = utcnow()
        session.flush()
        session.rollback()
    await cache.authorize(bearer(member.token), member.cluster.id)
    assert cache.hits == 1


async def test_an_answer_read_while_a_revocation_came_is_not_remembered(
    session_factory: sessionmaker[Session], member: Member
) -> None:
    racing: list[CredentialCache] = []

    def revoke_meanwhile(_session: Session, identity: ProxyIdentity) -> None:
        racing[0].invalidate([Revocation("token", identity.token_id)])

    cache = cache_for(session_factory, on_miss=revoke_meanwhile)
    racing.append(cache)
    await cache.authorize(bearer(member.token), member.cluster.id)
    await cache.authorize(bearer(member.token), member.cluster.id)
    assert (cache.misses, cache.hits) == (2, 0)


class DeafFeed(InProcessRevocationFeed):
    """A feed whose subscription is down."""

    @property
    def listening(self) -> bool:
        return False


async def test_nothing_is_remembered_while_the_feed_is_not_listening(
    session_factory: sessionmaker[Session], member: Member
) -> None:
    cache = CredentialCache(session_factory, feed=DeafFeed(), ttl_seconds=60.0)
    for _ in range(3):
        await cache.authorize(bearer(member.token), member.cluster.id)
    assert (cache.misses, cache.hits) == (3, 0)


async def test_last_use_is_written_in_one_batch_at_most_once_a_minute(
    session_factory: sessionmaker[Session], member: Member
) -> None:
    recorder = LastUsedRecorder(session_factory)
    cache = cache_for(session_factory, recorder=recorder)
    for _ in range(5):
        await cache.authorize(bearer(member.token), member.cluster.id)
    with session_factory() as session:
        assert session.scalars(select(ApiToken)).one().last_used_at is None  # not on the request path
    assert recorder.flush() == 1
    with session_factory() as session:
        assert session.scalars(select(ApiToken)).one().last_used_at is not None
    await cache.authorize(bearer(member.token), member.cluster.id)
    assert recorder.flush() == 0


def test_revocations_name_what_they_concern() -> None:
    identity = ProxyIdentity(
        user="mia",
        groups=(),
        token_id="t",
        token_kind="user",
        cluster_id="c",
        cluster_name="demo",
        project="team",
        user_id="u",
        project_id="p",
    )
    concerning: Sequence[Revocation] = [
        Revocation("token", "t"),
        Revocation("user", "u"),
        Revocation("project", "p"),
        Revocation("cluster", "c"),
        Revocation("all"),
    ]
    assert all(revocation.concerns(identity) for revocation in concerning)
    assert not any(
        Revocation(kind, "x").concerns(identity) for kind in ("token", "user", "project", "cluster")
    )
