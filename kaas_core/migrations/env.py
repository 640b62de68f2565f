"""Alembic environment: the URL comes from the caller's config or KAAS_DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, engine_from_config, pool

from kaas_core.db import models  # noqa: F401  (registers the tables)
from kaas_core.db.base import Base
from kaas_core.settings import KaasSettings

config = context.config
url = config.get_main_option("sqlalchemy.url") or KaasSettings().database_url
config.set_main_option("sqlalchemy.url", url)
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        _run(connectable)
        return
    engine = engine_from_config(
        config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with engine.connect() as connection:
        _run(connection)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
