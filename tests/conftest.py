"""Shared fixtures: a real, migrated PostgreSQL database per test session (per xdist worker); each test in a
rolled-back transaction or, when it must, committing; Redis; leak checks; the xdist groups.

Every test that touches the database uses the schema ``alembic upgrade head`` built on PostgreSQL
(127.0.0.1:5432, trust auth; ``KAAS_TEST_PG_ADMIN_URL`` points elsewhere). Tests that need PostgreSQL, Redis
or the real OpenStack fail in CI (``CI=true`` or ``KAAS_REQUIRE_SERVICES=1``) instead of skipping.

How a test meets the database (read before adding one):

- **One rolled-back transaction, the default.** ``session_factory`` is bound to one connection inside an outer
  transaction with ``join_transaction_mode="create_savepoint"`` (SQLAlchemy 2's recipe): every commit of the
  code under test releases a savepoint, a rollback returns to it, and the end of the test rolls it all back.
  Nothing is deleted afterwards. The code under test must use that one connection one session at a time: the
  API through ``TestClient`` (one request at a time; the audit middleware writes after the request's own
  session closed), the CLI through the same, services called from the test's thread. A rolled-back test that
  left rows behind (it committed through some other connection) fails and names this rule.
- **Committing**, for a test whose code opens sessions at the same time as each other: threads of its own
  (the reconciler's lease heartbeat, Celery worker threads, the tunnel server, uvicorn serving kubectl or a
  browser), other processes (``kaas up``, workers, a process it kills), or a test about isolation between
  transactions itself (one session waiting for another's row lock; a task sent only once its row is
  committed: on one connection everything is visible at once, and such a test could no longer fail). Mark it
  ``@pytest.mark.committing`` (a module: ``pytestmark = pytest.mark.committing``; a whole directory: its
  conftest's ``pytest_itemcollected`` adds the marker, as tests/provider/conftest.py does). A test that asks
  for ``db_engine`` (say, to give its URL to a subprocess) commits too. Its tables are emptied after it.
- **In parallel.** ``scripts/test.sh`` runs pytest-xdist (``-n 2 --dist loadgroup``). Each worker is its own
  session with its own databases (uuid names) and its own Redis database: ``KAAS_TEST_REDIS_URL``'s number
  (default 15) minus the worker's index (gw0 15, gw1 14). A test that uses something one machine has once (a
  fixed port, the real OpenStack's shared demo project and its quotas, real Kubernetes control planes and
  their memory, ``kaas up`` processes, the CPU a timed chaos run measures on) must not meet another such test
  on the other worker: the markers ``openstack_real``, ``kube_real``, ``e2e`` and ``chaos`` put a test in the
  xdist group of that name (chaos and e2e share the group ``processes``: both start many kaas processes and
  the chaos run times its recovery), and a group's tests run one after another on one worker. A test that may
  start a real control plane without the marker (the k8s proxy's and the tunnel's, which fall back on the
  stand-in) joins the ``kube_real`` group through ``REAL_CONTROL_PLANES``. A new kind of shared thing:
  ``@pytest.mark.xdist_group("its-name")``.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db import (
    migrate,
    models,  # noqa: F401  (registers every table on the metadata)
)
from kaas_core.db.base import Base
from kaas_core.db.session import make_engine, make_session_factory

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("KAAS_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI") == "true" or os.environ.get("KAAS_REQUIRE_SERVICES") == "1"


def xdist_worker_index() -> int:
    """0, 1, ... for xdist's workers gw0, gw1, ...; 0 when the tests are not distributed."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker.removeprefix("gw")) if worker.startswith("gw") else 0


def redis_url_for_worker(base_url: str, index: int) -> str:
    """``base_url`` with its database number lowered by ``index``: each worker flushes only its own."""
    parts = urlsplit(base_url)
    number = int(parts.path.lstrip("/") or "0") - index
    if number < 0:
        raise pytest.UsageError(
            f"KAAS_TEST_REDIS_URL={base_url} leaves no Redis database for xdist worker {index}: "
            "use a higher database number or fewer workers"
        )
    return urlunsplit(parts._replace(path=f"/{number}"))


REDIS_URL = redis_url_for_worker(
    os.environ.get("KAAS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"), xdist_worker_index()
)


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


def create_migrated_database() -> str:
    url = create_pg_database()
    command.upgrade(alembic_config(url), "head")
    return url


class Engines:
    """One engine (and so one connection pool) per database for the whole session: a test costs no new
    PostgreSQL connections."""

    def __init__(self) -> None:
        self._engines: dict[str, Engine] = {}

    def get(self, url: str) -> Engine:
        if url not in self._engines:
            self._engines[url] = make_engine(url)
        return self._engines[url]

    def dispose(self) -> None:
        for engine in self._engines.values():
            engine.dispose()


@pytest.fixture(scope="session")
def engines() -> Iterator[Engines]:
    cache = Engines()
    yield cache
    cache.dispose()


@pytest.fixture(scope="session")
def migrated_database_url(engines: Engines) -> Iterator[str]:
    """One migrated, empty PostgreSQL database for the test session (for the xdist worker)."""
    url = create_migrated_database()
    yield url
    engines.get(url).dispose()
    drop_pg_database(url)


# table names from kaas's own metadata (no input reaches these statements); children first, so one DELETE per
# table empties them in an order the foreign keys accept
_TABLES = [table.name for table in Base.metadata.sorted_tables]
_DELETES = [f"DELETE FROM {name};" for name in reversed(_TABLES)]  # noqa: S608
_EMPTY_TABLES = "\n".join(["SET LOCAL lock_timeout = '10s';", *_DELETES])
_COUNTS = [f"(SELECT count(*) FROM {name}) AS {name}" for name in _TABLES]  # noqa: S608
_ROW_COUNTS = sa.text("SELECT " + ", ".join(_COUNTS))


