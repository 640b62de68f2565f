"""The embedded mode's state directory, kept private to its owner.

Owned by ``kaas_cli``; ``kaas up`` calls ``make_private`` first, before it opens anything under the
directory. The directory holds the SQLite database (every token hash, the encrypted agent tokens, the
audit log), the secret key, the CLI config with an admin token, the API's TLS key, the simulated cloud's
``clouds.yaml`` with its passwords and nodesim's per-cluster kubeconfigs.

Two halves, both needed:
- the process umask becomes 0077, so everything created from now on is owner-only, including what other
  code creates without asking for a mode: SQLite's ``-wal`` and ``-shm`` files (SQLite gives them the
  database file's mode, and the database file the umask's), Alembic's first connection, nodesim's files;
- files an older kaas left readable (0644) are made 0600 now, and the directory 0700.
Only the files kaas itself keeps there are touched, never the rest of a directory given as ``--state-dir``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

OWNER_ONLY_UMASK = 0o077
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600

DATABASE_FILE = "kaas.db"
# Relative to the state directory: each holds a secret or the database.
PRIVATE_FILES = (
    DATABASE_FILE,
    f"{DATABASE_FILE}-wal",
    f"{DATABASE_FILE}-shm",
    f"{DATABASE_FILE}-journal",
    "secret_key",
    "cli.yaml",
    "tls/api.key",
    "simcloud/clouds.yaml",
)
PRIVATE_DIRS = ("tls", "simcloud")
PRIVATE_TREES = ("nodes",)  # nodesim's per-cluster directories: agent tokens, cluster CA keys, etcd data


def make_private(state_dir: Path) -> list[Path]:
    """Set the owner-only umask, create ``state_dir`` 0700 (or take group and other access away from it)
    and make kaas's files in it 0600. Returns the paths whose mode had to change."""
    os.umask(OWNER_ONLY_UMASK)
    state_dir.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    changed: list[Path] = []
    _restrict(state_dir, stat.S_IMODE(state_dir.stat().st_mode) & ~OWNER_ONLY_UMASK, changed)
    for name in PRIVATE_DIRS:
        _restrict(state_dir / name, PRIVATE_DIR_MODE, changed)
    for name in PRIVATE_FILES:
        _restrict(state_dir / name, PRIVATE_FILE_MODE, changed)
    for name in PRIVATE_TREES:
        _restrict(state_dir / name, PRIVATE_DIR_MODE, changed)
        for root, dirs, files in os.walk(state_dir / name):
            for entry in dirs:
                _restrict(Path(root) / entry, PRIVATE_DIR_MODE, changed)
            for entry in files:
                _restrict(Path(root) / entry, PRIVATE_FILE_MODE, changed)
    return changed


def _restrict(path: Path, mode: int, changed: list[Path]) -> None:
    """chmod ``path`` to ``mode`` if it is a regular file or directory of another mode; symbolic links
    are left alone (chmod would change what they point at, which may be anywhere)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        return
    if stat.S_IMODE(info.st_mode) != mode:
        path.chmod(mode)
        changed.append(path)
