"""Fleet-wide reads for operators: the overview's counts and the searchable list of every cluster.

Called by ``kaas_api.admin.endpoints`` and by the dashboard (``kaas_api.dashboard``), so the two always show
the same numbers. Read-only; the actions on a cluster live in ``kaas_api.clusters.service``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session, selectinload

from kaas_api.clusters.quota import Usage, cluster_footprint, project_usage
from kaas_core.db.models import (
    Cluster,
    ClusterAgent,
    ClusterPhase,
    Node,
    Operation,
    Project,
    Quota,
    Region,
    utcnow,
)

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 200


@dataclass(frozen=True)
class ClusterRow:
    """One line of the fleet table."""

    cluster: Cluster
    nodes_ready: int
    nodes_total: int
    agent_connected: bool
    agent_last_seen_at: datetime | None


@dataclass(frozen=True)
class ClusterPage:
    rows: list[ClusterRow]
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


@dataclass(frozen=True)
class ClusterFilter:
    text: str | None = None  # part of the cluster's name or id
    phase: str | None = None
    region: str | None = None
    project: str | None = None
    include_deleted: bool = False
    page: int = 1
    page_size: int = DEFAULT_PAGE_SIZE


def _cluster_filters(query: ClusterFilter) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if not query.include_deleted and query.phase != ClusterPhase.DELETED.value:
        where.append(Cluster.phase != ClusterPhase.DELETED.value)
    if query.text:
        needle = query.text.strip()[:80].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(
            or_(Cluster.name.ilike(f"%{needle}%", escape="\\"), Cluster.id.ilike(f"{needle}%", escape="\\"))
        )
    if query.phase:
        where.append(Cluster.phase == query.phase)
    if query.region:
        where.append(Cluster.region.has(Region.name == query.region))
    if query.project:
        where.append(Cluster.project.has(Project.name == query.project))
    return where


def search_clusters(session: Session, query: ClusterFilter) -> ClusterPage:
    page_size = max(1, min(query.page_size, MAX_PAGE_SIZE))
    page = max(1, query.page)
    where = _cluster_filters(query)
    total = int(session.scalar(select(func.count(Cluster.id)).where(*where)) or 0)
    clusters = list(
        session.scalars(
            select(Cluster)
            .where(*where)
            .order_by(Cluster.created_at.desc(), Cluster.id)
            .offset((page - 1) * page_size)
            .limit(page_size)
            .options(
                selectinload(Cluster.project), selectinload(Cluster.region), selectinload(Cluster.node_pools)
            )
        )
    )
    ids = [c.id for c in clusters]
    counts: dict[str, tuple[int, int]] = {}
    agents: dict[str, ClusterAgent] = {}
    if ids:
        for cluster_id, total_nodes, ready in session.execute(
            select(Node.cluster_id, func.count(Node.id), func.count(Node.id).filter(Node.ready.is_(True)))
            .where(Node.cluster_id.in_(ids))
            .group_by(Node.cluster_id)
        ):
            counts[cluster_id] = (int(total_nodes), int(ready))
        agents = {
            a.cluster_id: a
            for a in session.scalars(select(ClusterAgent).where(ClusterAgent.cluster_id.in_(ids)))
        }
    rows = []
    for cluster in clusters:
        total_nodes, ready = counts.get(cluster.id, (0, 0))
        agent = agents.get(cluster.id)
        rows.append(
            ClusterRow(
                cluster=cluster,
                nodes_ready=ready,
                nodes_total=total_nodes,
                agent_connected=bool(agent and agent.connected),
                agent_last_seen_at=agent.last_seen_at if agent else None,
            )
        )
    return ClusterPage(rows=rows, total=total, page=page, page_size=page_size)


@dataclass(frozen=True)
class ProjectUse:
    project: str
    clusters: int
    nodes: int
    vcpus: int
    ram_mb: int
    limits: dict[str, int]


@dataclass
class Overview:
    clusters_by_phase: dict[str, int] = field(default_factory=dict)
    clusters_by_region: dict[str, int] = field(default_factory=dict)
    nodes_total: int = 0
    nodes_ready: int = 0
    agents_connected: int = 0
    agents_disconnected: int = 0
    operations_running: int = 0
    operations_failed_24h: int = 0
    operations_succeeded_24h: int = 0
    quota_use: list[ProjectUse] = field(default_factory=list)


def overview(session: Session, *, now: datetime | None = None) -> Overview:
    now = now or utcnow()
    result = Overview()
    live = Cluster.phase != ClusterPhase.DELETED.value
    for phase, count in session.execute(
        select(Cluster.phase, func.count(Cluster.id)).group_by(Cluster.phase)
    ):
        result.clusters_by_phase[str(phase)] = int(count)
    for region, count in session.execute(
        select(Region.name, func.count(Cluster.id))
        .join(Cluster, Cluster.region_id == Region.id)
        .where(live)
        .group_by(Region.name)
    ):
        result.clusters_by_region[str(region)] = int(count)
    total, ready = session.execute(
        select(func.count(Node.id), func.count(Node.id).filter(Node.ready.is_(True)))
    ).one()
    result.nodes_total, result.nodes_ready = int(total), int(ready)
    for connected, count in session.execute(
        select(ClusterAgent.connected, func.count(ClusterAgent.cluster_id))
        .join(Cluster, Cluster.id == ClusterAgent.cluster_id)
        .where(live)
        .group_by(ClusterAgent.connected)
    ):
        if connected:
            result.agents_connected = int(count)
        else:
            result.agents_disconnected = int(count)
    since = now - timedelta(hours=24)
    result.operations_running = int(
        session.scalar(select(func.count(Operation.id)).where(Operation.state.in_(["pending", "running"])))
        or 0
    )
    result.operations_failed_24h = int(
        session.scalar(
            select(func.count(Operation.id)).where(
                Operation.state == "failed", Operation.finished_at >= since
            )
        )
        or 0
    )
    result.operations_succeeded_24h = int(
        session.scalar(
            select(func.count(Operation.id)).where(
                Operation.state == "succeeded", Operation.finished_at >= since
            )
        )
        or 0
    )
    quotas = {q.project_id: q for q in session.scalars(select(Quota))}
    for project in session.scalars(select(Project).order_by(Project.name)):
        usage = project_usage(session, project.id)
        quota = quotas.get(project.id)
        limits = (
            {
                "clusters": quota.max_clusters,
                "nodes": quota.max_nodes,
                "vcpus": quota.max_vcpus,
                "ram_mb": quota.max_ram_mb,
            }
            if quota is not None
            else {}
        )
        result.quota_use.append(
            ProjectUse(
                project=project.name,
                clusters=usage.clusters,
                nodes=usage.nodes,
                vcpus=usage.vcpus,
                ram_mb=usage.ram_mb,
                limits={k: int(v) for k, v in limits.items() if v is not None},
            )
        )
    return result


@dataclass(frozen=True)
class RegionUse:
    region: Region
    clusters: int
    nodes: int
    vcpus: int
    ram_mb: int


def region_use(session: Session) -> list[RegionUse]:
    """What the live clusters of each region take, from their specs (the flavors' sizes in the region)."""
    regions = list(session.scalars(select(Region).order_by(Region.name)))
    clusters = list(
        session.scalars(
            select(Cluster)
            .where(Cluster.phase != ClusterPhase.DELETED.value)
            .options(selectinload(Cluster.region), selectinload(Cluster.node_pools))
        )
    )
    result = []
    for region in regions:
        mine = [c for c in clusters if c.region_id == region.id]
        total = sum((cluster_footprint(c) for c in mine), Usage())
        result.append(
            RegionUse(
                region=region, clusters=len(mine), nodes=total.nodes, vcpus=total.vcpus, ram_mb=total.ram_mb
            )
        )
    return result
