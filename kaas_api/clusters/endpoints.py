"""HTTP endpoints of clusters, node pools, nodes and cluster operations under ``/v1/projects/{project}``.

Reads need the viewer role, changes the member role. Changes answer 202 with the operation to poll.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from sqlalchemy.orm import Session

from kaas_api.audit.middleware import add_audit_detail
from kaas_api.auth.service import Principal, authorize_project
from kaas_api.clusters import service, upgrades
from kaas_api.clusters.schemas import (
    ClusterAccepted,
    ClusterCreate,
    ClusterOut,
    ClusterPatch,
    ConditionOut,
    ControlPlaneOut,
    MaintenanceWindow,
    NodeCounts,
    NodeOut,
    NodePoolAccepted,
    NodePoolCreate,
    NodePoolOut,
    NodePoolPatch,
    NodePoolUpgrade,
    UpgradeStrategy,
    WindowTimes,
)
from kaas_api.clusters.view_cache import ClusterView
from kaas_api.deps import Context, CurrentUser, ReadingCaller, Settings, Uow
from kaas_api.operations.schemas import OperationOut
from kaas_api.operations.service import list_cluster_operations
from kaas_core import maintenance
from kaas_core.db.models import Cluster, NodePool, Operation, Role, utcnow
from kaas_core.security import SecretBox
from kaas_core.upgrades import pending_upgrade

router = APIRouter(prefix="/v1/projects/{project}/clusters", tags=["clusters"])
JSON = "application/json"


def pool_out(pool: NodePool, cluster: Cluster) -> NodePoolOut:
    return NodePoolOut(
        id=pool.id,
        name=pool.name,
        flavor=pool.flavor,
        count=pool.count,
        labels=dict(pool.labels or {}),
        taints=list(pool.taints or []),
        kubernetes_version=pool.kubernetes_version or cluster.kubernetes_version,
        min_count=pool.min_count,
        max_count=pool.max_count,
        nodes_to_remove=list(pool.nodes_to_remove or []),
        created_at=pool.created_at,
    )


def maintenance_of(cluster: Cluster) -> tuple[MaintenanceWindow | None, WindowTimes | None]:
    """The cluster's window and the next one's start and end (``ClusterOut``'s; the dashboard's too)."""
    if not cluster.maintenance_window:
        return None, None
    try:
        window = maintenance.MaintenanceWindow.parse(cluster.maintenance_window)
    except maintenance.MaintenanceWindowError:
        return None, None  # written by something else than this API: shown as none rather than a 500
    start, end = maintenance.next_window(window, utcnow())
    return MaintenanceWindow.model_validate(window.as_dict()), WindowTimes(start=start, end=end)


def cluster_out(
    session: Session, cluster: Cluster, *, node_counts: tuple[int, int] | None = None
) -> ClusterOut:
    """``node_counts`` (observed, ready) when the caller fetched them already, else they are counted."""
    observed, ready = node_counts if node_counts is not None else service.node_counts(session, cluster)
    desired = cluster.control_plane_count + sum(pool.count for pool in cluster.node_pools)
    window, next_window = maintenance_of(cluster)
    return ClusterOut(
        id=cluster.id,
        name=cluster.name,
        project=cluster.project.name,
        region=cluster.region.name,
        kubernetes_version=cluster.kubernetes_version,
        control_plane=ControlPlaneOut(count=cluster.control_plane_count, flavor=cluster.control_plane_flavor),
        node_pools=[pool_out(pool, cluster) for pool in cluster.node_pools],
        node_cidr=cluster.node_cidr,
        pod_cidr=cluster.pod_cidr,
        service_cidr=cluster.service_cidr,
        phase=cluster.phase,
        paused=bool(cluster.paused),
        conditions=[ConditionOut.model_validate(c) for c in cluster.conditions or []],
        node_counts=NodeCounts(desired=desired, observed=observed, ready=ready),
        api_endpoint=cluster.api_endpoint,
        maintenance_window=window,
        next_maintenance_window=next_window,
        pending_upgrade=pending_upgrade(cluster),
        generation=cluster.generation,
        observed_generation=cluster.observed_generation,
        created_at=cluster.created_at,
        updated_at=cluster.updated_at,
        deleted_at=cluster.deleted_at,
    )


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=ClusterAccepted)
def create_cluster(
    request: Request, project: str, body: ClusterCreate, principal: CurrentUser, uow: Uow, settings: Settings
) -> ClusterAccepted:
    """Create a cluster. Provisioning runs in the background; poll the returned operation."""
    access = authorize_project(uow.session, principal, project, need=Role.MEMBER)
    cluster, operation = service.create_cluster(
        uow,
        project=access.project,
        spec=body,
        requested_by=principal.user.id,
        secret_box=SecretBox(settings.secret_key),
    )
    add_audit_detail(request, cluster=cluster.id, operation=operation.id)
    return ClusterAccepted(cluster=cluster_out(uow.session, cluster), operation=OperationOut.of(operation))


@router.get("", response_model=list[ClusterOut])
async def list_clusters(project: str, caller: ReadingCaller) -> list[ClusterOut]:
    """The project's live clusters: in one worker thread, with every cluster's node counts in one query."""

    def read(session: Session, principal: Principal) -> list[ClusterOut]:
        access = authorize_project(session, principal, project, need=Role.VIEWER)
        clusters = service.list_clusters(session, access.project)
        counts = service.node_counts_of(session, [c.id for c in clusters])
        return [cluster_out(session, c, node_counts=counts[c.id]) for c in clusters]

    return await caller.read(read)


@router.get("/{cluster}", response_model=ClusterOut)
async def get_cluster(project: str, cluster: str, caller: ReadingCaller, context: Context) -> Response:
    """The API's most frequent call: from memory when it can (``kaas_api.clusters.view_cache``: no thread,
    no database), else authentication and one query in one worker thread, whose answer it keeps."""
    views = context.cluster_views
    principal = caller.cached_principal()
    if principal is not None:
        kept = views.answer(principal.user.id, principal.is_admin, project, cluster, need=Role.VIEWER)
        if kept is not None:
            return Response(content=kept, media_type=JSON)
    generation = views.generation()

    def read(session: Session, principal: Principal) -> bytes:
        found = service.find_cluster(session, principal, project, cluster, need=Role.VIEWER)
        shown = cluster_out(session, found.cluster, node_counts=(found.observed_nodes, found.ready_nodes))
        body = shown.model_dump_json(by_alias=True).encode()
        views.store(
            generation=generation,
            project_ref=project,
            cluster_ref=cluster,
            view=ClusterView(project_id=found.access.project.id, cluster_id=found.cluster.id, body=body),
            user_id=principal.user.id,
            role=found.access.role,
        )
        return body

    return Response(content=await caller.read(read), media_type=JSON)


@router.patch("/{cluster}", status_code=status.HTTP_202_ACCEPTED, response_model=ClusterAccepted)
def update_cluster(
    project: str, cluster: str, body: ClusterPatch, principal: CurrentUser, uow: Uow
) -> ClusterAccepted:
    """Change node pool counts, or upgrade Kubernetes (a rolling replacement of every node: 409 while
    another operation is unfinished), and/or set the maintenance window (null removes it)."""
    access = authorize_project(uow.session, principal, project, need=Role.MEMBER)
    row = service.get_cluster(uow.session, access.project, cluster)
    operation: Operation | None = None
    if "maintenance_window" in body.model_fields_set:
        window = body.maintenance_window.model_dump() if body.maintenance_window is not None else None
        service.set_maintenance_window(row, window)
    if body.kubernetes_version is not None:
        strategy = body.upgrade_strategy or UpgradeStrategy()
        operation = upgrades.upgrade_cluster(
            uow,
            row,
            to_version=body.kubernetes_version,
            strategy=strategy.strategy(),
            requested_by=principal.user.id,
        )
    elif body.node_pools is not None:
        counts = {item.name: item.count for item in body.node_pools}
        operation = service.scale_cluster(uow, row, counts, requested_by=principal.user.id)
    uow.session.flush()
    return ClusterAccepted(
        cluster=cluster_out(uow.session, row),
        operation=OperationOut.of(operation) if operation is not None else None,
    )


@router.delete("/{cluster}", status_code=status.HTTP_202_ACCEPTED, response_model=ClusterAccepted)
def delete_cluster(project: str, cluster: str, principal: CurrentUser, uow: Uow) -> ClusterAccepted:
    access = authorize_project(uow.session, principal, project, need=Role.MEMBER)
    row = service.get_cluster(uow.session, access.project, cluster)
    operation = service.delete_cluster(uow, row, requested_by=principal.user.id)
    return ClusterAccepted(cluster=cluster_out(uow.session, row), operation=OperationOut.of(operation))


@router.get("/{cluster}/node-pools", response_model=list[NodePoolOut])
def list_node_pools(project: str, cluster: str, principal: CurrentUser, uow: Uow) -> list[NodePoolOut]:
    access = authorize_project(uow.session, principal, project, need=Role.VIEWER)
    row = service.get_cluster(uow.session, access.project, cluster)
    return [pool_out(pool, row) for pool in row.node_pools]


@router.post("/{cluster}/node-pools", status_code=status.HTTP_202_ACCEPTED, response_model=NodePoolAccepted)
def create_node_pool(
    project: str, cluster: str, body: NodePoolCreate, principal: CurrentUser, uow: Uow
) -> NodePoolAccepted:
    access = authorize_project(uow.session, principal, project, need=Role.MEMBER)
    row = service.get_cluster(uow.session, access.project, cluster)
    pool, operation = service.add_node_pool(uow, row, body, requested_by=principal.user.id)
    return NodePoolAccepted(node_pool=pool_out(pool, row), operation=OperationOut.of(operation))


@router.get("/{cluster}/node-pools/{pool}", response_model=NodePoolOut)
def get_node_pool(project: str, cluster: str, pool: str, principal: CurrentUser, uow: Uow) -> NodePoolOut:
    access = authorize_project(uow.session, principal, project, need=Role.VIEWER)
    row = service.get_cluster(uow.session, access.project, cluster)
    return pool_out(service.get_node_pool(row, pool), row)


@router.patch(
    "/{cluster}/node-pools/{pool}", status_code=status.HTTP_202_ACCEPTED, response_model=NodePoolAccepted
)
def update_node_pool(
    project: str, cluster: str, pool: str, body: NodePoolPatch, principal: CurrentUser, uow: Uow
) -> NodePoolAccepted:
    access = authorize_project(uow.session, principal, project, need=Role.MEMBER)
    row = service.get_cluster(uow.session, access.project, cluster)
    updated, operation = service.update_node_pool(uow, row, pool, body, requested_by=principal.user.id)
    return NodePoolAccepted(node_pool=pool_out(updated, row), operation=OperationOut.of(operation))


@router.post(
    "/{cluster}/node-pools/{pool}/upgrade",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=NodePoolAccepted,
)
def upgrade_node_pool(
    project: str, cluster: str, pool: str, body: NodePoolUpgrade, principal: CurrentUser, uow: Uow
) -> NodePoolAccepted:
    """Upgrade one pool's nodes (kubelets) to a version up to the control plane's, by default the cluster's:
    a rolling replacement; 409 while another operation is unfinished."""
    access = authorize_project(uow.session, principal, project, need=Role.MEMBER)
    row = service.get_cluster(uow.session, access.project, cluster)
    operation = upgrades.upgrade_node_pool(
        uow,
        row,
        pool,
        to_version=body.kubernetes_version,
        strategy=body.upgrade_strategy.strategy(),
        requested_by=principal.user.id,
    )
    upgraded = service.get_node_pool(row, pool)
    return NodePoolAccepted(node_pool=pool_out(upgraded, row), operation=OperationOut.of(operation))


@router.delete(
    "/{cluster}/node-pools/{pool}", status_code=status.HTTP_202_ACCEPTED, response_model=NodePoolAccepted
)
def delete_node_pool(
    project: str, cluster: str, pool: str, principal: CurrentUser, uow: Uow
) -> NodePoolAccepted:
    access = authorize_project(uow.session, principal, project, need=Role.MEMBER)
    row = service.get_cluster(uow.session, access.project, cluster)
    operation = service.delete_node_pool(uow, row, pool, requested_by=principal.user.id)
    return NodePoolAccepted(node_pool=None, operation=OperationOut.of(operation))


@router.get("/{cluster}/nodes", response_model=list[NodeOut])
def list_nodes(project: str, cluster: str, principal: CurrentUser, uow: Uow) -> list[NodeOut]:
    access = authorize_project(uow.session, principal, project, need=Role.VIEWER)
    row = service.get_cluster(uow.session, access.project, cluster)
    return [
        NodeOut(
            id=node.id,
            name=node.name,
            role=node.role,
            node_pool=pool_name,
            flavor=node.flavor,
            status=node.status,
            address=node.address,
            ready=node.ready,
            created_at=node.created_at,
            updated_at=node.updated_at,
        )
        for node, pool_name in service.list_nodes(uow.session, row)
    ]


@router.get("/{cluster}/operations", response_model=list[OperationOut])
def list_operations(project: str, cluster: str, principal: CurrentUser, uow: Uow) -> list[OperationOut]:
    access = authorize_project(uow.session, principal, project, need=Role.VIEWER)
    row = service.get_cluster(uow.session, access.project, cluster)
    return [OperationOut.of(op) for op in list_cluster_operations(uow.session, row)]
