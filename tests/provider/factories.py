"""Test helper: insert the rows the API writes for a cluster (region, project, cluster, pools, operation).

The provider's tests drive the reconciler from these rows directly, without the HTTP API.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import (
    Cluster,
    ClusterPhase,
    NodePool,
    Operation,
    OperationKind,
    OperationState,
    Project,
    Region,
)
from kaas_core.db.session import session_scope
from kaas_core.security import AGENT_TOKEN_PREFIX, SecretBox, generate_token, hash_token

TEST_SECRET_KEY = "test-secret-key-for-the-provider-tests-0123456789"


@dataclass(frozen=True)
class PoolSpec:
    name: str = "workers"
    flavor: str = "m1.small"
    count: int = 2
    labels: dict[str, str] | None = None
    taints: list[dict[str, str]] | None = None


@dataclass(frozen=True)
class CreatedCluster:
    id: str
    operation_id: str
    agent_token: str


def ensure_region(session: Session, *, name: str = "sim", cloud: str = "sim") -> Region:
    region = session.scalars(select(Region).where(Region.name == name)).one_or_none()
    if region is None:
        region = Region(
            name=name,
            cloud=cloud,
            kubernetes_versions=["1.30.2"],
            default_kubernetes_version="1.30.2",
            flavors=[{"name": "m1.small", "vcpus": 1, "ram_mb": 2048}],
            image="ubuntu-22.04",
            external_network="public",
        )
        session.add(region)
        session.flush()
    return region


def ensure_project(session: Session, *, name: str = "team") -> Project:
    project = session.scalars(select(Project).where(Project.name == name)).one_or_none()
    if project is None:
        project = Project(name=name)
        session.add(project)
        session.flush()
    return project


def create_cluster(
    session_factory: sessionmaker[Session],
    *,
    name: str = "demo",
    control_plane_count: int = 1,
    control_plane_flavor: str = "m1.small",
    pools: tuple[PoolSpec, ...] = (PoolSpec(),),
    region: str = "sim",
    cloud: str = "sim",
    node_cidr: str = "10.0.0.0/24",
    secret_key: str = TEST_SECRET_KEY,
) -> CreatedCluster:
    """One committed cluster in phase provisioning with a pending create operation, like the API writes."""
    agent_token = generate_token(AGENT_TOKEN_PREFIX)
    with session_scope(session_factory) as session:
        region_row = ensure_region(session, name=region, cloud=cloud)
        project = ensure_project(session)
        cluster = Cluster(
            project_id=project.id,
            region_id=region_row.id,
            name=name,
            kubernetes_version="1.30.2",
            control_plane_count=control_plane_count,
            control_plane_flavor=control_plane_flavor,
            node_cidr=node_cidr,
            pod_cidr="10.244.0.0/16",
            service_cidr="10.96.0.0/12",
            phase=ClusterPhase.PROVISIONING.value,
            agent_token_hash=hash_token(agent_token),
            agent_token_encrypted=SecretBox(secret_key).encrypt(agent_token),
        )
        session.add(cluster)
        session.flush()
        for pool in pools:
            session.add(
                NodePool(
                    cluster_id=cluster.id,
                    name=pool.name,
                    flavor=pool.flavor,
                    count=pool.count,
                    labels=pool.labels or {},
                    taints=pool.taints or [],
                )
            )
        operation = Operation(
            cluster_id=cluster.id,
            project_id=project.id,
            kind=OperationKind.CREATE.value,
            state=OperationState.PENDING.value,
        )
        session.add(operation)
        session.flush()
        return CreatedCluster(id=cluster.id, operation_id=operation.id, agent_token=agent_token)


def request_operation(
    session_factory: sessionmaker[Session], cluster_id: str, *, kind: OperationKind, phase: ClusterPhase
) -> str:
    """What the API does for an update or a delete: bump the generation, set the phase, add an operation."""
    with session_scope(session_factory) as session:
        cluster = session.get_one(Cluster, cluster_id)
        if kind != OperationKind.DELETE:
            cluster.generation += 1
        cluster.phase = phase.value
        operation = Operation(
            cluster_id=cluster.id,
            project_id=cluster.project_id,
            kind=kind.value,
            state=OperationState.PENDING.value,
            target_generation=cluster.generation,
        )
        session.add(operation)
        session.flush()
        return operation.id


def scale_pool(session_factory: sessionmaker[Session], cluster_id: str, *, pool: str, count: int) -> str:
    with session_scope(session_factory) as session:
        row = session.scalars(
            select(NodePool).where(NodePool.cluster_id == cluster_id, NodePool.name == pool)
        ).one()
        row.count = count
    return request_operation(
        session_factory, cluster_id, kind=OperationKind.UPDATE, phase=ClusterPhase.UPDATING
    )
