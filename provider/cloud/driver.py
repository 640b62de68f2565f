"""The cloud driver interface the reconciler uses, and the value types it speaks.

The reconciler owns *what* should exist; a driver owns *how* to make it so in one cloud. Every method is
idempotent (calling it twice has the effect of calling it once) and bounded (no unbounded waits: methods
return the current state and the reconciler re-queues itself). Every resource a driver creates carries the
tag ``kaas-cluster=<cluster id>`` (or, where the cloud has no tags, a name starting with
``kaas-<cluster id>``) so that ``list_cluster_resources`` finds all of it, and carries a mark of its cluster
from the request that creates it (where the create request takes no tag, another field of it), so that a
worker killed between two calls leaves nothing ``delete_cluster_resources`` and the sweep cannot find.

Implementations: ``provider.cloud.openstack_driver.OpenStackDriver`` (openstacksdk; runs against a real
OpenStack or against ``simcloud``). The contract tests in ``tests/provider/cloud/test_contract.py`` run
against both clouds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

CLUSTER_TAG_PREFIX = "kaas-cluster="


def cluster_tag(cluster_id: str) -> str:
    """The tag every resource of a cluster carries."""
    return f"{CLUSTER_TAG_PREFIX}{cluster_id}"


def server_group_name(cluster_id: str, generation: str | None = None) -> str:
    """``kaas-<id8>-cp``, or ``kaas-<id8>-cp-<generation>`` (dots made dashes) for an upgrade's servers."""
    base = f"{resource_prefix(cluster_id)}-cp"
    if generation is None:
        return base
    return f"{base}-{generation.replace('.', '-')}"


def resource_prefix(cluster_id: str) -> str:
    """The name prefix of a cluster's resources: readable in the cloud's UI, unique per cluster."""
    return f"kaas-{cluster_id[:8]}"


@dataclass(frozen=True)
class NetworkSpec:
    cluster_id: str
    cidr: str
    external_network: str
    dns_nameservers: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetworkInfo:
    network_id: str
    subnet_id: str
    router_id: str
    ready: bool  # network, subnet, router, gateway and interface all present


@dataclass(frozen=True)
class SecurityGroupsInfo:
    control_plane_id: str
    nodes_id: str


@dataclass(frozen=True)
class ServerSpec:
    """One server the reconciler wants. ``name`` is unique within the cluster and is the identity."""

    cluster_id: str
    name: str
    role: str  # "control-plane" | "worker"
    flavor: str
    image: str
    network_id: str
    security_group_ids: tuple[str, ...]
    user_data: str
    server_group_id: str | None = None
    node_pool: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerInfo:
    id: str
    name: str
    status: str  # BUILD | ACTIVE | ERROR | DELETED | ... (Nova's words)
    address: str | None
    metadata: dict[str, str]
    fault: str | None = None  # Nova's fault message when status is ERROR


@dataclass(frozen=True)
class LoadBalancerSpec:
    cluster_id: str
    subnet_id: str
    port: int = 6443


@dataclass(frozen=True)
class LoadBalancerInfo:
    id: str
    vip_address: str | None
    provisioning_status: str  # PENDING_CREATE | ACTIVE | ERROR | ...
    pool_id: str | None  # None until listener and pool exist


@dataclass(frozen=True)
class CloudEndpoint:
    """Where a cluster's own cloud clients (cloud controller, CSI) authenticate: Keystone and the region."""

    auth_url: str
    region_name: str


@dataclass(frozen=True)
class CloudCredential:
    """The cluster's Keystone application credential. ``secret`` only when this call created it: Keystone
    shows a secret once, so the caller stores it (encrypted) at once."""

    id: str
    secret: str | None = field(default=None, repr=False)


def cloud_credential_name(cluster_id: str) -> str:
    """The name of the cluster's application credential (unique per user in Keystone; readable in audits)."""
    return f"{resource_prefix(cluster_id)}-cloud-provider"


