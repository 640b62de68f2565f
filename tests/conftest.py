"""Shared fixtures: a real, migrated PostgreSQL database per test session; Redis; leak checks.

Every test that touches the database gets a fresh schema built by ``alembic upgrade head`` on PostgreSQL
(127.0.0.1:5432, trust auth). Set ``KAAS_TEST_DATABASE_URL`` to point elsewhere. Tests that need
PostgreSQL, Redis or the real OpenStack fail in CI (``CI=true``) instead of skipping.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db import migrate
from kaas_core.db.session import make_engine, make_session_factory

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("KAAS_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("KAAS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI") == "true" or os.environ.get("KAAS_REQUIRE_SERVICES") == "1"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    if _port_open(host, port):
        return
    message = f"{name} is not running on {host}:{port}; .ci/run starts it"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def alembic_config(database_url: str) -> Config:
    """The migrations as kaas runs them (``kaas_core.db.migrate``): from the package, not a path."""
    return migrate.alembic_config(database_url)


def create_pg_database() -> str:
    """A new, empty PostgreSQL database; returns its URL."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"kaas_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def migrated_database_url() -> Iterator[str]:
    """One migrated PostgreSQL database for the test session (tests clean their rows via ``db_engine``)."""
    url = create_pg_database()
    command.upgrade(alembic_config(url), "head")
    yield url
    drop_pg_database(url)


TABLES_IN_DELETE_ORDER = (
    "audit_events", "admin_sessions", "api_tokens", "cluster_authorities", "cluster_bootstrap_tokens",
    "cluster_addons",
    "nodes", "operations", "node_pools", "clusters",
    "quotas", "project_members", "projects", "regions", "users",
)


@pytest.fixture
def db_engine(migrated_database_url: str) -> Iterator[Engine]:
    """An engine on the migrated database, emptied after the test.

    Not a rolled-back transaction: the provider's workers and the API commit in their own sessions and
    threads, and the tests must see exactly what they committed.
    """
    engine = make_engine(migrated_database_url)
    yield engine
    with engine.begin() as conn:
        for table in TABLES_IN_DELETE_ORDER:
            conn.execute(sa.text(f"DELETE FROM {table}"))  # noqa: S608 (a constant table name)
    engine.dispose()


@pytest.fixture
def session_factory(db_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(db_engine)


@pytest.fixture
def redis_url() -> Iterator[str]:
    require_service("Redis", "127.0.0.1", 6379)
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a non-daemon thread running: it would hang the suite or leak state."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
    for thread in leaked:
        thread.join(timeout=5)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"test leaked threads: {still}"


@pytest.fixture(scope="session")
def shared_real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """ONE real control plane for the whole session (``tests.kube_targets``: its RBAC, tokens, kwok node);
    started by the first test that asks for it, holding one of the machine's control-plane slots."""
    from tests.kube_targets import real_cluster_session

    with real_cluster_session(tmp_path_factory.mktemp("shared-real-cluster")) as shared:
        yield shared
