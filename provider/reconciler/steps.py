"""The idempotent steps of one reconcile pass. Each compares the spec with the cloud and does what is missing.

A step returns ``StepOutcome(done=True)`` when its part of the cluster is as specified, or
``done=False`` with the reason it is waiting (a load balancer still PENDING, servers still building); it
raises ``CloudTemporaryError`` / ``CloudPermanentError`` (or ``BootstrapError``, which is permanent) when the
cloud refuses. Steps never wait and never touch the database; they only read the rows the pass loaded and
record what they learnt on ``PassState``. Called by ``provider.reconciler.reconcile``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from kaas_core.db.models import Cluster, NodePool, NodeRole, Region
from provider.bootstrap.cloud_init import BootstrapError, JoinMaterial, NodeBootstrap, render_user_data
from provider.bootstrap.node_binaries import NodeBinaries
from provider.bootstrap.pki import ClusterPki
from provider.cloud.driver import (
    CloudCredential,
    CloudDriver,
    LoadBalancerInfo,
    LoadBalancerSpec,
    NetworkInfo,
    NetworkSpec,
    SecurityGroupsInfo,
    ServerInfo,
    ServerSpec,
)
from provider.cloud.errors import CloudPermanentError
from provider.reconciler.naming import (
    GONE_STATUSES,
    control_plane_name,
    place_of,
    server_metadata,
    worker_name,
)
from provider.reconciler.plan import needs_load_balancer
from provider.rollout.plan import NewServer

API_PORT = 6443


@dataclass(frozen=True)
class StepOutcome:
    done: bool
    waiting_for: str = ""


DONE = StepOutcome(done=True)


@dataclass(frozen=True)
class JoinWaveToken:
    """The current join wave's bootstrap token as the steps see it (``provider.reconciler.pki_store``)."""

    value: str  # <id>.<secret>
    expires_at: datetime
    published: (
        bool  # its Secret is in the cluster (needed once kubeadm init ran: see provider.addons.join_tokens)
    )


@dataclass(frozen=True)
class ClusterBootstrap:
    """What every server of the cluster is built from, loaded by the pass before the steps run."""

    pki: ClusterPki
    binaries: NodeBinaries
    # kubeadm init ran once (the agent connected, or the cluster converged): every new control plane joins
    initialized: bool
    # the current wave's token; created (and committed at once) on first use, so only a pass that creates a
    # server makes one
    join_token: Callable[[], JoinWaveToken]
    agent_image: str
    now: datetime
    tunnel_address: str | None = None  # where kaas reaches the cluster while its agent is connected
    # records that a token is in the cluster without kaas putting it there: kubeadm init creates its own
    token_created_by_init: Callable[[JoinWaveToken], None] = lambda token: None


@dataclass
class PassState:
    """What one pass knows: the spec rows it loaded and what the cloud told it so far."""

    cluster: Cluster
    region: Region
    pools: list[NodePool]
    driver: CloudDriver
    tunnel_url: str
    agent_token: str | None
    server_error_retries: int
    servers: dict[str, ServerInfo] = field(default_factory=dict)  # by name, gone ones excluded
    network: NetworkInfo | None = None
    security_groups: SecurityGroupsInfo | None = None
    server_group_id: str | None = None
    load_balancer: LoadBalancerInfo | None = None
    api_endpoint: str | None = None
    validated: bool = False
    bootstrap: ClusterBootstrap | None = None
    # an application credential this pass created: the pass stores its secret (encrypted) in its commit
    new_cloud_credential: CloudCredential | None = None

    # surplus workers are left to the rollout, which drains them first (provider.rollout); off when kaas has
    # no way into the cluster yet (never initialized, or no tunnel client), where they are deleted at once
    rollout_removes_surplus: bool = False

    def image_for(self, version: str) -> str:
        """The image a server of ``version`` boots: the region's choice for that version."""
        if self.bootstrap is None:
            return self.region.image
        return self.bootstrap.binaries.image_for(version)

    @property
    def image(self) -> str:
        """The image of the cluster's (control plane's) version."""
        return self.image_for(self.cluster.kubernetes_version)

    def refresh_servers(self) -> None:
        self.servers = {
            s.name: s for s in self.driver.list_servers(self.cluster.id) if s.status not in GONE_STATUSES
        }

    def servers_of(self, role: str) -> list[ServerInfo]:
        return [s for s in self.servers.values() if place_of(s).role == role]


