"""Server names and the metadata that identifies a server's place in the cluster.

Names: control plane ``kaas-<id8>-cp-<n>`` (``-r<attempt>`` appended for a replacement of a server that
went to ERROR, so Kubernetes never sees a new machine under a dead node's name), workers
``kaas-<id8>-<pool>-<random5>``. The metadata (``kaas-role``, ``kaas-pool``, ``kaas-slot``,
``kaas-attempt``, ``kaas-created``, ``kaas-version``) is what the reconciler reads back; the names are for
humans.
"""

from __future__ import annotations

import secrets
import string
import time
from dataclasses import dataclass

from kaas_core.db.models import NodeRole
from provider.cloud.driver import ServerInfo, resource_prefix

_RANDOM_ALPHABET = string.ascii_lowercase + string.digits
GONE_STATUSES = frozenset({"DELETED", "SOFT_DELETED"})


def control_plane_name(cluster_id: str, slot: int, attempt: int) -> str:
    base = f"{resource_prefix(cluster_id)}-cp-{slot}"
    return base if attempt <= 1 else f"{base}-r{attempt}"


def worker_name(cluster_id: str, pool: str) -> str:
    suffix = "".join(secrets.choice(_RANDOM_ALPHABET) for _ in range(5))
    return f"{resource_prefix(cluster_id)}-{pool}-{suffix}"


def server_metadata(
    *,
    role: str,
    flavor: str,
    attempt: int,
    version: str,
    pool: str | None = None,
    slot: int | None = None,
) -> dict[str, str]:
    metadata = {
        "kaas-role": role,
        "kaas-flavor": flavor,
        "kaas-version": version,  # the build the server was made with: what an upgrade compares
        "kaas-attempt": str(attempt),
        "kaas-created": str(time.time_ns()),
    }
    if pool is not None:
        metadata["kaas-pool"] = pool
    if slot is not None:
        metadata["kaas-slot"] = str(slot)
    return metadata


@dataclass(frozen=True)
class ServerPlace:
    """Where a server belongs, read back from its metadata."""

    role: str
    pool: str | None
    slot: int | None
    attempt: int
    created: int


def place_of(server: ServerInfo) -> ServerPlace:
    meta = server.metadata
    role = meta.get("kaas-role") or (
        NodeRole.CONTROL_PLANE.value if "-cp-" in server.name else NodeRole.WORKER.value
    )
    slot_text = meta.get("kaas-slot", "")
    return ServerPlace(
        role=role,
        pool=meta.get("kaas-pool"),
        slot=int(slot_text) if slot_text.isdigit() else None,
        attempt=int(meta["kaas-attempt"]) if meta.get("kaas-attempt", "").isdigit() else 1,
        created=int(meta["kaas-created"]) if meta.get("kaas-created", "").isdigit() else 0,
    )
