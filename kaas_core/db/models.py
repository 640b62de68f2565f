"""SQLAlchemy models: the desired spec users ask for and the status the provider observes.

Owned by the API (which writes desired state) and shared with the provider workers (which write status,
nodes and operation progress). Schema changes only through Alembic migrations in ``migrations/``.
Relationships are ``lazy="raise"``: load what you need explicitly, so a hidden N+1 query fails loudly.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from kaas_core.db.base import Base
from kaas_core.tasks import region_queue


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def as_utc(value: datetime | None) -> datetime | None:
    """Normalise a datetime read back from SQLite (naive) to an aware UTC one."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def rfc3339(value: datetime) -> str:
    """A stored (UTC) time as kaas writes times in JSON: RFC 3339, UTC, ``Z``, e.g. 2026-12-01T09:30:00Z."""
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.isoformat().replace("+00:00", "Z")


class Role(enum.StrEnum):
    """Project roles, strongest first. Owners manage members; members change clusters; viewers read."""

    OWNER = "owner"
    MEMBER = "member"
    VIEWER = "viewer"

    @property
    def rank(self) -> int:
        return {Role.VIEWER: 1, Role.MEMBER: 2, Role.OWNER: 3}[self]


class TokenKind(enum.StrEnum):
    USER = "user"  # the API token of a person (kaas admin create-user, kaas token create)
    KUBECONFIG = "kubeconfig"  # scoped to one user and one cluster (issue 3)


class ClusterPhase(enum.StrEnum):
    PROVISIONING = "provisioning"
    RUNNING = "running"
    UPDATING = "updating"
    DELETING = "deleting"
    DELETED = "deleted"
    ERROR = "error"