# --- network ---------------------------------------------------------------------------------------


def step_network(state: PassState) -> StepOutcome:
    state.network = state.driver.ensure_network(
        NetworkSpec(
            cluster_id=state.cluster.id,
            cidr=state.cluster.node_cidr,
            external_network=state.region.external_network,
            dns_nameservers=tuple(state.region.dns_nameservers or ()),
        )
    )
    return DONE if state.network.ready else StepOutcome(False, "the network, subnet and router")


def step_security_groups(state: PassState) -> StepOutcome:
    state.security_groups = state.driver.ensure_security_groups(
        state.cluster.id, node_cidr=state.cluster.node_cidr
    )
    return DONE


def _server_group_policy(cluster: Cluster) -> str:
    return "anti-affinity" if cluster.control_plane_count > 1 else "soft-anti-affinity"


def step_server_groups(state: PassState) -> StepOutcome:
    state.server_group_id = state.driver.ensure_server_group(
        state.cluster.id, policy=_server_group_policy(state.cluster)
    )
    return DONE


def step_cloud_credential(state: PassState) -> StepOutcome:
    """The Keystone application credential the cluster's cloud controller and CSI driver will use."""
    credential = state.driver.ensure_cloud_credential(
        state.cluster.id, known_id=state.cluster.cloud_credential_id
    )
    if credential.secret is not None:
        state.new_cloud_credential = credential
    return DONE


# --- load balancer ---------------------------------------------------------------------------------


def step_load_balancer(state: PassState) -> StepOutcome:
    assert state.network is not None
    lb = state.driver.ensure_load_balancer(
        LoadBalancerSpec(cluster_id=state.cluster.id, subnet_id=state.network.subnet_id, port=API_PORT)
    )
    state.load_balancer = lb
    if lb.provisioning_status == "ERROR":
        raise CloudPermanentError(f"the control plane's load balancer {lb.id} went to ERROR")
    if lb.vip_address:
        state.api_endpoint = f"https://{lb.vip_address}:{API_PORT}"
    if lb.provisioning_status != "ACTIVE" or lb.pool_id is None or not lb.vip_address:
        return StepOutcome(False, f"the load balancer ({lb.provisioning_status})")
    return DONE


# --- servers ---------------------------------------------------------------------------------------


def _validate_choices(state: PassState) -> None:
    """Fail fast, with a message a user can act on, before the first server of a pass is created."""
    if state.validated:
        return
    for flavor in sorted({state.cluster.control_plane_flavor, *(p.flavor for p in state.pools)}):
        state.driver.check_flavor(flavor)
    state.driver.check_image(state.image)
    state.validated = True


def _next_attempt(state: PassState, failed: list[ServerInfo]) -> int:
    """The attempt number of a replacement; too many servers in ERROR in a row is a permanent failure."""
    if not failed:
        return 1
    worst = max(failed, key=lambda s: place_of(s).attempt)
    attempt = place_of(worst).attempt + 1
    if attempt > 1 + state.server_error_retries:
        reason = f": {worst.fault}" if worst.fault else ""
        raise CloudPermanentError(
            f"server {worst.name} went to ERROR {attempt - 1} times in a row{reason}; "
            "check the flavor, the image and the cloud's capacity"
        )
    return attempt


