"""HTTP endpoints of ``/v1/admin`` (global admins only): the audit log, the fleet, operators' actions.

The dashboard calls the same service functions; every change here is audited by the audit middleware.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, status

from kaas_api.admin import service
from kaas_api.admin.schemas import AuditEventOut, FleetClusterOut, FleetClusterPage
from kaas_api.audit.service import MAX_PAGE_SIZE, AuditQuery, search
from kaas_api.clusters import service as clusters
from kaas_api.clusters.endpoints import cluster_out
from kaas_api.clusters.schemas import ClusterAccepted, ClusterOut
from kaas_api.deps import Admin, Uow
from kaas_api.operations.schemas import OperationOut
from kaas_api.schemas import QueryTimestamp

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.get("/audit", response_model=list[AuditEventOut])
def list_audit_events(
    admin: Admin,
    uow: Uow,
    user: Annotated[str | None, Query(max_length=63, description="actor name or id")] = None,
    project: Annotated[str | None, Query(max_length=63)] = None,
    cluster: Annotated[str | None, Query(max_length=63, description="cluster id or name in its path")] = None,
    action: Annotated[
        str | None, Query(max_length=128, description="endpoint name; 'prefix*' matches")
    ] = None,
    outcome: Literal["success", "refused", "failed"] | None = None,
    request_id: Annotated[str | None, Query(max_length=64)] = None,
    since: QueryTimestamp | None = None,
    until: QueryTimestamp | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[AuditEventOut]:
    """The audit log, newest first. Bodies, headers and tokens are never recorded."""
    query = AuditQuery(
        user=user,
        project=project,
        cluster=cluster,
        action=action,
        outcome=outcome,
        request_id=request_id,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )
    return [AuditEventOut.of(event) for event in search(uow.session, query)]


@router.get("/clusters", response_model=FleetClusterPage)
def list_fleet_clusters(
    admin: Admin,
    uow: Uow,
    q: Annotated[str | None, Query(max_length=80, description="part of the name, or an id prefix")] = None,
    phase: Annotated[str | None, Query(max_length=16)] = None,
    region: Annotated[str | None, Query(max_length=63)] = None,
    project: Annotated[str | None, Query(max_length=63)] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=service.MAX_PAGE_SIZE)] = service.DEFAULT_PAGE_SIZE,
) -> FleetClusterPage:
    """Every project's clusters, filtered and paginated (deleted ones only when ``phase=deleted``)."""
    result = service.search_clusters(
        uow.session,
        service.ClusterFilter(
            text=q, phase=phase, region=region, project=project, page=page, page_size=page_size
        ),
    )
    return FleetClusterPage(
        items=[
            FleetClusterOut(
                id=row.cluster.id,
                name=row.cluster.name,
                project=row.cluster.project.name,
                region=row.cluster.region.name,
                kubernetes_version=row.cluster.kubernetes_version,
                phase=row.cluster.phase,
                paused=bool(row.cluster.paused),
                nodes_ready=row.nodes_ready,
                nodes_total=row.nodes_total,
                agent_connected=row.agent_connected,
                agent_last_seen_at=row.agent_last_seen_at,
                created_at=row.cluster.created_at,
            )
            for row in result.rows
        ],
        total=result.total,
        page=result.page,
        pages=result.pages,
    )


@router.post("/clusters/{cluster_id}/pause", response_model=ClusterOut)
def pause_cluster(cluster_id: str, admin: Admin, uow: Uow) -> ClusterOut:
    """Stop reconciling a cluster (workers and the due-scan skip it) until it is resumed."""
    cluster = clusters.pause_cluster(clusters.get_any_cluster(uow.session, cluster_id))
    uow.session.flush()
    return cluster_out(uow.session, cluster)


@router.post("/clusters/{cluster_id}/resume", response_model=ClusterOut)
def resume_cluster(cluster_id: str, admin: Admin, uow: Uow) -> ClusterOut:
    cluster = clusters.resume_cluster(uow, clusters.get_any_cluster(uow.session, cluster_id))
    return cluster_out(uow.session, cluster)


@router.post(
    "/clusters/{cluster_id}/retry", status_code=status.HTTP_202_ACCEPTED, response_model=ClusterAccepted
)
def retry_cluster(cluster_id: str, admin: Admin, uow: Uow) -> ClusterAccepted:
    """Run a cluster's failed operation again (409 when its latest operation did not fail)."""
    cluster = clusters.get_any_cluster(uow.session, cluster_id)
    operation = clusters.retry_cluster(uow, cluster, requested_by=admin.user.id)
    return ClusterAccepted(cluster=cluster_out(uow.session, cluster), operation=OperationOut.of(operation))


@router.delete("/clusters/{cluster_id}", status_code=status.HTTP_202_ACCEPTED, response_model=ClusterAccepted)
def delete_any_cluster(
    cluster_id: str,
    admin: Admin,
    uow: Uow,
    force: Annotated[
        bool, Query(description="also when paused or failed: removes its cloud resources")
    ] = False,
) -> ClusterAccepted:
    cluster = clusters.get_any_cluster(uow.session, cluster_id)
    if force:
        operation = clusters.force_delete_cluster(uow, cluster, requested_by=admin.user.id)
    else:
        operation = clusters.delete_cluster(uow, cluster, requested_by=admin.user.id)
    return ClusterAccepted(cluster=cluster_out(uow.session, cluster), operation=OperationOut.of(operation))