class OperationKind(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"  # a spec change: scale (scale-down drains first), pools added or removed
    DELETE = "delete"
    UPGRADE = "upgrade"  # a rolling replacement at a new Kubernetes version (control plane, then pools)
    REPAIR = "repair"  # self-healing: unhealthy nodes replaced (provider.rollout.health)


class OperationState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    # stopped on failure (a node not Ready in time, a drain blocked past its timeout, an unhealthy
    # control plane): nothing more is replaced until someone resumes, rolls back or cancels it
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # stopped after the node in hand, on request

    @property
    def finished(self) -> bool:
        return self in (OperationState.SUCCEEDED, OperationState.FAILED, OperationState.CANCELLED)


UNFINISHED_OPERATION_STATES = (
    OperationState.PENDING.value,
    OperationState.RUNNING.value,
    OperationState.PAUSED.value,
)


class NodeRole(enum.StrEnum):
    CONTROL_PLANE = "control-plane"
    WORKER = "worker"


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user", lazy="raise")
    memberships: Mapped[list[ProjectMember]] = relationship(back_populates="user", lazy="raise")


class ApiToken(Base):
    """A bearer token. Only its SHA-256 digest is stored; the token itself is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to let people tell tokens apart
    kind: Mapped[str] = mapped_column(String(16), default=TokenKind.USER.value)
    description: Mapped[str] = mapped_column(String(255), default="")
    cluster_id: Mapped[str | None] = mapped_column(
        ForeignKey("clusters.id", ondelete="CASCADE"), default=None, index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)

    user: Mapped[User] = relationship(back_populates="tokens", lazy="raise")


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # who created it, whatever roles change later: the per-user creation limit counts these
    created_by: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None, index=True
    )

    members: Mapped[list[ProjectMember]] = relationship(
        back_populates="project", lazy="raise", cascade="all, delete-orphan"
    )
    quota: Mapped[Quota | None] = relationship(
        back_populates="project", lazy="raise", cascade="all, delete-orphan"
    )


class ProjectMember(Base):
    __tablename__ = "project_members"

    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    project: Mapped[Project] = relationship(back_populates="members", lazy="raise")
    user: Mapped[User] = relationship(back_populates="memberships", lazy="raise")


class Quota(Base):
    """Per-project limits, checked when a request is made. ``None`` means unlimited."""

    __tablename__ = "quotas"

    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    max_clusters: Mapped[int | None] = mapped_column(Integer, default=10)
    max_nodes: Mapped[int | None] = mapped_column(Integer, default=50)
    max_vcpus: Mapped[int | None] = mapped_column(Integer, default=200)
    max_ram_mb: Mapped[int | None] = mapped_column(Integer, default=409600)

    project: Mapped[Project] = relationship(back_populates="quota", lazy="raise")


class Region(Base):
    """A provider region: one cloud (a clouds.yaml entry), its own worker queue, its allowed choices.

    ``flavors`` is a list of ``{"name": str, "vcpus": int, "ram_mb": int}``: the flavors users may pick,
    with the sizes quotas are counted in.
    """

    __tablename__ = "regions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    cloud: Mapped[str] = mapped_column(String(255))
    kubernetes_versions: Mapped[list[str]] = mapped_column(JSON, default=list)
    default_kubernetes_version: Mapped[str | None] = mapped_column(String(32), default=None)
    flavors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    image: Mapped[str] = mapped_column(String(255), default="ubuntu-22.04")
    external_network: Mapped[str] = mapped_column(String(255), default="public")
    default_node_cidr: Mapped[str] = mapped_column(String(43), default="10.0.0.0/24")
    default_pod_cidr: Mapped[str] = mapped_column(String(43), default="10.244.0.0/16")
    default_service_cidr: Mapped[str] = mapped_column(String(43), default="10.96.0.0/12")
    dns_nameservers: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # what the region's cloud said its compute limits and use were (provider.reconciler.capacity), written
    # by the region's leak sweep; None until first observed. Keys: see ``provider.cloud.driver.CloudCapacity``
    cloud_capacity: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    cloud_capacity_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    # how a node gets containerd, kubelet and kubeadm (provider.bootstrap.node_binaries): "image", an image
    # with them preinstalled per version (``node_images`` maps each allowed version to one; ``image`` is the
    # fallback), or "mirror", packages from ``package_mirror_url`` (signed by ``package_mirror_key``, an
    # ASCII-armoured OpenPGP key) installed on ``image`` at first boot: what an air-gapped cloud has
    node_binaries: Mapped[str] = mapped_column(String(16), default="image", server_default="image")
    node_images: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    package_mirror_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    package_mirror_key: Mapped[str | None] = mapped_column(Text, default=None)
    # patch versions clusters of the same minor move to by themselves, inside their maintenance window
    automatic_upgrades: Mapped[list[str]] = mapped_column(JSON, default=list, server_default=text("'[]'"))

    @property
    def queue(self) -> str:
        """The Celery queue this region's provider workers consume."""
        return region_queue(self.name)


class Cluster(Base):
    """A user cluster: its desired spec (written by the API) and observed status (written by workers)."""

    __tablename__ = "clusters"
    __table_args__ = (
        # Names are unique per project among clusters that still exist; a deleted name can be reused.
        Index(
            "uq_clusters_project_id_name_live",
            "project_id",
            "name",
            unique=True,
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
        # the due-scan's one query: a region's clusters whose next pass is due (provider.reconciler.due)
        Index("ix_clusters_region_id_next_reconcile_at", "region_id", "next_reconcile_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="RESTRICT"), index=True)
    region_id: Mapped[str] = mapped_column(ForeignKey("regions.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    kubernetes_version: Mapped[str] = mapped_column(String(32))
    control_plane_count: Mapped[int] = mapped_column(Integer)
    control_plane_flavor: Mapped[str] = mapped_column(String(255))
    node_cidr: Mapped[str] = mapped_column(String(43))
    pod_cidr: Mapped[str] = mapped_column(String(43))
    service_cidr: Mapped[str] = mapped_column(String(43))

    # desired state bookkeeping: generation bumps on every spec change, the worker copies it when converged
    generation: Mapped[int] = mapped_column(Integer, default=1)
    observed_generation: Mapped[int] = mapped_column(Integer, default=0)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)

    # observed status
    phase: Mapped[str] = mapped_column(String(16), default=ClusterPhase.PROVISIONING.value, index=True)
    conditions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    api_endpoint: Mapped[str | None] = mapped_column(String(255), default=None)
    last_reconciled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    reconcile_failures: Mapped[int] = mapped_column(Integer, default=0)

    # at most one worker reconciles a cluster: a lease taken by a conditional UPDATE, with an expiry
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    # when a pass must have started (provider.reconciler.due): the due-scan queues one for every cluster
    # past it whose lease is free or expired. None: nothing to do until the API asks (failed, paused,
    # deleted). A new cluster is due at once, whoever wrote its row.
    next_reconcile_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=utcnow)
    # bumped by every pass's commit and every change the API accepts; a reconcile message carrying an older
    # one is stale and dropped (provider.reconciler.lease)
    reconcile_ticket: Mapped[int] = mapped_column(Integer, default=0)

    # the agent token (issue 3): hashed to authenticate the agent, encrypted so workers can render user-data
    agent_token_hash: Mapped[str | None] = mapped_column(String(64), default=None, unique=True)
    agent_token_encrypted: Mapped[str | None] = mapped_column(Text, default=None)
    # the Keystone application credential the cluster's cloud controller and CSI driver use
    # (provider.reconciler.cloud_credential): its id, and its secret encrypted with the secret box
    cloud_credential_id: Mapped[str | None] = mapped_column(String(64), default=None)
    cloud_credential_secret_encrypted: Mapped[str | None] = mapped_column(Text, default=None)

    # the weekly window automatic patch upgrades may run in: {"day": "sun", "start": "02:00",
    # "duration_minutes": 240, "time_zone": "Asia/Tokyo"} (kaas_core.maintenance); None: never automatic
    maintenance_window: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)

    created_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)

    project: Mapped[Project] = relationship(lazy="raise")
    region: Mapped[Region] = relationship(lazy="raise")
    node_pools: Mapped[list[NodePool]] = relationship(
        back_populates="cluster", lazy="raise", cascade="all, delete-orphan", order_by="NodePool.name"
    )
    nodes: Mapped[list[Node]] = relationship(
        back_populates="cluster", lazy="raise", cascade="all, delete-orphan", order_by="Node.name"
    )


class ClusterAuthority(Base):
    """One certificate authority (or the service-account key pair) of a cluster's PKI, owned by kaas.

    Written and read only by the provider (``provider.reconciler.pki_store``). The certificate (or public key)
    is public; the private key is stored only encrypted with the secret box and is never logged or returned
    by the API. Several rows of one kind may exist, so that a rotation can bring a second CA before the first
    is retired; the newest one not retired is the one nodes are built from.
    """

    __tablename__ = "cluster_authorities"
    __table_args__ = (Index("ix_cluster_authorities_cluster_id_kind", "cluster_id", "kind"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))  # provider.bootstrap.pki: cluster-ca | etcd-ca | ...
    public_pem: Mapped[str] = mapped_column(Text)
    key_encrypted: Mapped[str] = mapped_column(Text)
    not_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class BootstrapToken(Base):
    """A kubeadm bootstrap token of one join wave: short-lived, deleted once the wave's nodes joined.

    Written by the provider (``provider.reconciler.join_tokens``); the secret half is stored only encrypted.
    """

    __tablename__ = "cluster_bootstrap_tokens"
    __table_args__ = (
        UniqueConstraint("cluster_id", "token_id", name="uq_cluster_bootstrap_tokens_token_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    token_id: Mapped[str] = mapped_column(String(6))  # the public half, [a-z0-9]{6}
    secret_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # since when its Secret is known to be in the cluster: rendered into kubeadm init's config (the first
    # wave), or put there through the tunnel (later waves); an initialized cluster's servers join with one
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    # when kaas no longer hands it out: its wave joined (or it ran out); the cluster's copy goes with it
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class ClusterAddon(Base):
    """Which version of an add-on kaas last applied in a cluster (``provider.addons``), and the digest of
    exactly what it applied (the per-cluster parts included), so a changed input is applied again."""

    __tablename__ = "cluster_addons"

    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(64))
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class NodePool(Base):
    __tablename__ = "node_pools"
    __table_args__ = (UniqueConstraint("cluster_id", "name", name="uq_node_pools_cluster_id_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    flavor: Mapped[str] = mapped_column(String(255))
    count: Mapped[int] = mapped_column(Integer)
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    taints: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    # the pool's Kubernetes version (kubelet); None: the cluster's. Never newer than the control plane.
    kubernetes_version: Mapped[str | None] = mapped_column(String(32), default=None)
    # the autoscaler's bounds (provider.rollout.autoscale); both None: the pool is not autoscaled
    min_count: Mapped[int | None] = mapped_column(Integer, default=None)
    max_count: Mapped[int | None] = mapped_column(Integer, default=None)
    # node names a scale-down removes first (the caller's choice); the provider empties it as they go
    nodes_to_remove: Mapped[list[str]] = mapped_column(JSON, default=list, server_default=text("'[]'"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    cluster: Mapped[Cluster] = relationship(back_populates="node_pools", lazy="raise")


class Node(Base):
    """A node as observed: one cloud server of the cluster. Written only by the provider."""

    __tablename__ = "nodes"
    __table_args__ = (UniqueConstraint("cluster_id", "name", name="uq_nodes_cluster_id_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    node_pool_id: Mapped[str | None] = mapped_column(
        ForeignKey("node_pools.id", ondelete="SET NULL"), default=None
    )
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(255))
    server_id: Mapped[str | None] = mapped_column(String(64), default=None)
    flavor: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32), default="BUILD")  # the cloud server status
    address: Mapped[str | None] = mapped_column(String(64), default=None)
    ready: Mapped[bool] = mapped_column(Boolean, default=False)  # Kubernetes node Ready (agent, issue 3)
    kubernetes_version: Mapped[str | None] = mapped_column(String(32), default=None)  # the server's build
    # since when the node is known but not Ready (self-healing and the upgrade's Ready timeout count from it)
    not_ready_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    # cordoned and being emptied through the Eviction API before its server goes; since when
    draining_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    # no pod but DaemonSets' since then (the autoscaler's scale-down clock)
    empty_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    cluster: Mapped[Cluster] = relationship(back_populates="nodes", lazy="raise")


class Operation(Base):
    """One requested change and its progress, as the worker reports it step by step."""

    __tablename__ = "operations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default=OperationState.PENDING.value, index=True)
    step: Mapped[str | None] = mapped_column(String(64), default=None)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    target_generation: Mapped[int] = mapped_column(Integer, default=1)
    # what the operation was asked (upgrade: from_version, to_version, pool, max_surge, max_unavailable,
    # drain_timeout_seconds, node_ready_timeout_seconds); read by provider.rollout
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default=text("'{}'"))
    # per-node progress, written by the provider each pass: [{"name", "role", "pool", "version",
    # "state": old | new | surging | draining | deleted}]
    nodes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list, server_default=text("'[]'"))
    paused_reason: Mapped[str | None] = mapped_column(Text, default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    rolling_back: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    requested_by: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class ClusterAgent(Base):
    """The live state of a cluster's agent as kaas's tunnel server sees it; only the tunnel server writes it.

    One row per cluster: whether its agent is connected (and through which session and process), and the
    latest status report the agent sent (Kubernetes version, Ready nodes). Read by the reconciler for the
    AgentConnected / NodesReady conditions.
    """

    __tablename__ = "cluster_agents"

    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), primary_key=True)
    connected: Mapped[bool] = mapped_column(Boolean, default=False)
    session_id: Mapped[str | None] = mapped_column(String(64), default=None)
    tunnel_address: Mapped[str | None] = mapped_column(String(255), default=None)
    connected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    disconnected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    kubernetes_version: Mapped[str | None] = mapped_column(String(64), default=None)
    nodes_ready: Mapped[int | None] = mapped_column(Integer, default=None)
    nodes_total: Mapped[int | None] = mapped_column(Integer, default=None)
    nodes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    # Newer sessions that took over from a live one (kaas_tunnel.store.admit_session): in total, when
    # last, and the fixed window the per-cluster rate limit counts in.
    replacements: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_replaced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    replacement_window_started_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), default=None
    )
    replacements_in_window: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class AuditEvent(Base):
    """One mutating call: who did what to which resource, when, from where, and how it ended.

    Written by ``kaas_api.audit`` for every mutating API request and every dashboard action, in its own
    transaction after the response status is known (so refused and failed attempts are recorded too).
    Never holds a request body, a token or any other secret: only the route, its path parameters and the
    outcome. Project and cluster ids are plain strings, not foreign keys, so the trail outlives them.
    """

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_at_id", "at", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor_id: Mapped[str | None] = mapped_column(String(36), default=None, index=True)
    actor_name: Mapped[str | None] = mapped_column(String(63), default=None)
    via: Mapped[str] = mapped_column(String(16), default="api")  # api | dashboard
    action: Mapped[str] = mapped_column(String(128), index=True)
    method: Mapped[str] = mapped_column(String(8))
    route: Mapped[str] = mapped_column(String(255))
    resource_type: Mapped[str | None] = mapped_column(String(32), default=None)
    resource_id: Mapped[str | None] = mapped_column(String(255), default=None)
    project_id: Mapped[str | None] = mapped_column(String(63), default=None, index=True)
    cluster_id: Mapped[str | None] = mapped_column(String(63), default=None, index=True)
    outcome: Mapped[str] = mapped_column(String(16))  # success | refused | failed
    status_code: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    source_ip: Mapped[str | None] = mapped_column(String(64), default=None)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class AdminSession(Base):
    """A dashboard login: the cookie holds a random session id, only its SHA-256 is stored here.

    ``csrf_token`` is the per-session secret every dashboard form must echo back.
    """

    __tablename__ = "admin_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # the API token the admin logged in with: revoking it (or its expiry) ends the session too
    token_id: Mapped[str] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class WebhookEvent(enum.StrEnum):
    """What a project's webhooks can subscribe to: an operation reaching a final state, or pausing on a
    failure (an upgrade or repair waiting for someone to resume, roll back or cancel it)."""

    OPERATION_SUCCEEDED = "operation.succeeded"
    OPERATION_FAILED = "operation.failed"
    OPERATION_PAUSED = "operation.paused"


