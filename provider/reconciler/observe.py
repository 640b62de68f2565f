"""The bulk observation of one region: list the cloud once, diff every running cluster in memory, and send
a pass only to the clusters that drifted.

The design (who owns which cluster, why the due times look as they do) is in docs/architecture.md, "Bulk
observation". In short: ``CloudDriver.observe_region`` lists the project's kaas resources in a bounded
number of paginated calls; three SELECTs read the region's running clusters, their pools and which of them
have an unfinished operation; ``find_drift`` (pure) says for each what its normal pass would change. The
drifted clusters are made due now with their ticket bumped, in one UPDATE, and the region's due-scan claim
queues them (``provider.reconciler.due``): a lost message is that claim's business as for every other due
cluster. A region without drift is listed and read, never written.

Called by the Celery task ``provider.observe_region`` (beat sends one per region, every
``sweep_interval_seconds``, to the region's queue) and by tests.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import (
    UNFINISHED_OPERATION_STATES,
    Cluster,
    ClusterPhase,
    NodePool,
    NodeRole,
    Operation,
    Region,
)
from kaas_core.db.session import session_scope
from provider.cloud.driver import CloudDriver, RegionInventory, security_group_rules, server_group_name
from provider.reconciler.due import Claimed, EnqueueTicket, queue_due_clusters
from provider.reconciler.naming import GONE_STATUSES, place_of
from provider.reconciler.plan import load_balanced

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunningCluster:
    """What the diff needs of one running cluster's spec (columns, not ORM objects: 10,000 of them)."""

    id: str
    control_plane_count: int
    node_cidr: str
    generation: int
    observed_generation: int
    cloud_credential_id: str | None
    pools: dict[str, int] = field(default_factory=dict)  # node pool name -> count
    unfinished_operation: bool = False


def find_drift(cluster: RunningCluster, inventory: RegionInventory) -> str | None:
    """Why the cluster's normal pass would change something (the first reason found), or None.

    Mirrors what the steps leave alone (``provider.reconciler.steps``): a spec the pass has not observed,
    an unfinished operation, and every cloud resource a step ensures."""
    if cluster.generation != cluster.observed_generation:
        return "spec changed"
    if cluster.unfinished_operation:
        return "unfinished operation"
    resources = inventory.of(cluster.id)
    if not resources.network_ready:
        return "network, subnet, router or router port missing"
    for name, wanted in security_group_rules(cluster.id, node_cidr=cluster.node_cidr).items():
        if not wanted <= resources.security_groups.get(name, frozenset()):
            return f"security group {name} or one of its rules missing"
    if server_group_name(cluster.id) not in inventory.server_groups:
        return "server group missing"
    if cluster.cloud_credential_id is None or cluster.cloud_credential_id not in inventory.credential_ids:
        return "cloud credential missing"
    servers = [s for s in resources.servers if s.status not in GONE_STATUSES]
    for server in servers:
        if server.status != "ACTIVE":
            return f"server {server.name} is {server.status}"
    control_plane_slots = sorted(
        place_of(s).slot or 1 for s in servers if place_of(s).role == NodeRole.CONTROL_PLANE.value
    )
    if control_plane_slots != list(range(1, cluster.control_plane_count + 1)):
        return f"control-plane servers in slots {control_plane_slots}, want {cluster.control_plane_count}"
    workers = Counter(place_of(s).pool for s in servers if place_of(s).role == NodeRole.WORKER.value)
    if workers != Counter({name: count for name, count in cluster.pools.items() if count}):
        return f"workers per pool {dict(workers)}, want {cluster.pools}"
    if load_balanced(cluster.control_plane_count):
        lb = resources.load_balancer
        if lb is None or lb.provisioning_status != "ACTIVE":
            return "load balancer missing or not ACTIVE"
        if not (lb.listener and lb.pool and lb.health_monitor):
            return "load balancer listener, pool or health monitor missing"
        if lb.members != cluster.control_plane_count:
            return f"load balancer has {lb.members} members, want {cluster.control_plane_count}"
    return None


