"""The due-scan: queue a reconcile for every cluster of a region whose next pass is overdue.

Level-triggered recovery. Every cluster that wants work carries ``next_reconcile_at``, the time by which a
pass must have started: the API sets it to now with every change it accepts (in the same transaction), and
every pass sets the next one in its commit (its re-queue countdown plus ``requeue_grace_seconds`` while
converging, the resync interval once converged, none when there is nothing to do). The fast path is still
the message (the API's, a pass's countdown re-queue); this scan is the bound. A message that was lost, held
by a worker that died, or never sent (an API killed after its commit) costs one scan interval past its
grace, and a pass killed mid-way costs the rest of its lease, never a broker visibility timeout.

``queue_due_clusters`` claims the due rows of one region with one UPDATE that pushes each one's due time
``requeue_grace_seconds`` ahead and returns them with their reconcile ticket; only then are the messages
sent, each carrying that ticket. So two scans (two beats, or a scan and a restart) never queue a cluster
twice (on PostgreSQL the rows are picked ``FOR UPDATE SKIP LOCKED``; SQLite has one writer), and a send
that failed is retried by the next scan once the grace is over. The claim leaves the ticket alone: a
message it duplicates (one that was only late, in a backlog) keeps its place in the queue, and whichever of
the two runs first commits a pass, which bumps the ticket, so the other is dropped unread
(``acquire_lease``). Clusters whose lease is held by a live pass, paused or deleted ones are left alone:
the pass will set their due time itself.

Called by the Celery task ``provider.due_scan`` (beat sends one per region to that region's queue) and by
``kaas up`` on start. ``make_undated_clusters_due`` is the slow safety net the periodic sweep runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import Cluster, ClusterPhase, Region
from kaas_core.db.session import session_scope
from kaas_core.tasks import region_queue
from provider.reconciler.lease import lease_is_free

EnqueueTicket = Callable[[str, int, str], None]  # (cluster id, reconcile ticket, queue name)


@dataclass(frozen=True)
class Claimed:
    cluster_id: str
    ticket: int


def claim_due_clusters(
    session_factory: sessionmaker[Session],
    region_name: str,
    *,
    now: datetime,
    grace_seconds: float,
    limit: int = 500,
) -> list[Claimed]:
    """Claim (and commit) up to ``limit`` of the region's overdue clusters, the most overdue first."""
    with session_scope(session_factory) as session:
        region_id = session.scalar(select(Region.id).where(Region.name == region_name))
        if region_id is None:
            return []
        overdue = (
            Cluster.region_id == region_id,
            Cluster.next_reconcile_at <= now,
            Cluster.paused.is_(False),
            Cluster.phase != ClusterPhase.DELETED.value,
            lease_is_free(now),
        )
        # A CTE computed once (MATERIALIZED): as ``id IN (subquery)`` PostgreSQL may run the LIMITed
        # subquery more than once in one UPDATE and claim more rows than asked.
        picked = (
            select(Cluster.id)
            .where(*overdue)
            .order_by(Cluster.next_reconcile_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("picked")
            .prefix_with("MATERIALIZED", dialect="postgresql")
        )
        rows = session.execute(
            update(Cluster)
            .where(Cluster.id == picked.c.id, *overdue)
            .values(next_reconcile_at=now + timedelta(seconds=grace_seconds))
            .returning(Cluster.id, Cluster.reconcile_ticket)
            .execution_options(synchronize_session=False)
        ).all()
    return [Claimed(cluster_id=cluster_id, ticket=ticket) for cluster_id, ticket in rows]


def queue_due_clusters(
    session_factory: sessionmaker[Session],
    region_name: str,
    *,
    enqueue: EnqueueTicket,
    now: datetime,
    grace_seconds: float,
    limit: int = 500,
) -> list[Claimed]:
    """Claim the region's overdue clusters, then send each one's reconcile (after the claim's commit)."""
    claimed = claim_due_clusters(
        session_factory, region_name, now=now, grace_seconds=grace_seconds, limit=limit
    )
    queue = region_queue(region_name)
    for claim in claimed:
        enqueue(claim.cluster_id, claim.ticket, queue)
    return claimed


def make_undated_clusters_due(
    session_factory: sessionmaker[Session],
    *,
    now: datetime,
    every_live_cluster: bool = False,
    running_observed_in_bulk: bool = False,
) -> int:
    """Make due now every live, unpaused cluster that has work but no due time (a row some other writer
    left without one); with ``every_live_cluster``, every live unpaused one (``kaas up`` after a restart,
    whose in-memory broker lost every message). With ``running_observed_in_bulk`` a running cluster
    without a due time is left alone: it is the bulk observation's (``provider.reconciler.observe``).
    Returns how many."""
    conditions = [Cluster.phase != ClusterPhase.DELETED.value, Cluster.paused.is_(False)]
    if not every_live_cluster:
        # a failed cluster has no due time on purpose: it waits for a new operation, which sets one
        conditions += [Cluster.next_reconcile_at.is_(None), Cluster.phase != ClusterPhase.ERROR.value]
        if running_observed_in_bulk:
            conditions.append(Cluster.phase != ClusterPhase.RUNNING.value)
    with session_scope(session_factory) as session:
        rows = session.execute(
            update(Cluster)
            .where(*conditions)
            .values(next_reconcile_at=now)
            .returning(Cluster.id)
            .execution_options(synchronize_session=False)
        ).all()
    return len(rows)