@dataclass(frozen=True)
class CloudResource:
    """One resource found by the cluster tag: for audits and for the deletion check."""

    # network | subnet | router | security_group | port | server | server_group | load_balancer |
    # application_credential
    kind: str
    id: str
    name: str


@dataclass(frozen=True)
class CloudCapacity:
    """The project's compute limits and what is in use, as the cloud counts them (Nova's ``/limits``).

    A limit of None is unlimited. This is the cloud's word, including servers kaas did not create; kaas's
    own quotas are counted from the clusters' specs (``kaas_api.clusters.quota``).
    """

    cores_limit: int | None
    cores_used: int
    ram_mb_limit: int | None
    ram_mb_used: int
    instances_limit: int | None
    instances_used: int

    def as_dict(self) -> dict[str, int | None]:
        return {
            "cores_limit": self.cores_limit,
            "cores_used": self.cores_used,
            "ram_mb_limit": self.ram_mb_limit,
            "ram_mb_used": self.ram_mb_used,
            "instances_limit": self.instances_limit,
            "instances_used": self.instances_used,
        }


SecurityGroupRule = tuple[str | None, int | None, int | None, str | None]  # protocol, port range, remote


def security_group_rules(cluster_id: str, *, node_cidr: str) -> dict[str, frozenset[SecurityGroupRule]]:
    """The ingress rules of the cluster's two security groups, by group name: what
    ``ensure_security_groups`` creates and what the bulk observation checks are still there."""
    prefix = resource_prefix(cluster_id)
    return {
        f"{prefix}-cp": frozenset(
            {
                ("tcp", 6443, 6443, "0.0.0.0/0"),
                ("tcp", 2379, 2380, node_cidr),
                ("tcp", 10250, 10250, node_cidr),
                ("icmp", None, None, node_cidr),
            }
        ),
        f"{prefix}-nodes": frozenset(
            {
                ("tcp", 10250, 10250, node_cidr),
                ("tcp", 30000, 32767, node_cidr),
                ("udp", 30000, 32767, node_cidr),
                ("icmp", None, None, node_cidr),
            }
        ),
    }


@dataclass(frozen=True)
class LoadBalancerObservation:
    """A cluster's load balancer as one listing shows it: enough to tell that ``ensure_load_balancer`` and
    ``ensure_lb_members`` have nothing to do (the member addresses need a call per pool: their count does
    not)."""

    provisioning_status: str
    listener: bool
    pool: bool
    health_monitor: bool
    members: int


@dataclass
class ClusterResources:
    """What a region's listings show of one cluster (``RegionInventory``)."""

    servers: list[ServerInfo] = field(default_factory=list)  # every state but DELETED
    network_ready: bool = False  # network, subnet on it, router with a gateway and a port on the network
    security_groups: dict[str, frozenset[SecurityGroupRule]] = field(default_factory=dict)  # by name
    load_balancer: LoadBalancerObservation | None = None


@dataclass
class RegionInventory:
    """Everything kaas-marked in one cloud project, by cluster id, from one round of paginated listings
    (``CloudDriver.observe_region``); the bulk observation diffs each cluster's spec against it."""

    clusters: dict[str, ClusterResources] = field(default_factory=dict)
    credential_ids: set[str] = field(default_factory=set)  # application credentials of the driver's user
    server_groups: set[str] = field(default_factory=set)  # names of the kaas server groups (no tags)
    calls: int = 0  # HTTP requests the listings took

    def of(self, cluster_id: str) -> ClusterResources:
        """The cluster's resources (empty when the cloud has none of them)."""
        return self.clusters.get(cluster_id) or ClusterResources()