@dataclass(frozen=True)
class Observation:
    """What one bulk observation found and did."""

    clusters: int  # running clusters diffed
    drifted: dict[str, str]  # cluster id -> the first drift found
    queued: list[Claimed]
    cloud_calls: int
    seconds: float


def running_clusters(session: Session, region_id: str) -> list[RunningCluster]:
    """The region's running, unpaused clusters with their pools and whether an operation is unfinished."""
    in_region = (Cluster.region_id == region_id, Cluster.phase == ClusterPhase.RUNNING.value)
    rows = session.execute(
        select(
            Cluster.id,
            Cluster.control_plane_count,
            Cluster.node_cidr,
            Cluster.generation,
            Cluster.observed_generation,
            Cluster.cloud_credential_id,
        ).where(*in_region, Cluster.paused.is_(False))
    ).all()
    pools: dict[str, dict[str, int]] = {}
    for cluster_id, name, count in session.execute(
        select(NodePool.cluster_id, NodePool.name, NodePool.count).join(Cluster).where(*in_region)
    ):
        pools.setdefault(cluster_id, {})[name] = count
    busy = set(
        session.scalars(
            select(Operation.cluster_id)
            .join(Cluster, Cluster.id == Operation.cluster_id)
            .where(*in_region, Operation.state.in_(UNFINISHED_OPERATION_STATES))
            .distinct()
        )
    )
    return [
        RunningCluster(
            id=row.id,
            control_plane_count=row.control_plane_count,
            node_cidr=row.node_cidr,
            generation=row.generation,
            observed_generation=row.observed_generation,
            cloud_credential_id=row.cloud_credential_id,
            pools=pools.get(row.id, {}),
            unfinished_operation=row.id in busy,
        )
        for row in rows
    ]


def make_due_now(session_factory: sessionmaker[Session], cluster_ids: list[str], *, now: datetime) -> int:
    """Make the drifted clusters due now and bump their ticket, as an accepted API change does: a pass in
    flight then keeps this earlier due time (``lease.release_and_schedule``). Only clusters still running
    and unpaused: one that moved on since the listing has a pass of its own."""
    if not cluster_ids:
        return 0
    with session_scope(session_factory) as session:
        rows = session.execute(
            update(Cluster)
            .where(
                Cluster.id.in_(cluster_ids),
                Cluster.phase == ClusterPhase.RUNNING.value,
                Cluster.paused.is_(False),
            )
            .values(next_reconcile_at=now, reconcile_ticket=Cluster.reconcile_ticket + 1)
            .returning(Cluster.id)
            .execution_options(synchronize_session=False)
        ).all()
    return len(rows)


def observe_region(
    session_factory: sessionmaker[Session],
    region_name: str,
    driver: CloudDriver,
    *,
    enqueue: EnqueueTicket,
    now: datetime,
    grace_seconds: float,
    limit: int = 500,
) -> Observation:
    """List the region's cloud once, diff its running clusters, make the drifted ones due and queue them.

    The cloud is listed before the database is read: a cluster that converged meanwhile may look drifted
    (one harmless extra pass); one that drifts after the listing is found by the next observation."""
    started = time.perf_counter()
    inventory = driver.observe_region()
    with session_factory() as session:
        region_id = session.scalar(select(Region.id).where(Region.name == region_name))
        clusters = running_clusters(session, region_id) if region_id is not None else []
    drifted = {c.id: reason for c in clusters if (reason := find_drift(c, inventory)) is not None}
    queued: list[Claimed] = []
    if drifted:
        make_due_now(session_factory, sorted(drifted), now=now)
        queued = queue_due_clusters(
            session_factory, region_name, enqueue=enqueue, now=now, grace_seconds=grace_seconds, limit=limit
        )
        for cluster_id, reason in sorted(drifted.items()):
            logger.info("cluster %s drifted: %s", cluster_id, reason)
    return Observation(
        clusters=len(clusters),
        drifted=drifted,
        queued=queued,
        cloud_calls=inventory.calls,
        seconds=time.perf_counter() - started,
    )
