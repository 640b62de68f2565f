"""Fixtures of the reconciler tests: simcloud on a free port, a context on the real OpenStackDriver, and a
session factory on PostgreSQL or on SQLite (the embedded mode's) for the SQL both must run the same."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.session import make_engine, make_session_factory
from provider.reconciler.context import ProviderContext
from simcloud.testing import SimCloudHandle, run_simcloud
from tests.conftest import alembic_config
from tests.provider.harness import make_context


@pytest.fixture
def simcloud(tmp_path: Path) -> Iterator[SimCloudHandle]:
    with run_simcloud(state_dir=tmp_path / "simcloud", boot_delay=0.0) as handle:
        yield handle


@pytest.fixture
def ctx(session_factory: sessionmaker[Session], simcloud: SimCloudHandle) -> ProviderContext:
    return make_context(session_factory, simcloud.clouds_yaml)


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
