"""Project quota checks: what live clusters use, and whether a requested change still fits.

Called by ``kaas_api.clusters.service`` before it changes the spec (cluster create, node pool changes),
and by the quota endpoint for the usage report. Counts live clusters (``deleted_at IS NULL``, not phase
``deleted``) and their desired nodes (control plane plus pools; an autoscaled pool its max_count), sized
by the flavors of their region.
The project row is locked first so two concurrent requests cannot both squeeze under a limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from kaas_api.errors import QuotaExceeded
from kaas_api.regions.service import flavor_sizes
from kaas_core.db.models import Cluster, ClusterPhase, NodePool, Project, Quota, Region


@dataclass(frozen=True)
class Usage:
    clusters: int = 0
    nodes: int = 0
    vcpus: int = 0
    ram_mb: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            clusters=self.clusters + other.clusters,
            nodes=self.nodes + other.nodes,
            vcpus=self.vcpus + other.vcpus,
            ram_mb=self.ram_mb + other.ram_mb,
        )

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            clusters=self.clusters - other.clusters,
            nodes=self.nodes - other.nodes,
            vcpus=self.vcpus - other.vcpus,
            ram_mb=self.ram_mb - other.ram_mb,
        )


def footprint(*, sizes: dict[str, tuple[int, int]], clusters: int, nodes: list[tuple[str, int]]) -> Usage:
    """What ``nodes`` (flavor, count pairs) use; a flavor the region no longer lists counts as 0 size."""
    vcpus = sum(sizes.get(flavor, (0, 0))[0] * count for flavor, count in nodes)
    ram = sum(sizes.get(flavor, (0, 0))[1] * count for flavor, count in nodes)
    return Usage(clusters=clusters, nodes=sum(count for _, count in nodes), vcpus=vcpus, ram_mb=ram)


def reserved_count(count: int, max_count: int | None) -> int:
    """The nodes a pool holds of the project's quota: an autoscaled pool may grow to its max_count, and the
    autoscaler must never find the quota taken by something else."""
    return max(count, max_count or 0)


def cluster_footprint(cluster: Cluster) -> Usage:
    """Needs ``cluster.region`` and ``cluster.node_pools`` loaded; a pool counts its ``reserved_count``."""
    nodes = [(cluster.control_plane_flavor, cluster.control_plane_count)]
    nodes += [(pool.flavor, reserved_count(pool.count, pool.max_count)) for pool in cluster.node_pools]
    return footprint(sizes=flavor_sizes(cluster.region), clusters=1, nodes=nodes)


def project_usage(session: Session, project_id: str) -> Usage:
    """What the project's live clusters hold, summed by the database: node counts per (region, flavor), then
    sized here with each region's flavors. Every cluster create takes it under the project's lock, so it
    must not grow with the project: loading every cluster and its pools as objects made the thousandth
    create of a project take a second of the API's CPU while every other create of the project waited."""
    live = (
        Cluster.project_id == project_id,
        Cluster.deleted_at.is_(None),
        Cluster.phase != ClusterPhase.DELETED.value,
    )
    reserved = case((NodePool.max_count > NodePool.count, NodePool.max_count), else_=NodePool.count)
    control_planes = (
        select(Cluster.region_id, Cluster.control_plane_flavor, func.sum(Cluster.control_plane_count))
        .where(*live)
        .group_by(Cluster.region_id, Cluster.control_plane_flavor)
    )
    pools = (
        select(Cluster.region_id, NodePool.flavor, func.sum(reserved))
        .join(NodePool, NodePool.cluster_id == Cluster.id)
        .where(*live)
        .group_by(Cluster.region_id, NodePool.flavor)
    )
    counts = [(str(r), str(f), int(n or 0)) for r, f, n in session.execute(control_planes.union_all(pools))]
    clusters = int(session.scalar(select(func.count(Cluster.id)).where(*live)) or 0)
    regions = session.scalars(select(Region).where(Region.id.in_({region_id for region_id, _, _ in counts})))
    sizes = {region.id: flavor_sizes(region) for region in regions}
    total = Usage(clusters=clusters)
    for region_id, flavor, count in counts:
        total = total + footprint(sizes=sizes.get(region_id, {}), clusters=0, nodes=[(flavor, count)])
    return total


_LIMITS = (
    ("max_clusters", "clusters", "cluster", ""),
    ("max_nodes", "nodes", "node", ""),
    ("max_vcpus", "vcpus", "vCPU", ""),
    ("max_ram_mb", "ram_mb", "RAM", " MB"),
)


def check_quota(session: Session, project: Project, requested: Usage) -> None:
    """Raise ``QuotaExceeded`` naming the first limit the ``requested`` increase would break.

    Call it before changing the spec, with the difference the change makes. Decreases always fit.
    """
    session.execute(select(Project.id).where(Project.id == project.id).with_for_update())
    quota = session.get(Quota, project.id)
    if quota is None or all(getattr(quota, limit) is None for limit, *_ in _LIMITS):
        return
    in_use = project_usage(session, project.id)
    for limit, field, label, unit in _LIMITS:
        maximum: int | None = getattr(quota, limit)
        more: int = getattr(requested, field)
        used: int = getattr(in_use, field)
        if maximum is None or more <= 0 or used + more <= maximum:
            continue
        raise QuotaExceeded(
            f"{label} quota exceeded: requested {more}{unit} more, {used}{unit} of {maximum}{unit} in use"
            f" in project {project.name!r}",
            detail={"limit": limit, "requested": more, "in_use": used, "max": maximum},
        )