def _create(
    state: PassState,
    *,
    name: str,
    role: str,
    flavor: str,
    pool: NodePool | None,
    slot: int | None,
    attempt: int,
    version: str,
    server_group_id: str | None = None,
) -> None:
    assert state.network is not None
    assert state.security_groups is not None
    _validate_choices(state)
    cluster = state.cluster
    is_cp = role == NodeRole.CONTROL_PLANE.value
    bootstrap = state.bootstrap
    if bootstrap is None:
        raise BootstrapError("the cluster's PKI was not loaded before its servers were built")
    token = bootstrap.join_token()
    initializes = is_cp and slot == 1 and not bootstrap.initialized
    user_data = render_user_data(
        NodeBootstrap(
            cluster_id=cluster.id,
            node_name=name,
            role=role,
            kubernetes_version=version,
            pod_cidr=cluster.pod_cidr,
            service_cidr=cluster.service_cidr,
            api_endpoint=state.api_endpoint,
            tunnel_url=state.tunnel_url,
            agent_token=state.agent_token if is_cp else None,  # the agent runs on the control plane only
            node_pool=pool.name if pool else None,
            labels=dict(pool.labels or {}) if pool else {},
            taints=list(pool.taints or []) if pool else [],
            join=JoinMaterial(
                token=token.value,
                token_expires_at=token.expires_at,
                ca_cert_hash=bootstrap.pki.ca_cert_hash,
                authorities=bootstrap.pki if is_cp else None,  # a worker pins the CA, never holds its key
                initializes=initializes,
                rendered_at=bootstrap.now,
            ),
            binaries=bootstrap.binaries,
            agent_image=bootstrap.agent_image,
        )
    )
    if initializes and not token.published:
        bootstrap.token_created_by_init(token)
    sg = state.security_groups
    server = state.driver.create_server(
        ServerSpec(
            cluster_id=cluster.id,
            name=name,
            role=role,
            flavor=flavor,
            image=state.image_for(version),
            network_id=state.network.network_id,
            security_group_ids=(sg.control_plane_id,) if is_cp else (sg.nodes_id,),
            user_data=user_data,
            server_group_id=(server_group_id or state.server_group_id) if is_cp else None,
            node_pool=pool.name if pool else None,
            metadata=server_metadata(
                role=role,
                flavor=flavor,
                attempt=attempt,
                version=version,
                pool=pool.name if pool else None,
                slot=slot,
            ),
        )
    )
    state.servers[server.name] = server


def _join_token_pending(state: PassState) -> StepOutcome | None:
    """Before a server is created in an initialized cluster, its wave's token must be in the cluster (kaas
    puts it there through the agent at the start of the next pass); the first wave's is kubeadm init's."""
    bootstrap = state.bootstrap
    if bootstrap is None or not bootstrap.initialized or bootstrap.join_token().published:
        return None
    return StepOutcome(False, "the join wave's bootstrap token to reach the cluster through its agent")


def step_control_plane(state: PassState) -> StepOutcome:
    cluster = state.cluster
    by_slot: dict[int, list[ServerInfo]] = {}
    for server in state.servers_of(NodeRole.CONTROL_PLANE.value):
        slot = place_of(server).slot or 1
        by_slot.setdefault(slot, []).append(server)
    for slot in range(1, cluster.control_plane_count + 1):
        present = by_slot.get(slot, [])
        if any(s.status != "ERROR" for s in present):
            continue
        pending = _join_token_pending(state)
        if pending is not None:
            return pending
        attempt = _next_attempt(state, [s for s in present if s.status == "ERROR"])
        _create(
            state,
            name=control_plane_name(cluster.id, slot, attempt),
            role=NodeRole.CONTROL_PLANE.value,
            flavor=cluster.control_plane_flavor,
            pool=None,
            slot=slot,
            attempt=attempt,
            version=cluster.kubernetes_version,
        )
    for slot, servers in by_slot.items():
        if slot > cluster.control_plane_count:
            for server in servers:
                state.driver.delete_server(server.id)
                state.servers.pop(server.name, None)
    if not needs_load_balancer(cluster):
        first = [s for s in state.servers_of(NodeRole.CONTROL_PLANE.value) if s.status != "ERROR"]
        addresses = sorted(s.address for s in first if s.address)
        if not addresses:
            return StepOutcome(False, "the control plane's address")
        state.api_endpoint = f"https://{addresses[0]}:{API_PORT}"
    return DONE


