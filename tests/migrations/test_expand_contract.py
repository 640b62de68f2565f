"""Zero-downtime upgrades of kaas itself: the newest migration only expands the schema, so the previous
release keeps working on it while the new one rolls out (the migration Job runs first, deploy/).

Two checks. The newest migration's SQL (Alembic's offline mode, as PostgreSQL gets it) drops, renames and
retypes nothing and adds no NOT NULL column without a default. And the previous release's own models (its
``kaas_core/db/models.py``, read from git at the commit before the newest migration was added) write and
read every table on a database migrated to head: an API or worker of the previous release runs unchanged
during the rollout. A migration that has to contract (drop a column the previous release still reads) ships
in the release after the one that stopped reading it, and says so in its docstring with
``CONTRACTS: <what>``; this test then accepts it.
"""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import types
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy.orm import Session

from kaas_core.db import models  # noqa: F401  (registers the tables)
from kaas_core.db.base import Base
from tests.conftest import alembic_config, create_pg_database, drop_pg_database

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ROOT / "kaas_core" / "migrations" / "versions"
CONTRACTING = ("DROP COLUMN", "DROP TABLE", "RENAME", "ALTER COLUMN", "DROP CONSTRAINT", "DROP INDEX")


@pytest.fixture
def database_url() -> Iterator[str]:
    url = create_pg_database()
    yield url
    drop_pg_database(url)


def newest_revision(url: str) -> tuple[str, str | None, Path]:
    script = ScriptDirectory.from_config(alembic_config(url))
    head = script.get_revision("head")
    assert head is not None
    down = head.down_revision if isinstance(head.down_revision, str) else None
    return head.revision, down, Path(head.path)


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr.strip()} (the test needs the history)"
    return done.stdout


def previous_release_models() -> types.ModuleType:
    """``kaas_core/db/models.py`` as it was before the newest migration was added, as a module of its own
    (its tables on a MetaData of their own, not the current models')."""
    head_file = max(VERSIONS.glob("[0-9]*_*.py"))
    added = git("log", "--diff-filter=A", "--format=%H", "-n", "1", "--", str(head_file.relative_to(ROOT)))
    commit = added.strip()
    assert commit, f"{head_file.name} is not committed yet"
    source = git("show", f"{commit}^:kaas_core/db/models.py")
    base_source = git("show", f"{commit}^:kaas_core/db/base.py")
    base = types.ModuleType("previous_release_base")
    exec(compile(base_source, "previous/base.py", "exec"), base.__dict__)  # noqa: S102 (our own history)
    spec = importlib.util.spec_from_loader("previous_release_models", loader=None)
    assert spec is not None
    previous = importlib.util.module_from_spec(spec)
    sys.modules["previous_release_models"] = previous  # dataclass-like annotations resolve through it
    previous.__dict__["__name__"] = "previous_release_models"
    source = source.replace("from kaas_core.db.base import Base", "from previous_release_base import Base")
    sys.modules["previous_release_base"] = base
    try:
        exec(compile(source, "previous/models.py", "exec"), previous.__dict__)  # noqa: S102
    finally:
        sys.modules.pop("previous_release_base", None)
    return previous


def columns(metadata: sa.MetaData) -> set[str]:
    return {f"{table.name}.{column.name}" for table in metadata.tables.values() for column in table.columns}


def test_the_newest_migration_only_expands_the_schema(database_url: str) -> None:
    revision, down, path = newest_revision(database_url)
    if "CONTRACTS:" in path.read_text():
        pytest.fail(f"{path.name} contracts the schema: ship it a release after nothing reads what it drops")
    out = io.StringIO()
    with redirect_stdout(out):
        command.upgrade(alembic_config(database_url), f"{down}:{revision}", sql=True)
    statements = [s.strip() for s in out.getvalue().split(";") if s.strip()]
    contracting = [s for s in statements if any(word in s.upper() for word in CONTRACTING)]
    assert contracting == [], f"{path.name} contracts the schema: {contracting}"
    not_null = [
        s
        for s in statements
        if "ADD COLUMN" in s.upper() and "NOT NULL" in s.upper() and "DEFAULT" not in s.upper()
    ]
    assert not_null == [], f"{path.name} adds NOT NULL columns the previous release cannot fill: {not_null}"


def test_the_previous_releases_models_write_and_read_every_table_on_the_new_schema(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")
    old = previous_release_models()
    assert columns(old.Base.metadata) != columns(Base.metadata)  # really the release before the migration
    engine = sa.create_engine(database_url)
    try:
        with Session(engine) as session, session.begin():
            user = old.User(name="old-release")
            project = old.Project(name="p-old")
            session.add_all([user, project])
            session.flush()
            region = old.Region(name="r-old", cloud="sim", kubernetes_versions=["1.36.3"], flavors=[])
            session.add(region)
            session.flush()
            cluster = old.Cluster(
                project_id=project.id,
                region_id=region.id,
                name="c-old",
                kubernetes_version="1.36.3",
                control_plane_count=3,
                control_plane_flavor="m1.small",
                node_cidr="10.0.0.0/24",
                pod_cidr="10.244.0.0/16",
                service_cidr="10.96.0.0/12",
            )
            session.add(cluster)
            session.flush()
            session.add_all(
                [
                    old.NodePool(cluster_id=cluster.id, name="workers", flavor="m1.small", count=3),
                    old.Operation(cluster_id=cluster.id, project_id=project.id, kind="create"),
                    old.Node(cluster_id=cluster.id, role="worker", name="n-old", flavor="m1.small"),
                ]
            )
        with Session(engine) as session:
            cluster = session.scalars(sa.select(old.Cluster).where(old.Cluster.name == "c-old")).one()
            assert cluster.control_plane_count == 3
            assert session.scalars(sa.select(old.NodePool)).one().count == 3
            assert session.scalars(sa.select(old.Operation)).one().kind == "create"
            assert session.scalars(sa.select(old.Node)).one().name == "n-old"
        with engine.connect() as connection:  # what the new release reads of rows the old one wrote
            row = connection.execute(sa.text("SELECT params, nodes, cancel_requested FROM operations")).one()
            assert (row.params, row.nodes, row.cancel_requested) == ({}, [], False)
            pool = connection.execute(
                sa.text("SELECT nodes_to_remove, kubernetes_version FROM node_pools")
            ).one()
            assert (pool.nodes_to_remove, pool.kubernetes_version) == ([], None)
    finally:
        engine.dispose()
