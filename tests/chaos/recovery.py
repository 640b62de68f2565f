"""How long a worker's death held up the clusters in flight: the measure of the recovery bound.

Owned by ``tests/chaos``; the campaign and ``test_worker_kill`` use it. A cluster *moved again* when a
reconcile pass that started after the kill committed: its ``last_reconciled_at`` (the pass's start,
written in the pass's one commit) is later than the kill. A cluster is *in flight* at the kill when its
phase is provisioning, updating or deleting and it wants a pass (``next_reconcile_at`` set); one that
leaves those phases through a pass that started before the kill (it converged, or its deletion finished
just then) is *settled*: nothing of it was held up, and a deleted cluster never has another pass.

What a kill costs a cluster is how much later than its own schedule its next pass started: from
``max(kill, wanted)`` until the pass, where ``wanted`` is when the cluster asked for its next pass (its
due time less the re-queue grace, as of its last commit before the kill; the kill itself for a cluster
whose pass the victim was running, since that pass never commits). A cluster in a retry backoff of
a minute is not held up by a kill in the middle of it; a cluster whose countdown message died with the
victim is, by as much as the due-scan took to notice. ``seconds_from_kill`` keeps the raw time too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import Cluster, ClusterPhase, as_utc

IN_FLIGHT = (ClusterPhase.PROVISIONING.value, ClusterPhase.UPDATING.value, ClusterPhase.DELETING.value)


@dataclass(frozen=True)
class _Row:
    phase: str
    last_reconciled_at: datetime | None
    next_reconcile_at: datetime | None
    lease_owner: str | None


def _rows(session_factory: sessionmaker[Session]) -> dict[str, _Row]:
    with session_factory() as session:
        found = session.execute(
            select(
                Cluster.id,
                Cluster.phase,
                Cluster.last_reconciled_at,
                Cluster.next_reconcile_at,
                Cluster.lease_owner,
            )
        ).all()
    return {
        cluster_id: _Row(phase, as_utc(last), as_utc(due), owner)
        for cluster_id, phase, last, due, owner in found
    }


@dataclass
class KillRecovery:
    """One worker kill: the clusters in flight at it, and when each moved again."""

    killed_at: datetime
    victim_marker: str  # what the victim's lease owner strings contain
    grace_seconds: float
    in_flight: set[str] = field(default_factory=set)
    leased_by_victim: set[str] = field(default_factory=set)
    wanted_at: dict[str, datetime] = field(default_factory=dict)
    moved_at: dict[str, datetime] = field(default_factory=dict)
    # left the in-flight phases through a pass that started before the kill (converged, deleted): nothing
    # of theirs was held up, and a deleted cluster never has another pass
    settled: set[str] = field(default_factory=set)
    last_seen: dict[str, datetime | None] = field(default_factory=dict)  # last_reconciled_at, last read

    @property
    def done(self) -> bool:
        return self.moved_at.keys() | self.settled >= self.in_flight

    def held_up(self) -> dict[str, float]:
        """Per cluster that moved: seconds its next pass started later than ``max(kill, wanted)``."""
        return {
            cluster_id: max(0.0, (moved - max(self.killed_at, self.wanted_at[cluster_id])).total_seconds())
            for cluster_id, moved in self.moved_at.items()
        }

    def seconds_from_kill(self) -> dict[str, float]:
        return {cid: (moved - self.killed_at).total_seconds() for cid, moved in self.moved_at.items()}

    @property
    def worst(self) -> float:
        """The time until every in-flight cluster moved again (beyond its schedule); inf if one never did."""
        if not self.done:
            return float("inf")
        return max(self.held_up().values(), default=0.0)


def snapshot_before_kill(
    session_factory: sessionmaker[Session], *, killed_at: datetime, victim_marker: str, grace_seconds: float
) -> KillRecovery:
    """Read the in-flight clusters right at the kill (call it just before or after the SIGKILL)."""
    recovery = KillRecovery(killed_at=killed_at, victim_marker=victim_marker, grace_seconds=grace_seconds)
    for cluster_id, row in _rows(session_factory).items():
        if row.phase not in IN_FLIGHT or row.next_reconcile_at is None:
            continue
        recovery.in_flight.add(cluster_id)
        recovery.last_seen[cluster_id] = row.last_reconciled_at
        if row.lease_owner and victim_marker in row.lease_owner:
            recovery.leased_by_victim.add(cluster_id)
            recovery.wanted_at[cluster_id] = killed_at
        else:
            recovery.wanted_at[cluster_id] = row.next_reconcile_at - timedelta(seconds=grace_seconds)
    return recovery


def watch_until_moved(
    session_factory: sessionmaker[Session], recovery: KillRecovery, *, timeout: float, interval: float = 0.2
) -> KillRecovery:
    """Poll until every in-flight cluster moved again (or ``timeout``); fills ``moved_at``.

    A pass that started before the kill and committed after it (another worker's) moves the cluster's
    schedule: its new due time, less the grace, is when the cluster wanted its next pass. A due time that
    changed without a pass is the due-scan's claim (it pushes the due time by the grace as it queues the
    cluster), which says when the scan noticed, not when the cluster wanted its pass: it is ignored.
    """
    deadline = time.monotonic() + timeout
    while not recovery.done and time.monotonic() < deadline:
        for cluster_id, row in _rows(session_factory).items():
            if cluster_id not in recovery.in_flight or cluster_id in recovery.moved_at:
                continue
            last = row.last_reconciled_at
            if last is not None and last > recovery.killed_at:
                recovery.moved_at[cluster_id] = last
            elif row.phase not in IN_FLIGHT:
                recovery.settled.add(cluster_id)
            elif (
                last != recovery.last_seen.get(cluster_id)
                and cluster_id not in recovery.leased_by_victim
                and row.next_reconcile_at is not None
            ):
                recovery.last_seen[cluster_id] = last
                recovery.wanted_at[cluster_id] = row.next_reconcile_at - timedelta(
                    seconds=recovery.grace_seconds
                )
        time.sleep(interval)
    return recovery


def utc_from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)
