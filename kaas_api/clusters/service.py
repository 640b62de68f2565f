"""Clusters, node pools and nodes: validate a desired spec, store it, record an operation, ask for a
reconcile after the commit.

Called by ``kaas_api.clusters.endpoints``. Every change bumps ``generation``, records an operation
(superseding an unfinished older one) and registers a reconcile on the unit of work, which sends it to the
region's queue only once the transaction has committed. Flushes only; the caller commits.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Select, String, and_, bindparam, false, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, contains_eager, joinedload, load_only, selectinload
from sqlalchemy.orm.strategy_options import _AbstractLoad

from kaas_api.auth.service import Principal, ProjectAccess, check_project_role, project_not_found
from kaas_api.clusters.quota import check_quota, cluster_footprint, footprint, reserved_count
from kaas_api.clusters.schemas import ClusterCreate, NodePoolCreate, NodePoolPatch
from kaas_api.dispatch import UnitOfWork
from kaas_api.errors import Conflict, InvalidInput, NotFound
from kaas_api.kubeconfig.service import revoke_cluster_kubeconfig_tokens
from kaas_api.regions.service import flavor_sizes, get_region
from kaas_api.validation import is_dns_label, is_uuid, overlapping_cidrs
from kaas_core.db.models import (
    Cluster,
    ClusterPhase,
    Node,
    NodePool,
    Operation,
    OperationKind,
    Project,
    ProjectMember,
    Region,
    Role,
    utcnow,
)
from kaas_core.operations import record_operation, unfinished_operation
from kaas_core.security import AGENT_TOKEN_PREFIX, SecretBox, generate_token, hash_token

_FINAL_PHASES = (ClusterPhase.DELETING.value, ClusterPhase.DELETED.value)


def _loaded() -> tuple[_AbstractLoad, ...]:
    return (selectinload(Cluster.node_pools), selectinload(Cluster.region), selectinload(Cluster.project))


def get_cluster(session: Session, project: Project, ref: str) -> Cluster:
    """A cluster of the project by id, or by name among live clusters."""
    cluster = None
    if is_uuid(ref):
        cluster = session.scalar(
            select(Cluster).where(Cluster.project_id == project.id, Cluster.id == ref).options(*_loaded())
        )
    if cluster is None and is_dns_label(ref):
        cluster = session.scalar(
            select(Cluster)
            .where(Cluster.project_id == project.id, Cluster.name == ref, Cluster.deleted_at.is_(None))
            .options(*_loaded())
        )
    if cluster is None:
        raise NotFound(f"cluster {ref[:80]!r} not found in project {project.name!r}")
    return cluster


@dataclass(frozen=True)
class FoundCluster:
    access: ProjectAccess
    cluster: Cluster  # its node pools, region and project loaded
    observed_nodes: int
    ready_nodes: int


def find_cluster(
    session: Session, principal: Principal, project_ref: str, cluster_ref: str, *, need: Role
) -> FoundCluster:
    """``authorize_project``, ``get_cluster`` and ``node_counts`` in one round trip, with their answers in
    their order (the project 404, the role 403, the cluster 404): the cluster GET, the API's most frequent
    call, was seven statements. Project and cluster match by id first, then by name, as there."""
    if not is_dns_label(project_ref):
        raise project_not_found(project_ref)
    statement = _find_cluster_statement(
        project_by_id=is_uuid(project_ref),
        cluster_by_id=is_uuid(cluster_ref),
        cluster_by_name=is_dns_label(cluster_ref),
    )
    parameters = {"project_ref": project_ref, "cluster_ref": cluster_ref, "user_id": principal.user.id}
    rows = session.execute(statement, parameters).unique().all()
    # at most two projects (one by id, one by name) and two clusters each (one by id, one live by name)
    by_id = [row for row in rows if row[0].id == project_ref]
    project_rows = by_id or rows
    if not project_rows:
        raise project_not_found(project_ref)
    project, role = project_rows[0][0], project_rows[0][1]
    access = check_project_role(principal, project, role, need=need, project_name=project_ref)
    clusters = [row for row in project_rows if row[0] is project and row[2] is not None]
    clusters.sort(key=lambda row: row[2].id != cluster_ref)
    if not clusters:
        raise NotFound(f"cluster {cluster_ref[:80]!r} not found in project {project.name!r}")
    _project, _role, cluster, observed_nodes, ready_nodes = clusters[0]
    return FoundCluster(
        access=access, cluster=cluster, observed_nodes=int(observed_nodes), ready_nodes=int(ready_nodes)
    )


_SHOWN_CLUSTER_COLUMNS = (
    Cluster.id,
    Cluster.name,
    Cluster.project_id,
    Cluster.region_id,
    Cluster.kubernetes_version,
    Cluster.control_plane_count,
    Cluster.control_plane_flavor,
    Cluster.node_cidr,
    Cluster.pod_cidr,
    Cluster.service_cidr,
    Cluster.phase,
    Cluster.paused,
    Cluster.conditions,
    Cluster.api_endpoint,
    Cluster.maintenance_window,
    Cluster.generation,
    Cluster.observed_generation,
    Cluster.created_at,
    Cluster.updated_at,
    Cluster.deleted_at,
)


@functools.cache
def _find_cluster_statement(
    *, project_by_id: bool, cluster_by_id: bool, cluster_by_name: bool
) -> Select[Project, str | None, Cluster, int, int]:
    """``find_cluster``'s query, built once for each way the references can match: building it costs more
    CPU than PostgreSQL spends running it."""
    project_ref = bindparam("project_ref", type_=String)
    cluster_ref = bindparam("cluster_ref", type_=String)
    project_match: ColumnElement[bool] = Project.name == project_ref
    if project_by_id:
        project_match = or_(Project.id == project_ref, project_match)
    cluster_matches: list[ColumnElement[bool]] = []
    if cluster_by_id:
        cluster_matches.append(Cluster.id == cluster_ref)
    if cluster_by_name:
        cluster_matches.append(and_(Cluster.name == cluster_ref, Cluster.deleted_at.is_(None)))
    on_cluster = and_(Cluster.project_id == Project.id, or_(*cluster_matches)) if cluster_matches else false()
    member_role = (
        select(ProjectMember.role)
        .where(
            ProjectMember.project_id == Project.id,
            ProjectMember.user_id == bindparam("user_id", type_=String),
        )
        .scalar_subquery()
    )
    observed = select(func.count(Node.id)).where(Node.cluster_id == Cluster.id).scalar_subquery()
    ready = (
        select(func.count(Node.id))
        .where(Node.cluster_id == Cluster.id, Node.ready.is_(True))
        .scalar_subquery()
    )
    return (
        select(Project, member_role, Cluster, observed, ready)
        .outerjoin(Cluster, on_cluster)
        .where(project_match)
        .options(
            # what ClusterOut shows (clusters.endpoints.cluster_out); any other column raises if read, and
            # the encrypted secrets never leave the database for a GET
            load_only(*_SHOWN_CLUSTER_COLUMNS, raiseload=True),
            load_only(Project.id, Project.name, raiseload=True),
            joinedload(Cluster.node_pools),
            # what ClusterOut shows of the region: its name and its automatic upgrades (pending_upgrade)
            joinedload(Cluster.region).load_only(Region.name, Region.automatic_upgrades),
            contains_eager(Cluster.project),  # the project of the row
        )
    )


def list_clusters(session: Session, project: Project) -> list[Cluster]:
    return list(
        session.scalars(
            select(Cluster)
            .where(Cluster.project_id == project.id, Cluster.deleted_at.is_(None))
            .order_by(Cluster.name)
            .options(*_loaded())
        )
    )


def node_counts_of(session: Session, cluster_ids: list[str]) -> dict[str, tuple[int, int]]:
    """(observed, ready) node rows of each cluster, in one query: a project's cluster list counted them one
    cluster at a time, a statement per cluster. A cluster without nodes is (0, 0)."""
    counts = dict.fromkeys(cluster_ids, (0, 0))
    rows = session.execute(
        select(Node.cluster_id, func.count(Node.id), func.count(Node.id).filter(Node.ready.is_(True)))
        .where(Node.cluster_id.in_(cluster_ids))
        .group_by(Node.cluster_id)
    )
    for cluster_id, observed, ready in rows:
        counts[cluster_id] = (int(observed), int(ready))
    return counts


def node_counts(session: Session, cluster: Cluster) -> tuple[int, int]:
    """(observed, ready) node rows of the cluster."""
    observed, ready = session.execute(
        select(func.count(Node.id), func.count(Node.id).filter(Node.ready.is_(True))).where(
            Node.cluster_id == cluster.id
        )
    ).one()
    return int(observed), int(ready)


def _check_flavor(region: Region, flavor: str, *, field: str) -> None:
    allowed = sorted(flavor_sizes(region))
    if flavor not in allowed:
        raise InvalidInput(
            f"{field}: flavor {flavor[:80]!r} is not offered in region {region.name!r}; "
            f"allowed: {', '.join(allowed) or '(none configured)'}",
            field=field,
            rule="not_offered",
            allowed=allowed,
        )


def _check_pool_names(pools: list[NodePoolCreate]) -> None:
    names = [p.name for p in pools]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidInput(
            f"node pool names must be unique within a cluster; repeated: {', '.join(duplicates)}",
            field="node_pools",
            rule="duplicate",
            duplicates=duplicates,
        )


def _region_for_create(session: Session, name: str) -> Region:
    try:
        return get_region(session, name)
    except NotFound:
        available = list(session.scalars(select(Region.name).order_by(Region.name)))
        raise InvalidInput(
            f"region {name!r} does not exist; available: {', '.join(available) or '(none)'}",
            field="region",
            rule="unknown_region",
            allowed=available,
        ) from None


def request_reconcile(uow: UnitOfWork, cluster: Cluster) -> None:
    """Ask for a pass twice over: the cluster is due now in this very transaction (the provider's due-scan
    queues it if the message below is lost, or never sent because this process died after the commit), and
    the message after the commit is the fast path. The ticket bump tells a pass running meanwhile that a
    newer request came, and supersedes the messages sent before this one."""
    cluster.next_reconcile_at = utcnow()
    cluster.reconcile_ticket = Cluster.reconcile_ticket + 1  # in SQL: two writers never lose a bump
    uow.reconcile_after_commit(cluster.id, queue=cluster.region.queue)


def create_cluster(
    uow: UnitOfWork, *, project: Project, spec: ClusterCreate, requested_by: str, secret_box: SecretBox
) -> tuple[Cluster, Operation]:
    """Validate and store a new cluster with its pools and a ``create`` operation; reconcile after commit."""
    session = uow.session
    region = _region_for_create(session, spec.region)
    version = spec.kubernetes_version or region.default_kubernetes_version
    allowed_versions = list(region.kubernetes_versions or [])
    if version is None or version not in allowed_versions:
        what = (
            "no kubernetes_version given and the region has no default"
            if version is None
            else (f"kubernetes_version {version!r} is not offered in region {region.name!r}")
        )
        raise InvalidInput(
            f"{what}; allowed: {', '.join(allowed_versions) or '(none configured)'}",
            field="kubernetes_version",
            rule="not_offered",
            allowed=allowed_versions,
        )
    _check_flavor(region, spec.control_plane.flavor, field="control_plane.flavor")
    _check_pool_names(spec.node_pools)
    for index, pool in enumerate(spec.node_pools):
        _check_flavor(region, pool.flavor, field=f"node_pools[{index}].flavor")
        check_autoscale_bounds(
            count=pool.count, min_count=pool.min_count, max_count=pool.max_count, field=f"node_pools[{index}]"
        )
    cidrs = {
        "node_cidr": spec.node_cidr or region.default_node_cidr,
        "pod_cidr": spec.pod_cidr or region.default_pod_cidr,
        "service_cidr": spec.service_cidr or region.default_service_cidr,
    }
    overlaps = overlapping_cidrs(cidrs)
    if overlaps:
        raise InvalidInput(
            "node, pod and service CIDRs must not overlap: " + "; ".join(overlaps),
            rule="cidr_overlap",
            overlaps=overlaps,
        )
    if _live_name_taken(session, project, spec.name):
        raise Conflict(f"a cluster named {spec.name!r} already exists in project {project.name!r}")

    nodes = [(spec.control_plane.flavor, spec.control_plane.count)] + [
        (p.flavor, reserved_count(p.count, p.max_count)) for p in spec.node_pools
    ]
    check_quota(session, project, footprint(sizes=flavor_sizes(region), clusters=1, nodes=nodes))

    agent_token = generate_token(AGENT_TOKEN_PREFIX)
    cluster = Cluster(
        project_id=project.id,
        region_id=region.id,
        name=spec.name,
        kubernetes_version=version,
        control_plane_count=spec.control_plane.count,
        control_plane_flavor=spec.control_plane.flavor,
        node_cidr=cidrs["node_cidr"],
        pod_cidr=cidrs["pod_cidr"],
        service_cidr=cidrs["service_cidr"],
        generation=1,
        observed_generation=0,
        phase=ClusterPhase.PROVISIONING.value,
        conditions=[],
        agent_token_hash=hash_token(agent_token),
        agent_token_encrypted=secret_box.encrypt(agent_token),
        created_by=requested_by,
    )
    session.add(cluster)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(f"a cluster named {spec.name!r} already exists in project {project.name!r}") from exc
    for pool in spec.node_pools:
        session.add(_pool_row(cluster, pool))
    session.flush()
    operation = record_operation(session, cluster, kind=OperationKind.CREATE, requested_by=requested_by)
    cluster = get_cluster(session, project, cluster.id)
    request_reconcile(uow, cluster)
    return cluster, operation


def _pool_row(cluster: Cluster, pool: NodePoolCreate) -> NodePool:
    return NodePool(
        cluster_id=cluster.id,
        name=pool.name,
        flavor=pool.flavor,
        count=pool.count,
        labels=dict(pool.labels),
        taints=[t.model_dump(mode="json") for t in pool.taints],
        min_count=pool.min_count,
        max_count=pool.max_count,
    )


def check_autoscale_bounds(*, count: int, min_count: int | None, max_count: int | None, field: str) -> None:
    """An autoscaled pool has both bounds, and ``min_count <= count <= max_count``; a plain one neither."""
    prefix = f"{field}." if field else ""
    if (min_count is None) != (max_count is None):
        missing = "max_count" if max_count is None else "min_count"
        raise InvalidInput(
            f"{prefix}{missing}: min_count and max_count are given together (or neither)",
            field=f"{prefix}{missing}",
            rule="required_with",
        )
    if min_count is None or max_count is None:
        return
    if not min_count <= count <= max_count:
        raise InvalidInput(
            f"{prefix}count: an autoscaled pool needs min_count <= count <= max_count "
            f"(got {min_count} <= {count} <= {max_count})",
            field=f"{prefix}count" if min_count <= max_count else f"{prefix}min_count",
            rule="out_of_range",
        )


def _live_name_taken(session: Session, project: Project, name: str) -> bool:
    return (
        session.scalar(
            select(Cluster.id).where(
                Cluster.project_id == project.id, Cluster.name == name, Cluster.deleted_at.is_(None)
            )
        )
        is not None
    )


def _require_changeable(session: Session, cluster: Cluster) -> None:
    """A spec change waits for an unfinished upgrade (its rollout owns the nodes until it ends: resume,
    roll back or cancel it); a deletion does not (``delete_cluster`` supersedes it)."""
    require_not_deleting(cluster)
    upgrade = unfinished_operation(session, cluster)
    if upgrade is not None and upgrade.kind == OperationKind.UPGRADE.value:
        raise Conflict(
            f"cluster {cluster.name!r} has an unfinished upgrade, operation {upgrade.id} ({upgrade.state}); "
            "change it once the upgrade has ended, or roll back or cancel the upgrade",
            detail={"operation_id": upgrade.id},
        )


def require_not_deleting(cluster: Cluster) -> None:
    if cluster.phase in _FINAL_PHASES or cluster.deleted_at is not None:
        raise Conflict(f"cluster {cluster.name!r} is being deleted; it cannot be changed")


def _spec_changed(uow: UnitOfWork, cluster: Cluster, *, requested_by: str) -> Operation:
    cluster.generation += 1
    cluster.phase = ClusterPhase.UPDATING.value
    cluster.updated_at = utcnow()
    uow.session.flush()
    operation = record_operation(uow.session, cluster, kind=OperationKind.UPDATE, requested_by=requested_by)
    request_reconcile(uow, cluster)
    return operation


def get_node_pool(cluster: Cluster, name: str) -> NodePool:
    for pool in cluster.node_pools:
        if pool.name == name:
            return pool
    raise NotFound(f"node pool {name[:80]!r} not found in cluster {cluster.name!r}")


def _check_growth(session: Session, cluster: Cluster, new_nodes: list[tuple[str, int]]) -> None:
    before = cluster_footprint(cluster)
    after = footprint(sizes=flavor_sizes(cluster.region), clusters=1, nodes=new_nodes)
    check_quota(session, cluster.project, after - before)


def _nodes_with(
    cluster: Cluster, counts: dict[str, int], *, extra: tuple[tuple[str, int], ...] = ()
) -> list[tuple[str, int]]:
    """The cluster's reserved nodes (``reserved_count``) with some pools' reservations replaced."""
    nodes = [(cluster.control_plane_flavor, cluster.control_plane_count)]
    nodes += [
        (pool.flavor, counts.get(pool.name, reserved_count(pool.count, pool.max_count)))
        for pool in cluster.node_pools
    ]
    return nodes + list(extra)


def scale_cluster(
    uow: UnitOfWork, cluster: Cluster, counts: dict[str, int], *, requested_by: str
) -> Operation:
    """Set node pool counts (name -> count, in the order of the request's ``node_pools``); every named pool
    must exist. A name the cluster has no pool of is the request's fault (422), not a missing cluster."""
    _require_changeable(uow.session, cluster)
    existing = sorted(pool.name for pool in cluster.node_pools)
    for index, name in enumerate(counts):
        if name not in existing:
            raise InvalidInput(
                f"node_pools[{index}].name: cluster {cluster.name!r} has no node pool {name[:80]!r}; "
                f"it has: {', '.join(existing) or '(none)'}",
                field=f"node_pools[{index}].name",
                rule="unknown_node_pool",
                allowed=existing,
            )
    pools = {pool.name: pool for pool in cluster.node_pools}
    for index, (name, count) in enumerate(counts.items()):
        pool = pools[name]
        check_autoscale_bounds(
            count=count, min_count=pool.min_count, max_count=pool.max_count, field=f"node_pools[{index}]"
        )
    reserved = {name: reserved_count(count, pools[name].max_count) for name, count in counts.items()}
    _check_growth(uow.session, cluster, _nodes_with(cluster, reserved))
    for pool in cluster.node_pools:
        if pool.name in counts:
            pool.count = counts[pool.name]
    return _spec_changed(uow, cluster, requested_by=requested_by)


def add_node_pool(
    uow: UnitOfWork, cluster: Cluster, spec: NodePoolCreate, *, requested_by: str
) -> tuple[NodePool, Operation]:
    _require_changeable(uow.session, cluster)
    if any(pool.name == spec.name for pool in cluster.node_pools):
        raise Conflict(f"node pool {spec.name!r} already exists in cluster {cluster.name!r}")
    _check_flavor(cluster.region, spec.flavor, field="flavor")
    check_autoscale_bounds(count=spec.count, min_count=spec.min_count, max_count=spec.max_count, field="")
    reserved = reserved_count(spec.count, spec.max_count)
    _check_growth(uow.session, cluster, _nodes_with(cluster, {}, extra=((spec.flavor, reserved),)))
    pool = _pool_row(cluster, spec)
    uow.session.add(pool)
    try:
        uow.session.flush()
    except IntegrityError as exc:
        raise Conflict(f"node pool {spec.name!r} already exists in cluster {cluster.name!r}") from exc
    return pool, _spec_changed(uow, cluster, requested_by=requested_by)


def update_node_pool(
    uow: UnitOfWork, cluster: Cluster, name: str, patch: NodePoolPatch, *, requested_by: str
) -> tuple[NodePool, Operation]:
    _require_changeable(uow.session, cluster)
    pool = get_node_pool(cluster, name)
    given = patch.model_fields_set
    min_count, max_count = pool.min_count, pool.max_count
    if "min_count" in given or "max_count" in given:
        if not {"min_count", "max_count"} <= given:
            missing = "max_count" if "max_count" not in given else "min_count"
            raise InvalidInput(
                f"{missing}: min_count and max_count are changed together (both null: not autoscaled)",
                field=missing,
                rule="required_with",
            )
        min_count, max_count = patch.min_count, patch.max_count
    count = pool.count if patch.count is None else patch.count
    check_autoscale_bounds(count=count, min_count=min_count, max_count=max_count, field="")
    if patch.nodes_to_remove is not None:
        _check_nodes_to_remove(uow.session, pool, patch.nodes_to_remove, new_count=patch.count)
    _check_growth(uow.session, cluster, _nodes_with(cluster, {pool.name: reserved_count(count, max_count)}))
    pool.count = count
    pool.min_count, pool.max_count = min_count, max_count
    if patch.nodes_to_remove is not None:
        pool.nodes_to_remove = list(patch.nodes_to_remove)
    if patch.labels is not None:
        pool.labels = dict(patch.labels)
    if patch.taints is not None:
        pool.taints = [t.model_dump(mode="json") for t in patch.taints]
    return pool, _spec_changed(uow, cluster, requested_by=requested_by)


def _check_nodes_to_remove(
    session: Session, pool: NodePool, names: list[str], *, new_count: int | None
) -> None:
    """Names of the pool's current nodes, at most as many as the count goes down by, each once."""
    if new_count is None or new_count >= pool.count:
        raise InvalidInput(
            f"nodes_to_remove: goes with a count lower than the pool's {pool.count}",
            field="nodes_to_remove",
            rule="required_with",
        )
    if len(names) > pool.count - new_count:
        raise InvalidInput(
            f"nodes_to_remove: {len(names)} nodes named, but the count goes down by only "
            f"{pool.count - new_count} (from {pool.count} to {new_count})",
            field="nodes_to_remove",
            rule="out_of_range",
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidInput(
            f"nodes_to_remove: each node is named once; repeated: {', '.join(n[:80] for n in repeated)}",
            field="nodes_to_remove",
            rule="duplicate",
        )
    current = set(
        session.scalars(
            select(Node.name).where(Node.cluster_id == pool.cluster_id, Node.node_pool_id == pool.id)
        )
    )
    for index, node_name in enumerate(names):
        if node_name not in current:
            raise InvalidInput(
                f"nodes_to_remove[{index}]: {node_name[:80]!r} is not a node of pool {pool.name!r}",
                field=f"nodes_to_remove[{index}]",
                rule="unknown_node",
            )


def delete_node_pool(uow: UnitOfWork, cluster: Cluster, name: str, *, requested_by: str) -> Operation:
    _require_changeable(uow.session, cluster)
    pool = get_node_pool(cluster, name)
    cluster.node_pools.remove(pool)  # delete-orphan cascade deletes the row
    uow.session.flush()
    return _spec_changed(uow, cluster, requested_by=requested_by)


def set_maintenance_window(cluster: Cluster, window: dict[str, object] | None) -> None:
    """Store (or remove) the weekly window: no work for the provider, so no operation and no reconcile.
    Allowed during an upgrade: it is no spec change of the rollout's."""
    require_not_deleting(cluster)
    cluster.maintenance_window = window
    cluster.updated_at = utcnow()


def delete_cluster(uow: UnitOfWork, cluster: Cluster, *, requested_by: str) -> Operation:
    """Ask for the cluster's deletion. The provider tears it down and then sets phase ``deleted`` and
    ``deleted_at``. Asking again while deleting records a new operation that supersedes the first. The
    cluster's kubeconfig tokens are revoked here, with the acceptance (``kaas_api.kubeconfig.service``)."""
    if cluster.phase == ClusterPhase.DELETED.value or cluster.deleted_at is not None:
        raise Conflict(f"cluster {cluster.name!r} is already deleted")
    cluster.phase = ClusterPhase.DELETING.value
    cluster.generation += 1
    cluster.updated_at = utcnow()
    uow.session.flush()  # the UPDATE locks the row: a kubeconfig download now waits, then sees "deleting"
    revoke_cluster_kubeconfig_tokens(uow.session, cluster)
    operation = record_operation(uow.session, cluster, kind=OperationKind.DELETE, requested_by=requested_by)
    request_reconcile(uow, cluster)
    return operation


def list_nodes(session: Session, cluster: Cluster) -> list[tuple[Node, str | None]]:
    pools = {pool.id: pool.name for pool in cluster.node_pools}
    nodes = session.scalars(select(Node).where(Node.cluster_id == cluster.id).order_by(Node.name))
    return [(node, pools.get(node.node_pool_id) if node.node_pool_id else None) for node in nodes]


# --- operators' actions (the admin API and the dashboard call these same functions) -------------------


def get_any_cluster(session: Session, cluster_id: str) -> Cluster:
    """Any project's cluster by id (admins only: the caller has checked)."""
    cluster = (
        session.scalar(select(Cluster).where(Cluster.id == cluster_id).options(*_loaded()))
        if is_uuid(cluster_id)
        else None
    )
    if cluster is None:
        raise NotFound(f"cluster {cluster_id[:80]!r} not found")
    return cluster


def pause_cluster(cluster: Cluster) -> Cluster:
    """Stop reconciling the cluster: workers skip it and the due-scan leaves it alone until it is resumed."""
    if cluster.phase == ClusterPhase.DELETED.value:
        raise Conflict(f"cluster {cluster.name!r} is deleted; there is nothing to pause")
    cluster.paused = True
    cluster.updated_at = utcnow()
    return cluster


def resume_cluster(uow: UnitOfWork, cluster: Cluster) -> Cluster:
    """Reconcile the cluster again, starting with a pass right after the commit."""
    if cluster.phase == ClusterPhase.DELETED.value:
        raise Conflict(f"cluster {cluster.name!r} is deleted; there is nothing to resume")
    cluster.paused = False
    cluster.updated_at = utcnow()
    uow.session.flush()
    request_reconcile(uow, cluster)
    return cluster


def _latest_operation(session: Session, cluster: Cluster) -> Operation | None:
    return session.scalar(
        select(Operation)
        .where(Operation.cluster_id == cluster.id)
        .order_by(Operation.created_at.desc(), Operation.id)
        .limit(1)
    )


def retry_cluster(uow: UnitOfWork, cluster: Cluster, *, requested_by: str) -> Operation:
    """Run the cluster's failed operation again as a new operation of the same kind."""
    latest = _latest_operation(uow.session, cluster)
    if latest is None or latest.state != "failed":
        state = "no operation" if latest is None else f"its latest operation is {latest.state}"
        raise Conflict(f"cluster {cluster.name!r} has no failed operation to retry ({state})")
    if cluster.phase == ClusterPhase.DELETED.value:
        raise Conflict(f"cluster {cluster.name!r} is deleted")
    kind = OperationKind(latest.kind)
    cluster.phase = {
        OperationKind.CREATE: ClusterPhase.PROVISIONING,
        OperationKind.DELETE: ClusterPhase.DELETING,
    }.get(kind, ClusterPhase.UPDATING).value
    cluster.reconcile_failures = 0
    cluster.updated_at = utcnow()
    uow.session.flush()
    operation = record_operation(uow.session, cluster, kind=kind, requested_by=requested_by)
    request_reconcile(uow, cluster)
    return operation


def force_delete_cluster(uow: UnitOfWork, cluster: Cluster, *, requested_by: str) -> Operation:
    """Delete the cluster's cloud resources whatever state it is in: paused, failed, or with its agent gone.

    Deletion never needs the agent; what a plain delete may wait behind is a pause or the backoff of a
    failing cluster. A force-delete clears both and starts the teardown. (It never breaks a worker's lease:
    two workers on one cluster would be worse; a crashed worker's lease expires by itself.)
    """
    if cluster.phase == ClusterPhase.DELETED.value or cluster.deleted_at is not None:
        raise Conflict(f"cluster {cluster.name!r} is already deleted")
    cluster.paused = False
    cluster.reconcile_failures = 0
    return delete_cluster(uow, cluster, requested_by=requested_by)
