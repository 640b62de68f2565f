"""The per-cluster lease: a cluster is never reconciled by two workers at once, and a dead worker's hold ends
within seconds.

Taken by a conditional UPDATE on ``clusters.lease_owner / lease_expires_at`` that only matches when the lease
is free, expired, or already ours (and, for a message that carries one, when its reconcile ticket is still
the cluster's); the database decides the race (PostgreSQL re-checks the WHERE clause after the row lock,
SQLite serialises writers), so exactly one caller gets a row back. The lease is short
(``lease_seconds``, 15 s by default) and a ``LeaseHeartbeat`` thread renews it while the pass runs, so a
long pass keeps its cluster and a worker killed mid-pass lets go of it ``lease_seconds`` after its last
renewal. The pass gives the lease back in its one commit together with the cluster's next due time
(``release_and_schedule``), fenced on still owning it: a pass whose lease was taken over commits nothing.

Called by ``provider.reconciler.reconcile``; the due-scan (``provider.reconciler.due``) reads the same
columns to leave leased clusters alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType

from sqlalchemy import ColumnElement, CursorResult, case, null, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import Cluster, utcnow
from kaas_core.db.session import session_scope

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lease:
    """A lease we hold. ``ticket`` is the cluster's reconcile ticket when we took it: if it differs at our
    commit, someone (the API) asked for a pass meanwhile, and their due time is kept."""

    cluster_id: str
    owner: str
    ticket: int


def lease_is_free(now: datetime) -> ColumnElement[bool]:
    """The SQL condition "nobody holds the cluster's lease at ``now``" (shared with the due-scan)."""
    return or_(
        Cluster.lease_owner.is_(None),
        Cluster.lease_expires_at.is_(None),
        Cluster.lease_expires_at < now,
    )


def acquire_lease(
    session_factory: sessionmaker[Session],
    cluster_id: str,
    *,
    owner: str,
    lease_seconds: float,
    now: datetime | None = None,
    ticket: int | None = None,
) -> Lease | None:
    """Take (or extend) the lease in its own committed transaction; the lease when we hold it now.

    With ``ticket``, only while the cluster's reconcile ticket is still that one: a message whose ticket
    was superseded gets nothing (``why_not_leased`` says so).
    """
    now = now or utcnow()
    conditions = [Cluster.id == cluster_id, or_(lease_is_free(now), Cluster.lease_owner == owner)]
    if ticket is not None:
        conditions.append(Cluster.reconcile_ticket == ticket)
    statement = (
        update(Cluster)
        .where(*conditions)
        .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds))
        .returning(Cluster.reconcile_ticket)
        .execution_options(synchronize_session=False)
    )
    with session_scope(session_factory) as session:
        held = session.execute(statement).scalar_one_or_none()
    return None if held is None else Lease(cluster_id=cluster_id, owner=owner, ticket=held)


def why_not_leased(session_factory: sessionmaker[Session], cluster_id: str, *, ticket: int | None) -> str:
    """After a failed ``acquire_lease``: ``missing`` (no such cluster), ``superseded`` (the message's ticket
    is old: a pass committed, or the API asked for one, after it was sent) or ``locked`` (another pass
    holds it)."""
    with session_factory() as session:
        current = session.scalar(select(Cluster.reconcile_ticket).where(Cluster.id == cluster_id))
    if current is None:
        return "missing"
    if ticket is not None and current != ticket:
        return "superseded"
    return "locked"


def renew_lease(
    session_factory: sessionmaker[Session],
    cluster_id: str,
    *,
    owner: str,
    lease_seconds: float,
    now: datetime,
) -> bool:
    """Push our lease's expiry to ``now + lease_seconds``; False when it is no longer ours."""
    statement = (
        update(Cluster)
        .where(Cluster.id == cluster_id, Cluster.lease_owner == owner)
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    with session_scope(session_factory) as session:
        result = session.execute(statement)
        assert isinstance(result, CursorResult)
        return result.rowcount == 1


class LeaseHeartbeat:
    """Renews a lease every ``interval`` seconds in a daemon thread, from ``__enter__`` to ``__exit__``.

    Exit it only after the pass's transaction ended: on PostgreSQL a renewal may be waiting for the row
    lock the pass's final UPDATE holds, and joining it before that commit would wait forever
    (``stop_renewing`` before that UPDATE stops it without waiting). A renewal
    that finds the lease taken over stops the heartbeat and sets ``lost`` (the pass's fenced commit then
    writes nothing); a database error is logged and the next renewal tries again, the lease outliving a
    few failed ones.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        lease: Lease,
        *,
        lease_seconds: float,
        interval: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._session_factory = session_factory
        self._lease = lease
        self._lease_seconds = lease_seconds
        self._interval = interval
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"kaas-lease-{lease.cluster_id[:8]}", daemon=True
        )
        self.renewals = 0
        self.lost = False

    def __enter__(self) -> LeaseHeartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def stop_renewing(self) -> None:
        """Called before the pass's final UPDATE: a renewal racing it is no lost lease (no join here)."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                held = renew_lease(
                    self._session_factory,
                    self._lease.cluster_id,
                    owner=self._lease.owner,
                    lease_seconds=self._lease_seconds,
                    now=self._clock(),
                )
            except Exception:  # a database hiccup: the lease outlives it, the next renewal tries again
                logger.warning(
                    "renewing the lease of cluster %s failed", self._lease.cluster_id, exc_info=True
                )
                continue
            if not held:
                if not self._stop.is_set():  # not merely our own commit racing the last renewal
                    self.lost = True
                    logger.warning("the lease of cluster %s was taken over mid-pass", self._lease.cluster_id)
                return
            self.renewals += 1


def release_and_schedule(session: Session, lease: Lease, *, due: datetime | None) -> int | None:
    """In the pass's transaction: give the lease back, set when the next pass is due and bump the ticket.

    Returns the new ticket (which the pass's re-queue message carries), or None when the lease is no longer
    ours: the caller must then roll back, since another pass owns the cluster. When the ticket moved since
    we took the lease, someone asked for a pass meanwhile and the earlier of their due time and ours wins.
    """
    ours = Cluster.reconcile_ticket == lease.ticket
    if due is None:
        next_due = case((ours, null()), else_=Cluster.next_reconcile_at)
    else:
        next_due = case(
            (ours, due),
            (Cluster.next_reconcile_at < due, Cluster.next_reconcile_at),
            else_=due,
        )
    statement = (
        update(Cluster)
        .where(Cluster.id == lease.cluster_id, Cluster.lease_owner == lease.owner)
        .values(
            lease_owner=None,
            lease_expires_at=None,
            next_reconcile_at=next_due,
            reconcile_ticket=Cluster.reconcile_ticket + 1,
        )
        .returning(Cluster.reconcile_ticket)
        .execution_options(synchronize_session=False)
    )
    ticket: int | None = session.execute(statement).scalar_one_or_none()
    return ticket


def release_after_failure(session_factory: sessionmaker[Session], lease: Lease, *, due: datetime) -> None:
    """Give the lease back in its own transaction after a pass that failed and rolled back; the due-scan
    tries the cluster again at ``due``."""
    with session_scope(session_factory) as session:
        release_and_schedule(session, lease, due=due)
