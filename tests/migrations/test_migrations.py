"""The schema exists only through Alembic: upgrade and downgrade work on PostgreSQL, and the migrations
match the models exactly (a model change without a migration fails here)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from kaas_core.db import models  # noqa: F401  (registers the tables)
from kaas_core.db.base import Base
from tests.conftest import alembic_config, create_pg_database, drop_pg_database


@pytest.fixture
def empty_database_url() -> Iterator[str]:
    url = create_pg_database()
    yield url
    drop_pg_database(url)


def table_names(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_creates_every_model_table(empty_database_url: str) -> None:
    command.upgrade(alembic_config(empty_database_url), "head")
    assert set(Base.metadata.tables) <= table_names(empty_database_url)


def test_downgrade_to_base_removes_every_table_and_upgrade_again_works(empty_database_url: str) -> None:
    config = alembic_config(empty_database_url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    assert table_names(empty_database_url) <= {"alembic_version"}
    command.upgrade(config, "head")
    assert set(Base.metadata.tables) <= table_names(empty_database_url)


def test_each_migration_steps_down_and_up_again(empty_database_url: str) -> None:
    config = alembic_config(empty_database_url)
    command.upgrade(config, "head")
    from alembic.script import ScriptDirectory

    revisions = list(ScriptDirectory.from_config(config).walk_revisions())
    for revision in revisions:  # newest first
        command.downgrade(config, revision.down_revision or "base")
        command.upgrade(config, revision.revision)
        command.downgrade(config, revision.down_revision or "base")
    command.upgrade(config, "head")
    assert set(Base.metadata.tables) <= table_names(empty_database_url)


def test_migrations_match_the_models(empty_database_url: str) -> None:
    command.upgrade(alembic_config(empty_database_url), "head")
    engine = sa.create_engine(empty_database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == [], f"models and migrations differ; add a migration: {differences}"
