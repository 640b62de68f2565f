"""``kaas up``'s state directory is its owner's alone: 0700, the database (with SQLite's -wal and -shm
files) and every secret 0600, whether new or left readable by an older kaas."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from kaas_cli.embedded import load_or_create_secret_key
from kaas_cli.state_dir import make_private
from kaas_core.db.session import make_engine
from simcloud.testing import write_clouds_yaml

OLD_SECRETS = (
    "kaas.db",
    "kaas.db-wal",
    "kaas.db-shm",
    "secret_key",
    "cli.yaml",
    "tls/api.key",
    "simcloud/clouds.yaml",
    "nodes/clusters/c1/agent.kubeconfig",
)


@pytest.fixture(autouse=True)
def _restore_umask() -> Iterator[None]:
    """``make_private`` sets the process umask, as ``kaas up`` wants; the test process gets its own back."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_state_dir_is_0700_and_the_database_with_its_wal_and_shm_is_0600(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    make_private(state_dir)
    assert mode(state_dir) == 0o700
    engine = make_engine(f"sqlite:///{state_dir / 'kaas.db'}")
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (x INTEGER)"))
            connection.execute(text("INSERT INTO t VALUES (1)"))
        with engine.connect() as connection:  # WAL mode keeps -wal and -shm while a connection is open
            connection.execute(text("SELECT x FROM t"))
            names = {p.name for p in state_dir.iterdir()}
            assert {"kaas.db", "kaas.db-wal", "kaas.db-shm"} <= names
            for name in ("kaas.db", "kaas.db-wal", "kaas.db-shm"):
                assert mode(state_dir / name) == 0o600, name
    finally:
        engine.dispose()
    load_or_create_secret_key(state_dir)
    assert mode(state_dir / "secret_key") == 0o600


def test_files_an_older_kaas_left_readable_become_0600_and_nothing_else_is_touched(tmp_path: Path) -> None:
    os.umask(0o022)
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o755)
    for name in OLD_SECRETS:
        path = state_dir / name
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        path.write_text("secret")
        path.chmod(0o644)
    unrelated = state_dir / "notes.txt"
    unrelated.write_text("mine")
    unrelated.chmod(0o644)

    changed = make_private(state_dir)

    assert mode(state_dir) == 0o700
    for name in OLD_SECRETS:
        assert mode(state_dir / name) == 0o600, name
    for directory in ("tls", "simcloud", "nodes", "nodes/clusters", "nodes/clusters/c1"):
        assert mode(state_dir / directory) == 0o700, directory
    assert mode(unrelated) == 0o644
    assert state_dir / "kaas.db-wal" in changed
    assert make_private(state_dir) == []


def test_a_symbolic_link_in_the_state_dir_is_left_alone(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.db"
    elsewhere.write_text("")
    elsewhere.chmod(0o644)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "kaas.db").symlink_to(elsewhere)
    make_private(state_dir)
    assert mode(elsewhere) == 0o644


def test_the_simulated_clouds_yaml_is_written_0600_even_over_a_readable_one(tmp_path: Path) -> None:
    os.umask(0o022)
    old = tmp_path / "simcloud" / "clouds.yaml"
    old.parent.mkdir()
    old.write_text("old")
    old.chmod(0o644)
    path = write_clouds_yaml(tmp_path / "simcloud", "http://127.0.0.1:1")
    assert path == old
    assert mode(path) == 0o600
    assert "password" in path.read_text()
    fresh = write_clouds_yaml(tmp_path / "fresh", "http://127.0.0.1:1")
    assert mode(fresh) == 0o600
    assert mode(fresh.parent) == 0o700