def step_lb_members(state: PassState) -> StepOutcome:
    assert state.load_balancer is not None
    assert state.network is not None
    healthy = [s for s in state.servers_of(NodeRole.CONTROL_PLANE.value) if s.status != "ERROR"]
    if any(not s.address for s in healthy):
        return StepOutcome(False, "addresses of the control-plane servers")
    done = state.driver.ensure_lb_members(
        state.load_balancer,
        subnet_id=state.network.subnet_id,
        addresses=sorted(s.address for s in healthy if s.address),
        port=API_PORT,
    )
    return DONE if done else StepOutcome(False, "the load balancer's members")


def step_node_pools(state: PassState) -> StepOutcome:
    if state.api_endpoint is None:
        return StepOutcome(False, "the API endpoint")
    cluster = state.cluster
    pools = {pool.name: pool for pool in state.pools}
    workers = state.servers_of(NodeRole.WORKER.value)
    for pool in state.pools:
        members = [s for s in workers if place_of(s).pool == pool.name]
        healthy = [s for s in members if s.status != "ERROR"]
        missing = pool.count - len(healthy)
        if missing > 0:
            pending = _join_token_pending(state)
            if pending is not None:
                return pending
            attempt = _next_attempt(state, [s for s in members if s.status == "ERROR"])
            for _ in range(missing):
                _create(
                    state,
                    name=worker_name(cluster.id, pool.name),
                    role=NodeRole.WORKER.value,
                    flavor=pool.flavor,
                    pool=pool,
                    slot=None,
                    attempt=attempt,
                    version=pool_version(cluster, pool),
                )
        elif missing < 0 and not state.rollout_removes_surplus:
            newest_first = sorted(healthy, key=lambda s: (place_of(s).created, s.name), reverse=True)
            for server in newest_first[:-missing]:
                state.driver.delete_server(server.id)
                state.servers.pop(server.name, None)
    for server in workers:  # workers of pools that were removed from the spec
        if place_of(server).pool not in pools:
            state.driver.delete_server(server.id)
            state.servers.pop(server.name, None)
    return DONE


def pool_version(cluster: Cluster, pool: NodePool) -> str:
    """A pool's Kubernetes version: its own once an upgrade of the pool set one, else the cluster's."""
    return pool.kubernetes_version or cluster.kubernetes_version


def create_member(state: PassState, new: NewServer) -> str | None:
    """Create the server the rollout asked for (``provider.rollout.plan.NewServer``); returns its name, or
    None while the join wave's token has not reached the cluster yet (the next pass publishes it first)."""
    if _join_token_pending(state) is not None:
        return None
    cluster = state.cluster
    pool: NodePool | None = None
    group: str | None = None
    slot: int | None = None
    if new.role == NodeRole.CONTROL_PLANE.value:
        slot = new.slot or 1
        name, flavor = control_plane_name(cluster.id, slot, new.attempt), cluster.control_plane_flavor
        # a group of its own generation: a strict group already has a member on every host it may use
        group = state.driver.ensure_server_group(
            cluster.id, policy=_server_group_policy(cluster), generation=new.version
        )
    else:
        pool = next(p for p in state.pools if p.name == new.pool)
        name, flavor = worker_name(cluster.id, pool.name), pool.flavor
    _create(
        state,
        name=name,
        role=new.role,
        flavor=flavor,
        pool=pool,
        slot=slot,
        attempt=new.attempt,
        version=new.version,
        server_group_id=group,
    )
    return name


def step_wait_active(state: PassState) -> StepOutcome:
    """Remove servers in ERROR (the steps above already created their replacements); wait for ACTIVE."""
    for server in list(state.servers.values()):
        if server.status == "ERROR":
            state.driver.delete_server(server.id)
            del state.servers[server.name]
    building = [s for s in state.servers.values() if s.status != "ACTIVE"]
    if building:
        total = len(state.servers)
        return StepOutcome(False, f"servers to become ACTIVE ({total - len(building)} of {total})")
    return DONE


STEP_FUNCTIONS: dict[str, Callable[[PassState], StepOutcome]] = {
    "network": step_network,
    "security_groups": step_security_groups,
    "server_groups": step_server_groups,
    "cloud_credential": step_cloud_credential,
    "load_balancer": step_load_balancer,
    "control_plane": step_control_plane,
    "lb_members": step_lb_members,
    "node_pools": step_node_pools,
    "wait_active": step_wait_active,
}
