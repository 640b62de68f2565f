"""The OpenStack implementation of ``CloudDriver``, on openstacksdk. The only module that imports it.

Called by the reconciler (through ``DriverRegistry``) and by the contract tests, against a real OpenStack
or ``simcloud`` alike. Every method is idempotent: it looks resources up by the cluster tag and by name
before creating, deletes ignore what is already gone, and nothing waits: methods report the state and the
reconciler comes back. Every openstacksdk/keystoneauth error leaves this module as one of ours
(``provider.cloud.errors``). User-data and tokens are never logged.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import openstack
from keystoneauth1 import exceptions as ks_exceptions
from openstack import exceptions as os_exceptions
from openstack.config import loader

from provider.cloud.driver import (
    CLUSTER_TAG_PREFIX,
    CloudResource,
    LoadBalancerInfo,
    LoadBalancerSpec,
    NetworkInfo,
    NetworkSpec,
    SecurityGroupsInfo,
    ServerInfo,
    ServerSpec,
    cluster_tag,
    resource_prefix,
)
from provider.cloud.errors import (
    CloudError,
    CloudNotFound,
    CloudPermanentError,
    CloudQuotaExceeded,
    CloudTemporaryError,
    CloudTimeout,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# Nova microversion with server tags on create (2.52) and the `policy` field of server groups (2.64).
COMPUTE_MICROVERSION = "2.64"
KUBE_API_PORT = 6443


def _is_quota_error(exc: os_exceptions.HttpException) -> bool:
    text = f"{exc.details or ''} {exc.message or ''} {exc}".lower()
    return "quota" in text or "overquota" in text


@contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Re-raise every openstacksdk and keystoneauth error as our own, with what we were doing."""
    try:
        yield
    except CloudError:
        raise
    except os_exceptions.ResourceTimeout as exc:
        raise CloudTimeout(f"{action}: timed out: {exc}") from exc
    except os_exceptions.HttpException as exc:
        status = exc.status_code or 0
        detail = exc.details or exc.message or str(exc)
        if status in (403, 409, 413) and _is_quota_error(exc):
            raise CloudQuotaExceeded(f"{action}: cloud quota exceeded: {detail}") from exc
        if status == 409 or status == 429 or status >= 500 or status == 0:
            raise CloudTemporaryError(f"{action}: cloud busy ({status}): {detail}") from exc
        if status == 404:
            raise CloudNotFound(f"{action}: not found: {detail}") from exc
        raise CloudPermanentError(f"{action}: refused by the cloud ({status}): {detail}") from exc
    except (
        ks_exceptions.ConnectFailure,
        ks_exceptions.ConnectTimeout,
        ks_exceptions.RetriableConnectionFailure,
    ) as exc:
        raise CloudTemporaryError(f"{action}: cannot reach the cloud: {exc}") from exc
    except ks_exceptions.ClientException as exc:
        raise CloudTemporaryError(f"{action}: cloud client error: {exc}") from exc
    except os_exceptions.SDKException as exc:
        raise CloudPermanentError(f"{action}: {exc}") from exc