class DeliveryState(enum.StrEnum):
    PENDING = "pending"  # due at next_attempt_at (or in flight until then)
    SUCCEEDED = "succeeded"  # a 2xx answer; never sent again
    FAILED = "failed"  # out of attempts (or the webhook was disabled); never sent again


class Webhook(Base):
    """A project's notification endpoint. The signing secret is stored only encrypted (``SecretBox``).

    Written by ``kaas_api.webhooks``; read by the provider, which queues deliveries to it when an operation
    of the project finishes (``provider.webhooks``).
    """

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    secret_encrypted: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON, default=list)  # WebhookEvent values
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookDelivery(Base):
    """One event to send to one webhook (an outbox row), written in the transaction that finished the
    operation; the delivery task sends it and records every attempt. Operation, cluster and project ids are
    plain strings: the record outlives the cluster's rows (it goes with its webhook)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # one notification per webhook per operation outcome, however often a pass is retried
        UniqueConstraint("webhook_id", "operation_id", "event", name="uq_webhook_deliveries_webhook_id"),
        # the sweep's query: pending deliveries that are due
        Index("ix_webhook_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(String(36), index=True)
    operation_id: Mapped[str] = mapped_column(String(36), index=True)
    cluster_id: Mapped[str] = mapped_column(String(36))
    event: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # ``attempts`` when the delivery was last redelivered: the attempt budget counts from there
    attempts_at_redelivery: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)

    attempt_log: Mapped[list[WebhookAttempt]] = relationship(
        lazy="raise", order_by="WebhookAttempt.number", passive_deletes=True
    )


class WebhookAttempt(Base):
    """One HTTP attempt of a delivery: when, how it ended (status code or error), how long it took."""

    __tablename__ = "webhook_attempts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)  # 1 for the first attempt
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
