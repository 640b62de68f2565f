"""The simulated cloud on disk: a JSON snapshot of ``SimCloud``'s state, written atomically, read at start.

Owned by ``simcloud``; ``SimCloud`` calls ``save_snapshot`` from its ticker (at most once a second, only
after a change) and on ``stop()``, and ``load_snapshot`` when it starts with a ``state_file`` that exists.
So ``kaas up`` stopped and started again finds the same servers, networks and load balancers, with the same
ids and names, as a real cloud would after its control plane restarted.

What is saved is everything a client could observe plus the bookkeeping that decides future answers:
every table (records with their private ``_`` fields), projects, quotas, users, issued tokens, usage and the
counters that hand out MAC addresses and placements. Pending transitions (a server in BUILD, a load
balancer PENDING_*) keep the time they had left. Sets are stored as ``{"$set": [...]}``, and monotonic
clock readings are stored as offsets from the moment of the snapshot, since the monotonic clock restarts
with the process. The file is 0600: it holds the simulated cloud's passwords and tokens.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

SNAPSHOT_VERSION = 1
_SET = "$set"


def _encode(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return {_SET: sorted(value)}
    raise TypeError(f"cannot snapshot a {type(value).__name__}")


def _decode(document: dict[str, Any]) -> Any:
    if len(document) == 1 and _SET in document:
        return set(document[_SET])
    return document


def write_atomically(path: Path, payload: bytes) -> None:
    """Replace ``path`` with ``payload`` (0600) so a crash leaves either the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_snapshot(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (``SimCloud.snapshot_locked()``) to ``path``."""
    document = {"version": SNAPSHOT_VERSION, "saved_at": time.time(), "state": state}
    write_atomically(path, json.dumps(document, default=_encode, separators=(",", ":")).encode())


def load_snapshot(path: Path) -> dict[str, Any]:
    """The state saved in ``path``; ``ValueError`` if it is not a snapshot this version can read."""
    document = json.loads(path.read_bytes(), object_hook=_decode)
    if not isinstance(document, dict) or document.get("version") != SNAPSHOT_VERSION:
        raise ValueError(f"{path} is not a simcloud snapshot of version {SNAPSHOT_VERSION}")
    state: dict[str, Any] = document["state"]
    return state