class OpenStackDriver:
    """``CloudDriver`` over one openstacksdk connection (one cloud, one project)."""

    def __init__(self, connection: Any, *, external_network_cache: dict[str, str] | None = None) -> None:
        self._conn = connection
        self._external_networks: dict[str, str] = external_network_cache or {}

    @classmethod
    def from_cloud(
        cls, cloud_name: str, *, config_file: Path | None = None, timeout: float = 30
    ) -> OpenStackDriver:
        """Connect to a clouds.yaml entry (``config_file`` or the usual search path)."""
        with translate_errors(f"connect to cloud {cloud_name!r}"):
            config = loader.OpenStackConfig(config_files=[str(config_file)] if config_file else None)
            region = config.get_one(
                cloud=cloud_name, api_timeout=timeout, compute_api_version=COMPUTE_MICROVERSION
            )
            connection = openstack.connection.Connection(config=region)
        return cls(connection)

    def close(self) -> None:
        self._conn.close()

    # --- validation -------------------------------------------------------------------------------
    def check_flavor(self, name: str) -> None:
        self._flavor_id(name)

    def check_image(self, name: str) -> None:
        self._image_id(name)

    def _flavor_id(self, name: str) -> str:
        with translate_errors(f"look up flavor {name!r}"):
            flavor = self._conn.compute.find_flavor(name, ignore_missing=True)
        if flavor is None:
            raise CloudNotFound(
                f"flavor {name!r} does not exist in the cloud; ask an admin to fix the region"
            )
        return str(flavor.id)

    def _image_id(self, name: str) -> str:
        with translate_errors(f"look up image {name!r}"):
            image = self._conn.image.find_image(name, ignore_missing=True)
        if image is None:
            raise CloudNotFound(f"image {name!r} does not exist in the cloud; ask an admin to fix the region")
        return str(image.id)

    def _external_network_id(self, name: str) -> str:
        if name not in self._external_networks:
            with translate_errors(f"look up external network {name!r}"):
                network = self._conn.network.find_network(name, ignore_missing=True)
            if network is None:
                raise CloudNotFound(f"external network {name!r} does not exist in the cloud")
            self._external_networks[name] = str(network.id)
        return self._external_networks[name]

    # --- helpers ------------------------------------------------------------------------------------
    def _tagged(self, list_call: Callable[..., Any], cluster_id: str, **query: Any) -> list[Any]:
        return list(list_call(tags=cluster_tag(cluster_id), **query))

    def _tag(self, resource: Any, cluster_id: str) -> None:
        self._conn.network.set_tags(resource, [cluster_tag(cluster_id)])

    def _one(self, items: list[T]) -> T | None:
        return items[0] if items else None

    # --- network ----------------------------------------------------------------------------------
    def ensure_network(self, spec: NetworkSpec) -> NetworkInfo:
        prefix = resource_prefix(spec.cluster_id)
        net_api = self._conn.network
        with translate_errors(f"ensure network of cluster {spec.cluster_id}"):
            external_id = self._external_network_id(spec.external_network)
            network = self._one(self._tagged(net_api.networks, spec.cluster_id))
            if network is None:
                network = net_api.create_network(name=f"{prefix}-net")
                self._tag(network, spec.cluster_id)
            subnet = self._one(self._tagged(net_api.subnets, spec.cluster_id, network_id=network.id))
            if subnet is None:
                subnet = net_api.create_subnet(
                    name=f"{prefix}-subnet",
                    network_id=network.id,
                    ip_version=4,
                    cidr=spec.cidr,
                    dns_nameservers=list(spec.dns_nameservers),
                )
                self._tag(subnet, spec.cluster_id)
            router = self._one(self._tagged(net_api.routers, spec.cluster_id))
            if router is None:
                router = net_api.create_router(
                    name=f"{prefix}-router", external_gateway_info={"network_id": external_id}
                )
                self._tag(router, spec.cluster_id)
            interfaces = list(net_api.ports(device_id=router.id, network_id=network.id))
            if not interfaces:
                net_api.add_interface_to_router(router, subnet=subnet.id)
        return NetworkInfo(
            network_id=str(network.id), subnet_id=str(subnet.id), router_id=str(router.id), ready=True
        )

    def ensure_security_groups(self, cluster_id: str, *, node_cidr: str) -> SecurityGroupsInfo:
        prefix = resource_prefix(cluster_id)
        wanted = {
            f"{prefix}-cp": [
                ("tcp", KUBE_API_PORT, KUBE_API_PORT, "0.0.0.0/0"),
                ("tcp", 2379, 2380, node_cidr),
                ("tcp", 10250, 10250, node_cidr),
                ("icmp", None, None, node_cidr),
            ],
            f"{prefix}-nodes": [
                ("tcp", 10250, 10250, node_cidr),
                ("tcp", 30000, 32767, node_cidr),
                ("udp", 30000, 32767, node_cidr),
                ("icmp", None, None, node_cidr),
            ],
        }
        ids: dict[str, str] = {}
        net_api = self._conn.network
        with translate_errors(f"ensure security groups of cluster {cluster_id}"):
            existing = {g.name: g for g in self._tagged(net_api.security_groups, cluster_id)}
            for name, rules in wanted.items():
                group = existing.get(name)
                if group is None:
                    group = net_api.create_security_group(name=name, description=f"kaas cluster {cluster_id}")
                    self._tag(group, cluster_id)
                present = {
                    (r.protocol, r.port_range_min, r.port_range_max, r.remote_ip_prefix)
                    for r in net_api.security_group_rules(security_group_id=group.id, direction="ingress")
                }
                for protocol, low, high, remote in rules:
                    if (protocol, low, high, remote) in present:
                        continue
                    net_api.create_security_group_rule(
                        security_group_id=group.id,
                        direction="ingress",
                        ethertype="IPv4",
                        protocol=protocol,
                        port_range_min=low,
                        port_range_max=high,
                        remote_ip_prefix=remote,
                    )
                ids[name] = str(group.id)
        return SecurityGroupsInfo(control_plane_id=ids[f"{prefix}-cp"], nodes_id=ids[f"{prefix}-nodes"])

    # --- compute ----------------------------------------------------------------------------------
    def ensure_server_group(self, cluster_id: str, *, policy: str) -> str:
        name = f"{resource_prefix(cluster_id)}-cp"
        with translate_errors(f"ensure server group of cluster {cluster_id}"):
            for group in self._conn.compute.server_groups():
                if group.name == name:
                    return str(group.id)
            group = self._conn.compute.create_server_group(name=name, policy=policy)
        return str(group.id)

    def list_servers(self, cluster_id: str) -> list[ServerInfo]:
        with translate_errors(f"list servers of cluster {cluster_id}"):
            servers = self._tagged(self._conn.compute.servers, cluster_id, details=True)
            return [self._server_info(s) for s in servers if s.status != "DELETED"]

    def create_server(self, spec: ServerSpec) -> ServerInfo:
        with translate_errors(f"create server {spec.name}"):
            for existing in self._tagged(self._conn.compute.servers, spec.cluster_id, name=f"^{spec.name}$"):
                if existing.name == spec.name and existing.status != "DELETED":
                    return self._server_info(existing)
            metadata = {
                **spec.metadata,
                "kaas-cluster": spec.cluster_id,
                "kaas-role": spec.role,
                **({"kaas-node-pool": spec.node_pool} if spec.node_pool else {}),
            }
            attrs: dict[str, Any] = {
                "name": spec.name,
                "flavor_id": self._flavor_id(spec.flavor),
                "image_id": self._image_id(spec.image),
                "networks": [{"uuid": spec.network_id}],
                "security_groups": [{"name": group_id} for group_id in spec.security_group_ids],
                "user_data": base64.b64encode(spec.user_data.encode()).decode(),
                "metadata": metadata,
                "tags": [cluster_tag(spec.cluster_id)],
            }
            if spec.server_group_id:
                attrs["scheduler_hints"] = {"group": spec.server_group_id}
            server = self._conn.compute.create_server(**attrs)
            log.info("server created", extra={"server": spec.name, "cluster": spec.cluster_id})
        return self._server_info(server)

    def delete_server(self, server_id: str) -> None:
        with translate_errors(f"delete server {server_id}"):
            self._conn.compute.delete_server(server_id, ignore_missing=True)

    @staticmethod
    def _server_info(server: Any) -> ServerInfo:
        address = None
        for entries in (server.addresses or {}).values():
            for entry in entries:
                if entry.get("version", 4) == 4 and entry.get("OS-EXT-IPS:type", "fixed") == "fixed":
                    address = entry.get("addr")
                    break
            if address:
                break
        fault = server.fault.get("message") if isinstance(server.fault, dict) else None
        return ServerInfo(
            id=str(server.id),
            name=str(server.name),
            status=str(server.status or "BUILD"),
            address=address,
            metadata=dict(server.metadata or {}),
            fault=fault,
        )

    # --- load balancer ----------------------------------------------------------------------------
    def ensure_load_balancer(self, spec: LoadBalancerSpec) -> LoadBalancerInfo:
        prefix = resource_prefix(spec.cluster_id)
        lb_api = self._conn.load_balancer
        with translate_errors(f"ensure load balancer of cluster {spec.cluster_id}"):
            lb = self._one(self._tagged(lb_api.load_balancers, spec.cluster_id))
            if lb is None:
                lb = lb_api.create_load_balancer(
                    name=f"{prefix}-api", vip_subnet_id=spec.subnet_id, tags=[cluster_tag(spec.cluster_id)]
                )
            if lb.provisioning_status != "ACTIVE":
                return self._lb_info(lb, pool_id=None)
            # the LB lists its own children: filtering listeners/pools by LB id is not portable across clouds
            listener_ids = [item["id"] for item in (lb.listeners or [])]
            if not listener_ids:
                lb_api.create_listener(
                    name=f"{prefix}-api", protocol="TCP", protocol_port=spec.port, load_balancer_id=lb.id
                )
                return self._lb_info(lb_api.get_load_balancer(lb.id), pool_id=None)
            pool_ids = [item["id"] for item in (lb.pools or [])]
            if not pool_ids:
                lb_api.create_pool(
                    name=f"{prefix}-api",
                    protocol="TCP",
                    lb_algorithm="ROUND_ROBIN",
                    listener_id=listener_ids[0],
                )
                return self._lb_info(lb_api.get_load_balancer(lb.id), pool_id=None)
            pool = lb_api.get_pool(pool_ids[0])
            if not pool.health_monitor_id:
                lb_api.create_health_monitor(pool_id=pool.id, type="TCP", delay=5, timeout=5, max_retries=3)
                return self._lb_info(lb_api.get_load_balancer(lb.id), pool_id=None)
        return self._lb_info(lb, pool_id=str(pool.id))

    @staticmethod
    def _lb_info(lb: Any, *, pool_id: str | None) -> LoadBalancerInfo:
        return LoadBalancerInfo(
            id=str(lb.id),
            vip_address=lb.vip_address,
            provisioning_status=str(lb.provisioning_status),
            pool_id=pool_id,
        )

    def ensure_lb_members(
        self, lb: LoadBalancerInfo, *, subnet_id: str, addresses: list[str], port: int
    ) -> bool:
        if lb.pool_id is None:
            return False
        lb_api = self._conn.load_balancer
        with translate_errors(f"ensure members of load balancer {lb.id}"):
            if lb_api.get_load_balancer(lb.id).provisioning_status != "ACTIVE":
                return False
            members = {m.address: m for m in lb_api.members(lb.pool_id)}
            for address, member in members.items():
                if address not in addresses:
                    lb_api.delete_member(member, lb.pool_id, ignore_missing=True)
                    return False  # Octavia takes one change at a time; come back when ACTIVE again
            for address in addresses:
                if address not in members:
                    lb_api.create_member(lb.pool_id, address=address, protocol_port=port, subnet_id=subnet_id)
                    return False
        return True

    # --- teardown and audit -----------------------------------------------------------------------
    def list_cluster_resources(self, cluster_id: str) -> list[CloudResource]:
        found: list[CloudResource] = []
        compute, net_api, lb_api = self._conn.compute, self._conn.network, self._conn.load_balancer
        with translate_errors(f"list resources of cluster {cluster_id}"):
            found += [
                CloudResource("server", s.id, s.name)
                for s in self._tagged(compute.servers, cluster_id)
                if s.status != "DELETED"
            ]
            found += [
                CloudResource("load_balancer", lb.id, lb.name)
                for lb in self._tagged(lb_api.load_balancers, cluster_id)
                if lb.provisioning_status != "DELETED"
            ]
            group_name = f"{resource_prefix(cluster_id)}-cp"
            found += [
                CloudResource("server_group", g.id, g.name)
                for g in compute.server_groups()
                if g.name == group_name
            ]
            found += [
                CloudResource("router", r.id, r.name) for r in self._tagged(net_api.routers, cluster_id)
            ]
            found += [
                CloudResource("subnet", s.id, s.name) for s in self._tagged(net_api.subnets, cluster_id)
            ]
            found += [
                CloudResource("network", n.id, n.name) for n in self._tagged(net_api.networks, cluster_id)
            ]
            found += [
                CloudResource("security_group", g.id, g.name)
                for g in self._tagged(net_api.security_groups, cluster_id)
            ]
        return found

    def delete_cluster_resources(self, cluster_id: str) -> list[CloudResource]:
        """One pass in dependency order; a step whose dependents still exist waits for the next pass."""
        compute, net_api, lb_api = self._conn.compute, self._conn.network, self._conn.load_balancer
        with translate_errors(f"delete resources of cluster {cluster_id}"):
            servers = [s for s in self._tagged(compute.servers, cluster_id) if s.status != "DELETED"]
            for server in servers:
                compute.delete_server(server, ignore_missing=True)
            lbs = [
                lb
                for lb in self._tagged(lb_api.load_balancers, cluster_id)
                if lb.provisioning_status != "DELETED"
            ]
            for lb in lbs:
                if not lb.provisioning_status.startswith("PENDING"):
                    lb_api.delete_load_balancer(lb, ignore_missing=True, cascade=True)
            group_name = f"{resource_prefix(cluster_id)}-cp"
            for group in compute.server_groups():
                if group.name == group_name:
                    compute.delete_server_group(group, ignore_missing=True)
            if servers or lbs:
                return self.list_cluster_resources(cluster_id)  # ports still in use: the network waits
            for router in self._tagged(net_api.routers, cluster_id):
                for port in net_api.ports(device_id=router.id, device_owner="network:router_interface"):
                    for fixed_ip in port.fixed_ips or []:
                        net_api.remove_interface_from_router(router, subnet=fixed_ip["subnet_id"])
                net_api.delete_router(router, ignore_missing=True)
            for network in self._tagged(net_api.networks, cluster_id):
                for port in net_api.ports(network_id=network.id):
                    if port.device_owner in ("", None) or str(port.device_owner).startswith("compute:"):
                        net_api.delete_port(port, ignore_missing=True)
            for subnet in self._tagged(net_api.subnets, cluster_id):
                net_api.delete_subnet(subnet, ignore_missing=True)
            for network in self._tagged(net_api.networks, cluster_id):
                net_api.delete_network(network, ignore_missing=True)
            for group in self._tagged(net_api.security_groups, cluster_id):
                net_api.delete_security_group(group, ignore_missing=True)
        return self.list_cluster_resources(cluster_id)

    def list_tagged_cluster_ids(self) -> set[str]:
        ids: set[str] = set()
        with translate_errors("list kaas-tagged resources"):
            for server in self._conn.compute.servers():
                ids.update(
                    t.removeprefix(CLUSTER_TAG_PREFIX)
                    for t in (server.tags or [])
                    if t.startswith(CLUSTER_TAG_PREFIX)
                )
            for network in self._conn.network.networks():
                ids.update(
                    t.removeprefix(CLUSTER_TAG_PREFIX)
                    for t in (network.tags or [])
                    if t.startswith(CLUSTER_TAG_PREFIX)
                )
        return ids
