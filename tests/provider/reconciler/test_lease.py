"""The cluster lease: one holder at a time, on PostgreSQL and on SQLite, and it expires after a crash."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import Cluster, utcnow
from kaas_core.db.session import make_engine, make_session_factory, session_scope
from provider.reconciler.lease import acquire_lease, release_lease
from tests.conftest import alembic_config
from tests.provider.factories import create_cluster


@pytest.fixture
def sqlite_session_factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'kaas.db'}"
    command.upgrade(alembic_config(url), "head")
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def any_session_factory(request: pytest.FixtureRequest, tmp_path: Path) -> sessionmaker[Session]:
    if request.param == "postgresql":
        factory: sessionmaker[Session] = request.getfixturevalue("session_factory")
        return factory
    factory = request.getfixturevalue("sqlite_session_factory")
    return factory


def test_only_one_owner_holds_the_lease(any_session_factory: sessionmaker[Session]) -> None:
    cluster = create_cluster(any_session_factory)
    assert acquire_lease(any_session_factory, cluster.id, owner="a", lease_seconds=60)
    assert not acquire_lease(any_session_factory, cluster.id, owner="b", lease_seconds=60)
    assert acquire_lease(any_session_factory, cluster.id, owner="a", lease_seconds=60)  # renewal


def test_a_released_lease_can_be_taken(any_session_factory: sessionmaker[Session]) -> None:
    cluster = create_cluster(any_session_factory)
    assert acquire_lease(any_session_factory, cluster.id, owner="a", lease_seconds=60)
    with session_scope(any_session_factory) as session:
        release_lease(session, cluster.id, owner="a")
    assert acquire_lease(any_session_factory, cluster.id, owner="b", lease_seconds=60)
    with any_session_factory() as session:
        assert session.get_one(Cluster, cluster.id).lease_owner == "b"


def test_an_expired_lease_of_a_crashed_worker_is_taken_over(
    any_session_factory: sessionmaker[Session],
) -> None:
    cluster = create_cluster(any_session_factory)
    assert acquire_lease(any_session_factory, cluster.id, owner="crashed", lease_seconds=30)
    later = utcnow() + timedelta(seconds=31)
    assert not acquire_lease(any_session_factory, cluster.id, owner="b", lease_seconds=30)
    assert acquire_lease(any_session_factory, cluster.id, owner="b", lease_seconds=30, now=later)


def test_releasing_someone_elses_lease_does_nothing(any_session_factory: sessionmaker[Session]) -> None:
    cluster = create_cluster(any_session_factory)
    assert acquire_lease(any_session_factory, cluster.id, owner="a", lease_seconds=60)
    with session_scope(any_session_factory) as session:
        release_lease(session, cluster.id, owner="b")
    assert not acquire_lease(any_session_factory, cluster.id, owner="b", lease_seconds=60)


def test_concurrent_acquirers_get_exactly_one_winner(session_factory: sessionmaker[Session]) -> None:
    cluster = create_cluster(session_factory)
    barrier = threading.Barrier(8)
    wins: list[str] = []

    def contend(owner: str) -> None:
        barrier.wait()
        if acquire_lease(session_factory, cluster.id, owner=owner, lease_seconds=60):
            wins.append(owner)

    threads = [threading.Thread(target=contend, args=(f"w{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
