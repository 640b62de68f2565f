"""The periodic repair: queue a reconcile for clusters that need one, and delete leaked cloud resources.

Called by the Celery tasks ``provider.sweep`` (every ``sweep_interval_seconds``, from beat) and
``provider.sweep_leaks`` (one per region, on that region's queue, so each region's workers only talk to
their own cloud; it also records the cloud's compute limits and use on the region, ``observe_capacity``,
which the operators' dashboard shows: the API itself never talks to a cloud). Lost messages, crashed
workers and servers deleted behind kaas's back are repaired here.

Which clusters are queued: every cluster not ``deleted`` and not paused that has no live reconcile chain.
A cluster that is converged (``running``) has none, so it is always queued (the pass is the check); a
cluster still converging re-queues itself, so it is only queued when it has not been touched for
``stale_after_seconds`` (its chain was lost). This keeps one chain per cluster instead of one per sweep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import Cluster, ClusterPhase, Region, as_utc, utcnow
from provider.cloud.driver import CloudCapacity, CloudDriver

Enqueue = Callable[[str, str], None]  # (cluster id, queue name)


@dataclass
class SweepReport:
    queued: list[str] = field(default_factory=list)
    regions: list[str] = field(default_factory=list)


def sweep_clusters(
    session_factory: sessionmaker[Session],
    *,
    enqueue: Enqueue,
    stale_after_seconds: float,
    regions: set[str] | None = None,
) -> SweepReport:
    """Queue a reconcile of every cluster that needs one; returns what was queued and the regions seen."""
    now = utcnow()
    stale_before = now - timedelta(seconds=stale_after_seconds)
    with session_factory() as session:
        rows = session.execute(
            select(Cluster.id, Cluster.phase, Cluster.updated_at, Region.name)
            .join(Region, Region.id == Cluster.region_id)
            .where(Cluster.phase != ClusterPhase.DELETED.value, Cluster.paused.is_(False))
            .order_by(Cluster.created_at)
        ).all()
        region_names = sorted(session.scalars(select(Region.name)).all())
    report = SweepReport(regions=[r for r in region_names if regions is None or r in regions])
    for cluster_id, phase, updated_at, region_name in rows:
        if regions is not None and region_name not in regions:
            continue
        touched = as_utc(updated_at)
        if (
            phase in (ClusterPhase.RUNNING.value, ClusterPhase.ERROR.value)
            or touched is None
            or (touched < stale_before)
        ):
            enqueue(cluster_id, f"region.{region_name}")
            report.queued.append(cluster_id)
    return report


def clean_leaked_resources(
    session_factory: sessionmaker[Session], driver: CloudDriver, *, max_clusters: int = 20
) -> list[str]:
    """One deletion pass over the resources of cluster ids tagged in the cloud but not live in the database.

    The cloud is listed *before* the database is read: a cluster's row is committed before any of its
    resources exist, so a cluster created meanwhile is never mistaken for a leak.
    """
    tagged = driver.list_tagged_cluster_ids()
    if not tagged:
        return []
    with session_factory() as session:
        live = set(
            session.scalars(
                select(Cluster.id).where(Cluster.id.in_(tagged), Cluster.phase != ClusterPhase.DELETED.value)
            ).all()
        )
    leaked = sorted(tagged - live)[:max_clusters]
    for cluster_id in leaked:
        driver.delete_cluster_resources(cluster_id)
    return leaked


def observe_capacity(
    session_factory: sessionmaker[Session], region_name: str, driver: CloudDriver
) -> CloudCapacity:
    """Read the cloud's compute limits and use and store them on the region (with when)."""
    capacity = driver.capacity()
    with session_factory() as session:
        region = session.scalars(select(Region).where(Region.name == region_name)).one_or_none()
        if region is not None:
            region.cloud_capacity = capacity.as_dict()
            region.cloud_capacity_at = utcnow()
            session.commit()
    return capacity