class CloudDriver(Protocol):
    """What the reconciler needs from a cloud. See the module docstring for the contract."""

    # --- validation -------------------------------------------------------------------------------
    def check_flavor(self, name: str) -> None:
        """Raise CloudNotFound when the flavor does not exist."""

    def check_image(self, name: str) -> None:
        """Raise CloudNotFound when the image does not exist."""

    # --- network ----------------------------------------------------------------------------------
    def ensure_network(self, spec: NetworkSpec) -> NetworkInfo:
        """Create whatever of network, subnet, router (+gateway, +interface) is missing."""

    def ensure_security_groups(self, cluster_id: str, *, node_cidr: str) -> SecurityGroupsInfo:
        """Control-plane and node security groups with the rules Kubernetes needs."""

    # --- compute ----------------------------------------------------------------------------------
    def ensure_server_group(self, cluster_id: str, *, policy: str, generation: str | None = None) -> str:
        """The control plane's server group (``anti-affinity`` or ``soft-anti-affinity``); returns its id.

        ``generation``: the group of the control-plane servers an upgrade makes at that version
        (``server_group_name``), so that a surge server of a strict group on as many hosts as members still
        finds a host; creating one deletes the cluster's older generation groups that have no member left."""

    def list_servers(self, cluster_id: str) -> list[ServerInfo]:
        """Every server tagged with the cluster, in any state."""

    def create_server(self, spec: ServerSpec) -> ServerInfo:
        """Create the server unless one with that name already exists for the cluster; return it."""

    def delete_server(self, server_id: str) -> None:
        """Delete; a server already gone is not an error."""

    def server_console(self, server_id: str, *, lines: int) -> str:
        """The last ``lines`` lines of the server's console log (Nova's ``os-getConsoleOutput``): where a
        node's boot says that it failed, and why (``provider.reconciler.boot_report``)."""

    # --- load balancer ----------------------------------------------------------------------------
    def ensure_load_balancer(self, spec: LoadBalancerSpec) -> LoadBalancerInfo:
        """LB, TCP listener on ``spec.port``, pool and health monitor: create what is missing as far as the
        LB's provisioning status allows (Octavia refuses changes while PENDING_*), return the state."""

    def ensure_lb_members(
        self, lb: LoadBalancerInfo, *, subnet_id: str, addresses: list[str], port: int
    ) -> bool:
        """Make the pool's members exactly ``addresses``; return True when nothing is pending."""

    # --- identity ---------------------------------------------------------------------------------
    def cloud_endpoint(self) -> CloudEndpoint:
        """The identity service's URL and the region name, as this driver's clouds.yaml entry has them."""

    def ensure_cloud_credential(self, cluster_id: str, *, known_id: str | None) -> CloudCredential:
        """The cluster's application credential for its cloud controller and CSI driver: the one with
        ``known_id`` when it still exists (no secret returned), else a new one (with its secret) after
        deleting any other of the cluster's, whose secret nobody knows any more. Restricted (it can make no
        further credentials), scoped to the driver's project, named ``cloud_credential_name`` and described
        with the cluster's tag so that audits and the leak sweep find it."""

    # --- teardown and audit -----------------------------------------------------------------------
    def list_cluster_resources(self, cluster_id: str) -> list[CloudResource]:
        """Everything the cluster owns in the cloud, found by tag or name prefix."""

    def delete_cluster_resources(self, cluster_id: str) -> list[CloudResource]:
        """One pass of deletion in dependency order; returns what is still left (empty: all gone).
        Bounded: it does not wait for slow deletions, the caller calls again."""

    def list_tagged_cluster_ids(self) -> set[str]:
        """Cluster ids of every kaas-tagged server and network: lets the sweep find leaked clusters."""

    def capacity(self) -> CloudCapacity:
        """The project's compute limits and use: what operators see as a region's capacity."""

    def observe_region(self) -> RegionInventory:
        """Every kaas-marked server, network part, security group, server group, load balancer and
        application credential of the driver's project, grouped by cluster: a bounded number of paginated
        list calls whatever the number of clusters (no call per cluster)."""
