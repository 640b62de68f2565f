"""The per-cluster lease: a cluster is never reconciled by two workers at once.

Taken by a conditional UPDATE on ``clusters.lease_owner / lease_expires_at`` that only matches when the lease
is free, expired, or already ours; the database decides the race (PostgreSQL re-checks the WHERE clause
after the row lock, SQLite serialises writers), so exactly one caller sees ``rowcount == 1``. The lease
expires, so a worker that crashed mid-pass blocks the cluster for at most ``lease_seconds``.
Called by ``provider.reconciler.reconcile``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import CursorResult, or_, update
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import Cluster, utcnow
from kaas_core.db.session import session_scope


def acquire_lease(
    session_factory: sessionmaker[Session],
    cluster_id: str,
    *,
    owner: str,
    lease_seconds: float,
    now: datetime | None = None,
) -> bool:
    """Take (or extend) the lease in its own committed transaction; True when we hold it now."""
    now = now or utcnow()
    statement = (
        update(Cluster)
        .where(
            Cluster.id == cluster_id,
            or_(
                Cluster.lease_owner.is_(None),
                Cluster.lease_expires_at.is_(None),
                Cluster.lease_expires_at < now,
                Cluster.lease_owner == owner,
            ),
        )
        .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    with session_scope(session_factory) as session:
        result = session.execute(statement)
        assert isinstance(result, CursorResult)
        return result.rowcount == 1


def release_lease(session: Session, cluster_id: str, *, owner: str) -> None:
    """Give the lease back inside the caller's transaction (it is released by the pass's one commit)."""
    session.execute(
        update(Cluster)
        .where(Cluster.id == cluster_id, Cluster.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


def release_lease_now(session_factory: sessionmaker[Session], cluster_id: str, *, owner: str) -> None:
    """Give the lease back in its own transaction: after a pass that failed and rolled back."""
    with session_scope(session_factory) as session:
        release_lease(session, cluster_id, owner=owner)
