"""The periodic leak repair of one region: delete cloud resources of clusters the database no longer has,
and record the cloud's compute limits and use.

Called by the Celery task ``provider.sweep_leaks`` (beat sends one per region, every
``sweep_interval_seconds``, to that region's queue, so each region is swept by its own workers, which only
talk to their own cloud, whatever other regions are doing). ``observe_capacity`` stores what the
operators' dashboard shows: the API itself never talks to a cloud. Which clusters need a pass is the
due-scan's business (``provider.reconciler.due``).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import Cluster, ClusterPhase, Region, utcnow
from provider.cloud.driver import CloudCapacity, CloudDriver


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
