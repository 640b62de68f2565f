"""Running the schema's Alembic migrations (``kaas db upgrade``, ``kaas up`` at start, the tests).

Owned by ``kaas_core.db``. The migrations are package data of ``kaas_core`` (``kaas_core/migrations``), found
through the package rather than a path beside the sources, so an installed wheel migrates like a checkout.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config

SCRIPT_LOCATION = "kaas_core:migrations"


def alembic_config(database_url: str) -> Config:
    """An Alembic configuration for ``database_url`` (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_database(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)