def row_counts(connection: Connection) -> dict[str, int]:
    """How many rows each of kaas's tables holds."""
    return dict(connection.execute(_ROW_COUNTS).mappings().one())


def empty_tables(engine: Engine) -> None:
    """Delete every row in one round trip. Faster than TRUNCATE on tables this small (1 ms against 60 ms
    here); the lock timeout turns a connection a test left inside a transaction into an error, not a hang."""
    with engine.begin() as conn:
        conn.exec_driver_sql(_EMPTY_TABLES)


def commits(request: pytest.FixtureRequest) -> bool:
    """Whether this test runs on the committing engine (the module docstring says when it must)."""
    return request.node.get_closest_marker("committing") is not None or "db_engine" in request.fixturenames


@pytest.fixture
def db_engine(migrated_database_url: str, engines: Engines) -> Iterator[Engine]:
    """The committing engine on the migrated database; every table is emptied after the test."""
    engine = engines.get(migrated_database_url)
    yield engine
    empty_tables(engine)


@pytest.fixture
def rollback_database_url(migrated_database_url: str) -> str:
    """The database a rolled-back test's transaction runs in: the empty one. A conftest overrides it to start
    some tests from a database it filled once (tests/kaas_api: the world)."""
    return migrated_database_url


class _SavepointSession(Session):
    """A session inside the test's transaction. It drops an ``isolation_level`` option (the k8s proxy's
    AUTOCOMMIT check): a connection inside a transaction cannot change it, and on one connection a single
    statement sees what it would have seen in autocommit."""

    def connection(
        self,
        bind_arguments: Any = None,
        execution_options: Any = None,
    ) -> Connection:
        if execution_options and "isolation_level" in execution_options:
            execution_options = {k: v for k, v in execution_options.items() if k != "isolation_level"} or None
        return super().connection(bind_arguments, execution_options)


def savepoint_session_factory(connection: Connection) -> sessionmaker[Session]:
    """Sessions as ``make_session_factory`` makes them, joined to ``connection``'s transaction: a commit
    releases the session's savepoint, a rollback or a close without commit returns to it."""
    return sessionmaker(
        bind=connection,
        class_=_SavepointSession,
        join_transaction_mode="create_savepoint",
        expire_on_commit=False,
        autoflush=False,
    )


@pytest.fixture
def db_connection(rollback_database_url: str, engines: Engines) -> Iterator[Connection]:
    """A connection inside a transaction that the end of the test rolls back."""
    engine = engines.get(rollback_database_url)
    with engine.connect() as connection:
        before = row_counts(connection)
        connection.commit()
        transaction = connection.begin()
        yield connection
        transaction.rollback()
        changed = {table: n for table, n in row_counts(connection).items() if n != before[table]}
        connection.rollback()
    if changed:
        if not any(before.values()):
            empty_tables(engine)  # the tests after it start from the empty database all the same
        pytest.fail(
            f"a rolled-back test changed rows outside its transaction (rows now: {changed}), so it committed "
            "through another connection: mark it @pytest.mark.committing (tests/conftest.py says when)"
        )


@pytest.fixture
def session_factory(request: pytest.FixtureRequest) -> sessionmaker[Session]:
    """Sessions for the test and the code under test: in the test's rolled-back transaction, or committing
    when the test is marked so (module docstring)."""
    if commits(request):
        engine: Engine = request.getfixturevalue("db_engine")
        return make_session_factory(engine)
    connection: Connection = request.getfixturevalue("db_connection")
    return savepoint_session_factory(connection)


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


# a test with one of these markers shares something the machine has once; xdist runs each group on one worker
REAL_CONTROL_PLANES_GROUP = "kube_real"
XDIST_GROUPS = {
    "openstack_real": "openstack_real",
    "kube_real": REAL_CONTROL_PLANES_GROUP,
    "e2e": "processes",
    "chaos": "processes",
}
# For a test that may start a real control plane without the kube_real marker (it runs on the stand-in where
# the programs are not built): the k8s proxy's and the tunnel's tests, through ``tests.kube_targets``. The
# session's shared control plane is one per worker, held until the worker ends: on two workers two of the
# machine's three slots would be taken for the whole run, and `kaas up`'s restart test (two more) would wait
# for a slot until it failed. In one group there is one shared control plane, as without xdist.
REAL_CONTROL_PLANES = pytest.mark.xdist_group(REAL_CONTROL_PLANES_GROUP)


def uses_any_fixture(item: pytest.Item, names: frozenset[str]) -> bool:
    """Whether the test asks for one of ``names``, itself or through its fixtures (the names as collected;
    ``getfixturevalue`` at run time is not seen)."""
    return not names.isdisjoint(getattr(item, "fixturenames", ()))


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group markers (--dist loadgroup)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        for marker, group in XDIST_GROUPS.items():
            if item.get_closest_marker(marker) is not None:
                item.add_marker(pytest.mark.xdist_group(group))
                break


@pytest.fixture(scope="session")
def shared_real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """ONE real control plane for the whole session (``tests.kube_targets``: its RBAC, tokens, kwok node);
    started by the first test that asks for it, holding one of the machine's control-plane slots."""
    from tests.kube_targets import real_cluster_session

    with real_cluster_session(tmp_path_factory.mktemp("shared-real-cluster")) as shared:
        yield shared
