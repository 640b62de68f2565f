"""The cloud driver contract: the same tests against the simulated cloud and the real OpenStack.

If simcloud drifts from OpenStack, one half of a test here fails. The driver acts as a tenant; every
assertion about what exists goes through a separate admin connection. Every test uses its own cluster id,
deletes what it created and proves that nothing tagged with that cluster is left.
"""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openstack
import pytest
import yaml

from agents.tunnel.boot_report import last_outcome
from provider.cloud.driver import (
    LoadBalancerInfo,
    LoadBalancerSpec,
    NetworkInfo,
    NetworkSpec,
    SecurityGroupsInfo,
    ServerInfo,
    ServerSpec,
    cluster_tag,
    resource_prefix,
    security_group_rules,
    server_group_name,
)
from provider.cloud.errors import (
    CloudCredentialsRefused,
    CloudNotFound,
    CloudPermanentError,
    CloudQuotaExceeded,
    CloudTemporaryError,
    CloudTokenRefused,
)
from provider.cloud.openstack_driver import OpenStackDriver
from tests.provider.cloud.conftest import CloudUnderTest, eventually

NODE_CIDR = "10.20.0.0/24"
TEST_EXTERNAL_CIDR = "198.51.100.0/24"  # TEST-NET-2: the test's own external network, never routed
REPO_ROOT = Path(__file__).resolve().parents[3]
USER_DATA = "#cloud-config\nwrite_files:\n  - path: /etc/kaas/marker\n    content: contract ✓\n"


@pytest.fixture
def cluster_id(cloud: CloudUnderTest) -> Iterator[str]:
    cid = cloud.new_cluster_id()
    yield cid
    cloud.delete_and_check(cid)


def base(
    driver: OpenStackDriver, cloud: CloudUnderTest, cluster_id: str
) -> tuple[NetworkInfo, SecurityGroupsInfo]:
    network = driver.ensure_network(
        NetworkSpec(cluster_id=cluster_id, cidr=NODE_CIDR, external_network=cloud.external_network)
    )
    groups = driver.ensure_security_groups(cluster_id, node_cidr=NODE_CIDR)
    return network, groups


def server_spec(
    cloud: CloudUnderTest,
    cluster_id: str,
    name: str,
    network: NetworkInfo,
    groups: SecurityGroupsInfo,
    *,
    role: str = "worker",
    flavor: str | None = None,
    server_group_id: str | None = None,
) -> ServerSpec:
    return ServerSpec(
        cluster_id=cluster_id,
        name=name,
        role=role,
        flavor=flavor or cloud.flavor,
        image=cloud.image,
        network_id=network.network_id,
        security_group_ids=(groups.control_plane_id if role == "control-plane" else groups.nodes_id,),
        user_data=USER_DATA,
        server_group_id=server_group_id,
        node_pool=None if role == "control-plane" else "default",
    )


def all_active(cloud: CloudUnderTest, cluster_id: str, count: int) -> list[ServerInfo] | None:
    servers = cloud.driver.list_servers(cluster_id)
    return servers if len(servers) == count and all(s.status == "ACTIVE" for s in servers) else None


def ingress_rules(cloud: CloudUnderTest, group_id: str) -> list[tuple[object, ...]]:
    return sorted(
        (
            (r.protocol, r.port_range_min or 0, r.port_range_max or 0, r.remote_ip_prefix)
            for r in cloud.admin.network.security_group_rules(security_group_id=group_id)
            if r.direction == "ingress"
        ),
        key=repr,
    )


def test_a_cluster_is_created_tagged_and_visible_to_the_admin(cloud: CloudUnderTest, cluster_id: str) -> None:
    network, groups = base(cloud.driver, cloud, cluster_id)
    group_id = cloud.driver.ensure_server_group(cluster_id, policy="anti-affinity")
    cp = cloud.driver.create_server(
        server_spec(
            cloud, cluster_id, "kaas-t-cp-0", network, groups, role="control-plane", server_group_id=group_id
        )
    )
    worker = cloud.driver.create_server(server_spec(cloud, cluster_id, "kaas-t-w-0", network, groups))
    servers = eventually(lambda: all_active(cloud, cluster_id, 2))
    assert {s.id for s in servers} == {cp.id, worker.id}
    assert all(s.address for s in servers)
    assert {s.id: s.metadata["kaas-role"] for s in servers} == {cp.id: "control-plane", worker.id: "worker"}

    tag = cluster_tag(cluster_id)
    admin = cloud.admin
    admin_servers = {s.name: s for s in admin.compute.servers(all_projects=True, tags=tag)}
    assert sorted(admin_servers) == ["kaas-t-cp-0", "kaas-t-w-0"]
    for server in admin_servers.values():
        full = admin.compute.get_server(server.id)
        assert tag in full.tags
        assert base64.b64decode(full.user_data).decode() == USER_DATA
    assert [n.id for n in admin.network.networks(tags=tag)] == [network.network_id]
    assert [s.id for s in admin.network.subnets(tags=tag)] == [network.subnet_id]
    assert admin.network.get_subnet(network.subnet_id).cidr == NODE_CIDR
    router = admin.network.get_router(network.router_id)
    assert tag in router.tags
    assert router.external_gateway_info["network_id"] == admin.network.find_network("public").id
    interfaces = list(admin.network.ports(device_id=router.id, network_id=network.network_id))
    assert [ip["subnet_id"] for p in interfaces for ip in p.fixed_ips] == [network.subnet_id]
    assert sorted(g.id for g in admin.network.security_groups(tags=tag)) == sorted(
        [groups.control_plane_id, groups.nodes_id]
    )
    assert {
        ("tcp", 6443, 6443, "0.0.0.0/0"),
        ("tcp", 2379, 2380, NODE_CIDR),
        ("tcp", 10250, 10250, NODE_CIDR),
        ("icmp", 0, 0, NODE_CIDR),
    } <= set(ingress_rules(cloud, groups.control_plane_id))
    assert {("tcp", 10250, 10250, NODE_CIDR), ("tcp", 30000, 32767, NODE_CIDR)} <= set(
        ingress_rules(cloud, groups.nodes_id)
    )
    server_group = admin.compute.get_server_group(group_id)
    assert server_group.policy == "anti-affinity"
    assert server_group.member_ids == [cp.id]


def test_every_ensure_twice_gives_the_same_ids_and_no_duplicates(
    cloud: CloudUnderTest, cluster_id: str
) -> None:
    first = base(cloud.driver, cloud, cluster_id)
    rules_before = [ingress_rules(cloud, g) for g in (first[1].control_plane_id, first[1].nodes_id)]
    second = base(cloud.driver, cloud, cluster_id)
    assert first == second
    assert [ingress_rules(cloud, g) for g in (first[1].control_plane_id, first[1].nodes_id)] == rules_before
    group_id = cloud.driver.ensure_server_group(cluster_id, policy="anti-affinity")
    assert cloud.driver.ensure_server_group(cluster_id, policy="anti-affinity") == group_id
    spec = server_spec(cloud, cluster_id, "kaas-t-w-0", *first)
    assert cloud.driver.create_server(spec).id == cloud.driver.create_server(spec).id
    assert len(cloud.driver.list_servers(cluster_id)) == 1
    kinds = sorted(r.kind for r in cloud.driver.list_cluster_resources(cluster_id))
    assert kinds == sorted(
        ["network", "subnet", "router", "security_group", "security_group", "server_group", "server"]
    )
    tag = cluster_tag(cluster_id)
    assert (
        len(list(cloud.admin.network.ports(device_id=first[0].router_id, network_id=first[0].network_id)))
        == 1
    )
    assert len(list(cloud.admin.compute.servers(all_projects=True, tags=tag))) == 1


def test_three_control_plane_servers_spread_over_three_hosts_behind_a_load_balancer(
    cloud: CloudUnderTest, cluster_id: str
) -> None:
    network, groups = base(cloud.driver, cloud, cluster_id)
    group_id = cloud.driver.ensure_server_group(cluster_id, policy="anti-affinity")
    spec = LoadBalancerSpec(cluster_id=cluster_id, subnet_id=network.subnet_id)
    first = cloud.driver.ensure_load_balancer(spec)  # provisions while the servers boot
    for index in range(3):
        cloud.driver.create_server(
            server_spec(
                cloud,
                cluster_id,
                f"kaas-t-cp-{index}",
                network,
                groups,
                role="control-plane",
                server_group_id=group_id,
            )
        )
    servers = eventually(lambda: all_active(cloud, cluster_id, 3))
    hosts = {cloud.admin.compute.get_server(s.id).compute_host for s in servers}
    assert len(hosts) == 3, hosts
    assert sorted(cloud.admin.compute.get_server_group(group_id).member_ids) == sorted(s.id for s in servers)

    def pool_ready() -> LoadBalancerInfo | None:
        lb = cloud.driver.ensure_load_balancer(spec)
        return lb if lb.pool_id and lb.provisioning_status == "ACTIVE" else None

    lb = eventually(pool_ready)
    assert lb.id == first.id
    assert lb.pool_id is not None
    addresses = sorted(s.address for s in servers if s.address)
    assert len(addresses) == 3

    def members_done() -> bool:
        return cloud.driver.ensure_lb_members(lb, subnet_id=network.subnet_id, addresses=addresses, port=6443)

    eventually(members_done)
    assert members_done()  # a second call changes nothing and reports done

    admin_lb = cloud.admin.load_balancer
    tag = cluster_tag(cluster_id)
    assert [x.id for x in admin_lb.load_balancers(tags=tag)] == [lb.id]
    assert eventually(lambda: admin_lb.get_load_balancer(lb.id).provisioning_status == "ACTIVE")
    members = list(admin_lb.members(lb.pool_id))
    assert sorted(m.address for m in members) == addresses
    assert {m.protocol_port for m in members} == {6443}
    full = admin_lb.get_load_balancer(lb.id)
    assert tag in full.tags
    assert full.vip_subnet_id == network.subnet_id
    [listener_ref] = full.listeners
    listener = admin_lb.get_listener(listener_ref["id"])
    assert (listener.protocol, listener.protocol_port) == ("TCP", 6443)
    pool = admin_lb.get_pool(lb.pool_id)
    assert (pool.protocol, pool.lb_algorithm) == ("TCP", "ROUND_ROBIN")
    assert [item["id"] for item in pool.listeners] == [listener.id]
    assert pool.health_monitor_id
    monitor = admin_lb.get_health_monitor(pool.health_monitor_id)
    assert monitor.type == "TCP"
    # every child carries the cluster's tag from its create request; the cluster_id fixture then checks,
    # by that tag, that the cascade deleted them all
    assert [tag in child.tags for child in (listener, pool, monitor, *members)] == [True] * (3 + len(members))


def test_deletion_in_passes_leaves_nothing_tagged_in_any_service(cloud: CloudUnderTest) -> None:
    cluster_id = cloud.new_cluster_id()
    network, groups = base(cloud.driver, cloud, cluster_id)
    group_id = cloud.driver.ensure_server_group(cluster_id, policy="anti-affinity")
    cloud.driver.create_server(
        server_spec(
            cloud, cluster_id, "kaas-t-cp-0", network, groups, role="control-plane", server_group_id=group_id
        )
    )
    cloud.driver.create_server(server_spec(cloud, cluster_id, "kaas-t-w-0", network, groups))
    # still PENDING_CREATE: the deletion has to wait for Octavia before it can cascade
    cloud.driver.ensure_load_balancer(LoadBalancerSpec(cluster_id=cluster_id, subnet_id=network.subnet_id))
    assert cluster_id in cloud.driver.list_tagged_cluster_ids()

    left = cloud.driver.delete_cluster_resources(cluster_id)
    assert left, "one pass cannot delete a network whose servers and LB are still going"
    cloud.delete_and_check(cluster_id)
    assert cluster_id not in cloud.driver.list_tagged_cluster_ids()


def test_deleting_twice_or_what_never_existed_is_not_an_error(cloud: CloudUnderTest) -> None:
    cluster_id = cloud.new_cluster_id()
    assert cloud.driver.delete_cluster_resources(cluster_id) == []
    assert cloud.driver.delete_cluster_resources(cluster_id) == []
    cloud.driver.delete_server("00000000-0000-0000-0000-000000000000")


def test_unknown_flavor_image_or_external_network_are_clear_permanent_errors(
    cloud: CloudUnderTest, cluster_id: str
) -> None:
    with pytest.raises(CloudNotFound, match="external network 'no-such-net' does not exist"):
        cloud.driver.ensure_network(
            NetworkSpec(cluster_id=cluster_id, cidr=NODE_CIDR, external_network="no-such-net")
        )
    assert cloud.driver.list_cluster_resources(cluster_id) == []  # it stopped before creating anything
    network, groups = base(cloud.driver, cloud, cluster_id)
    with pytest.raises(CloudNotFound, match="flavor 'no-such-flavor' does not exist"):
        cloud.driver.create_server(
            server_spec(cloud, cluster_id, "kaas-t-w-0", network, groups, flavor="no-such-flavor")
        )
    with pytest.raises(CloudNotFound, match="image 'no-such-image' does not exist"):
        cloud.driver.check_image("no-such-image")
    cloud.driver.check_image(cloud.image)
    cloud.driver.check_flavor(cloud.flavor)
    assert cloud.driver.list_servers(cluster_id) == []


def test_a_request_the_cloud_rejects_is_a_permanent_error(cloud: CloudUnderTest, cluster_id: str) -> None:
    with pytest.raises(CloudPermanentError, match=r"refused by the cloud \(400\)") as caught:
        cloud.driver.ensure_network(
            NetworkSpec(cluster_id=cluster_id, cidr="10.20.0.0/99", external_network=cloud.external_network)
        )
    assert not isinstance(caught.value, CloudNotFound)
    assert caught.value.__cause__ is not None  # raised ``from`` the openstacksdk error


def test_an_exhausted_instance_quota_is_a_quota_error(cloud: CloudUnderTest) -> None:
    cluster_id = cloud.new_cluster_id()
    with cloud.without_instance_quota(cluster_id) as driver:
        network, groups = base(driver, cloud, cluster_id)
        with pytest.raises(CloudQuotaExceeded, match=r"(?i)quota exceeded"):
            driver.create_server(server_spec(cloud, cluster_id, "kaas-t-w-0", network, groups))
        assert driver.list_servers(cluster_id) == []
    assert cloud.leftovers(cluster_id) == {}


def test_the_sweep_finds_clusters_by_their_tags(cloud: CloudUnderTest, cluster_id: str) -> None:
    other = cloud.new_cluster_id()
    assert cluster_id not in cloud.driver.list_tagged_cluster_ids()
    network, groups = base(cloud.driver, cloud, cluster_id)
    cloud.driver.create_server(server_spec(cloud, cluster_id, "kaas-t-w-0", network, groups))
    found = cloud.driver.list_tagged_cluster_ids()
    assert cluster_id in found
    assert other not in found


def test_one_region_observation_shows_each_clusters_resources_across_pages(
    cloud: CloudUnderTest, cluster_id: str
) -> None:
    """The bulk listing (``observe_region``), paged one item at a time so every listing takes several
    pages: the cluster's servers, its ready network, its security groups with every rule, its server group
    and its application credential; a server deleted behind its back is gone from the next observation."""
    paged = OpenStackDriver(cloud.driver._conn, list_page=1, server_group_page=1)
    assert cluster_id not in paged.observe_region().clusters
    network, groups = base(cloud.driver, cloud, cluster_id)
    cloud.driver.ensure_server_group(cluster_id, policy="soft-anti-affinity")
    credential = cloud.driver.ensure_cloud_credential(cluster_id, known_id=None)
    created = [
        cloud.driver.create_server(server_spec(cloud, cluster_id, f"kaas-t-w-{i}", network, groups))
        for i in range(2)
    ]
    eventually(lambda: all_active(cloud, cluster_id, 2))

    inventory = paged.observe_region()
    ours = inventory.of(cluster_id)
    assert sorted(s.name for s in ours.servers) == ["kaas-t-w-0", "kaas-t-w-1"]
    assert {s.status for s in ours.servers} == {"ACTIVE"}
    assert all(s.address for s in ours.servers)
    assert ours.network_ready
    assert ours.security_groups == security_group_rules(cluster_id, node_cidr=NODE_CIDR)
    assert server_group_name(cluster_id) in inventory.server_groups
    assert credential.id in inventory.credential_ids
    assert ours.load_balancer is None
    assert inventory.calls > 8  # one page an item: several pages per listing

    cloud.admin.compute.delete_server(created[0].id)
    eventually(lambda: [s.name for s in paged.observe_region().of(cluster_id).servers] == ["kaas-t-w-1"])


def test_a_clusters_server_group_is_found_on_any_page_of_the_listing(
    cloud: CloudUnderTest, cluster_id: str
) -> None:
    """Nova lists server groups in pages (limit/offset) and cannot filter them by name: with one group a
    page, each cluster's group is still found, once, and ensuring it again creates no second one."""
    paged = OpenStackDriver(cloud.driver._conn, server_group_page=1)
    others = [cloud.new_cluster_id(), cloud.new_cluster_id()]
    try:
        ids = {c: paged.ensure_server_group(c, policy="soft-anti-affinity") for c in (cluster_id, *others)}
        assert len(set(ids.values())) == 3
        for cluster, group_id in ids.items():
            assert paged.ensure_server_group(cluster, policy="soft-anti-affinity") == group_id
            groups = [r for r in paged.list_cluster_resources(cluster) if r.kind == "server_group"]
            assert [g.id for g in groups] == [group_id]
    finally:
        for other in others:
            cloud.delete_and_check(other)


def test_the_capacity_is_the_projects_limits_and_counts_a_new_server(
    cloud: CloudUnderTest, cluster_id: str
) -> None:
    """Nova's /limits as the tenant sees them: the server just created is in the use counts."""
    flavor = cloud.admin.compute.find_flavor(cloud.flavor, ignore_missing=False)
    network, groups = base(cloud.driver, cloud, cluster_id)
    cloud.driver.create_server(server_spec(cloud, cluster_id, "kaas-t-w-0", network, groups))
    eventually(lambda: all_active(cloud, cluster_id, 1))  # Nova counts a server once it left the scheduler
    capacity = cloud.driver.capacity()
    # other tests' servers of this tenant may still be going away, so at least ours
    assert capacity.instances_used >= 1
    assert capacity.cores_used >= flavor.vcpus
    assert capacity.ram_mb_used >= flavor.ram
    for used, limit in (
        (capacity.instances_used, capacity.instances_limit),
        (capacity.cores_used, capacity.cores_limit),
        (capacity.ram_mb_used, capacity.ram_mb_limit),
    ):
        assert limit is None or limit >= used


def test_a_project_without_instance_quota_has_a_capacity_of_zero_servers(cloud: CloudUnderTest) -> None:
    with cloud.without_instance_quota(cloud.new_cluster_id()) as driver:
        capacity = driver.capacity()
    assert (capacity.instances_limit, capacity.instances_used) == (0, 0)
    assert capacity.cores_used == 0


# --- identity that heals ------------------------------------------------------------------------------


class OwnExternalNetwork:
    """An external network of the test's own, which it may delete and create again: never the cloud's
    shared ``public``, which other engineers' tests use at the same time."""

    def __init__(self, admin: Any) -> None:
        self.admin = admin
        self.name = f"kaas-test-ext-{uuid.uuid4().hex[:8]}"
        self.id = self._create()

    def _create(self) -> str:
        network = self.admin.network.create_network(name=self.name, is_router_external=True)
        self.admin.network.create_subnet(
            network_id=network.id, ip_version=4, cidr=TEST_EXTERNAL_CIDR, is_dhcp_enabled=False
        )
        return str(network.id)

    def _clear_gateways(self) -> None:
        for router in self.admin.network.routers():
            if (router.external_gateway_info or {}).get("network_id") == self.id:
                self.admin.network.update_router(router, external_gateway_info={})

    def recreate(self) -> str:
        """As an operator rebuilding it: clear the routers' gateways on it, delete it, create it anew."""
        self._clear_gateways()
        self.admin.network.delete_network(self.id)
        self.id = self._create()
        return self.id

    def delete(self) -> None:
        self._clear_gateways()
        self.admin.network.delete_network(self.id, ignore_missing=True)


def gateway_network(cloud: CloudUnderTest, router_id: str) -> str | None:
    info = cloud.admin.network.get_router(router_id).external_gateway_info or {}
    network_id: str | None = info.get("network_id")
    return network_id


def test_an_external_network_recreated_under_a_new_id_is_found_again_by_its_name(
    cloud: CloudUnderTest,
) -> None:
    external = OwnExternalNetwork(cloud.admin)
    old_id = external.id
    first, second = cloud.new_cluster_id(), cloud.new_cluster_id()

    def spec(cluster_id: str) -> NetworkSpec:
        return NetworkSpec(cluster_id=cluster_id, cidr=NODE_CIDR, external_network=external.name)

    try:
        router_id = cloud.driver.ensure_network(spec(first)).router_id  # the driver caches the id now
        assert gateway_network(cloud, router_id) == old_id
        new_id = external.recreate()
        assert new_id != old_id
        assert gateway_network(cloud, router_id) is None
        # the first cluster's next pass gives its router a gateway again, on the network as it is now
        assert cloud.driver.ensure_network(spec(first)).router_id == router_id
        assert gateway_network(cloud, router_id) == new_id
        # and a new cluster's router is created on it
        assert gateway_network(cloud, cloud.driver.ensure_network(spec(second)).router_id) == new_id
    finally:
        cloud.delete_and_check(first)
        cloud.delete_and_check(second)
        external.delete()


def kill_between_create_and_tag(cloud: CloudUnderTest, cluster_id: str, kind: str) -> None:
    """Run the network step in another process that is SIGKILLed just before it tags a ``kind``."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.provider.cloud.killed_worker",
            str(cloud.clouds_yaml),
            cloud.tenant_cloud,
            cluster_id,
            cloud.external_network,
            kind,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode(errors="replace")[-3000:]


def born_untagged(cloud: CloudUnderTest, cluster_id: str, kind: str) -> list[str]:
    """Ids of the cluster's resources of ``kind`` that carry the cluster's mark but not its tag."""
    tag = cluster_tag(cluster_id)
    listing = {
        "network": cloud.admin.network.networks,
        "subnet": cloud.admin.network.subnets,
        "router": cloud.admin.network.routers,
        "security_group": cloud.admin.network.security_groups,
    }[kind]
    return [r.id for r in listing(description=tag) if tag not in (r.tags or [])]


@pytest.mark.parametrize("kind", ["network", "subnet", "router", "security_group"])
def test_a_worker_killed_between_creating_a_resource_and_tagging_it_leaks_nothing(
    cloud: CloudUnderTest, kind: str
) -> None:
    """The kill leaves a resource Neutron did not let us tag in its create request: deletion and the leak
    sweep still find it (by the mark it was born with), and once deleted nothing of the cluster is left,
    whether tagged, marked or only named like it (``CloudUnderTest.leftovers``)."""
    cluster_id = cloud.new_cluster_id()
    try:
        kill_between_create_and_tag(cloud, cluster_id, kind)
        assert len(born_untagged(cloud, cluster_id, kind)) == 1  # the kill fell between the two calls
        assert cluster_id in cloud.driver.list_tagged_cluster_ids()  # the leak sweep sees the cluster
        assert kind in {r.kind for r in cloud.driver.list_cluster_resources(cluster_id)}
    finally:
        cloud.delete_and_check(cluster_id)


def test_the_next_pass_adopts_and_tags_what_a_killed_worker_left_untagged(
    cloud: CloudUnderTest, cluster_id: str
) -> None:
    kill_between_create_and_tag(cloud, cluster_id, "router")
    [orphan] = born_untagged(cloud, cluster_id, "router")
    network, _ = base(cloud.driver, cloud, cluster_id)
    assert network.router_id == orphan
    routers = list(cloud.admin.network.routers(name=f"{resource_prefix(cluster_id)}-router"))
    assert [r.id for r in routers] == [orphan]
    assert cluster_tag(cluster_id) in routers[0].tags
    assert gateway_network(cloud, orphan) == cloud.admin.network.find_network(cloud.external_network).id
    interfaces = list(cloud.admin.network.ports(device_id=orphan, network_id=network.network_id))
    assert [ip["subnet_id"] for p in interfaces for ip in p.fixed_ips] == [network.subnet_id]


def works(driver: OpenStackDriver, flavor: str) -> bool:
    """True when the driver gets through; False while a service still refuses fresh tokens (temporary)."""
    try:
        driver.check_flavor(flavor)
    except CloudTokenRefused:
        return False
    return True


def test_rotated_credentials_are_refused_by_name_until_the_operator_fixes_clouds_yaml(
    cloud: CloudUnderTest,
) -> None:
    rotated = f"rotated-{uuid.uuid4().hex[:12]}"
    with cloud.own_credentials() as own:
        own.driver.check_flavor(cloud.flavor)
        own.set_password_in_cloud(rotated)
        own.expire_token()
        with pytest.raises(CloudCredentialsRefused) as refused:
            own.driver.check_flavor(cloud.flavor)
        message = str(refused.value)
        assert f"credentials of cloud {own.cloud_name!r}" in message
        assert str(own.clouds_yaml) in message
        assert rotated not in message
        with pytest.raises(CloudCredentialsRefused):  # still refused: nothing changed
            own.driver.list_servers(cloud.new_cluster_id())
        own.write_password(rotated)
        # no restart: the driver reconnects with the edited file (a real Keystone may refuse the tokens
        # of the second in which its user changed: the driver reports that as temporary)
        assert eventually(lambda: works(own.driver, cloud.flavor), timeout=30)
        assert own.driver.list_servers(cloud.new_cluster_id()) == []


def _credential_connection(cloud: CloudUnderTest, credential_id: str, secret: str) -> Any:
    """A connection that authenticates with the application credential alone, as the cloud controller does."""
    document = yaml.safe_load(cloud.clouds_yaml.read_text())
    auth_url = document["clouds"][cloud.tenant_cloud]["auth"]["auth_url"]
    return openstack.connection.Connection(
        auth_type="v3applicationcredential",
        auth={
            "auth_url": auth_url,
            "application_credential_id": credential_id,
            "application_credential_secret": secret,
        },
        region_name=document["clouds"][cloud.tenant_cloud].get("region_name", "RegionOne"),
        compute_api_version="2.64",
    )


def test_a_clusters_cloud_credential_is_made_once_works_and_goes_with_the_cluster(
    cloud: CloudUnderTest,
) -> None:
    cluster_id = cloud.new_cluster_id()
    created = cloud.driver.ensure_cloud_credential(cluster_id, known_id=None)
    assert created.secret
    again = cloud.driver.ensure_cloud_credential(cluster_id, known_id=created.id)
    assert again.id == created.id
    assert again.secret is None  # Keystone shows a secret once; kaas stored it the first time
    assert created.secret not in repr(created)
    # the cloud controller's and CSI's view: the credential alone authenticates, in the driver's project
    connection = _credential_connection(cloud, created.id, created.secret)
    try:
        list(connection.compute.servers())
        assert connection.current_project_id == cloud.driver._conn.current_project_id
    finally:
        connection.close()
    assert ("application_credential", created.id) in {
        (r.kind, r.id) for r in cloud.driver.list_cluster_resources(cluster_id)
    }
    assert cluster_id in cloud.driver.list_tagged_cluster_ids()  # the leak sweep sees it
    assert cloud.leftovers(cluster_id) == {"application_credentials": [created.id]}
    cloud.delete_and_check(cluster_id)  # the audit: nothing left, application credentials included
    assert created.id not in {c.id for c in cloud.tenant_credentials()}


def test_a_cloud_credential_whose_secret_was_lost_is_replaced_not_duplicated(cloud: CloudUnderTest) -> None:
    cluster_id = cloud.new_cluster_id()
    try:
        lost = cloud.driver.ensure_cloud_credential(cluster_id, known_id=None)
        # the pass that created it died before its commit: kaas knows no id, and Keystone no longer shows
        # the secret; a new credential replaces it
        fresh = cloud.driver.ensure_cloud_credential(cluster_id, known_id=None)
        assert fresh.id != lost.id
        assert fresh.secret
        ids = {c.id for c in cloud.tenant_credentials() if c.description == cluster_tag(cluster_id)}
        assert ids == {fresh.id}
    finally:
        cloud.delete_and_check(cluster_id)


def test_a_servers_console_is_text_without_a_boot_report_until_its_boot_writes_one(
    cloud: CloudUnderTest, cluster_id: str
) -> None:
    """The reconciler reads a node's boot outcome from its console (``provider.reconciler.boot_report``):
    a server no kaas boot wrote to (simcloud: an empty console; the real cloud's fake virt driver: fixed
    lines) reports nothing; the console of a server gone since it was listed is a temporary error (the
    reconciler reads the next console)."""
    network, groups = base(cloud.driver, cloud, cluster_id)
    server = cloud.driver.create_server(server_spec(cloud, cluster_id, "kaas-t-w-0", network, groups))
    eventually(lambda: all_active(cloud, cluster_id, 1))

    console = cloud.driver.server_console(server.id, lines=40)

    assert isinstance(console, str)
    assert last_outcome(console) is None
    with pytest.raises(CloudTemporaryError, match="could not be found"):
        cloud.driver.server_console("00000000-0000-0000-0000-000000000000", lines=40)


def test_an_upgrades_control_plane_surge_finds_a_host_in_its_generations_group_and_old_groups_go(
    cloud: CloudUnderTest, cluster_id: str
) -> None:
    """A strict anti-affinity group with a member on every host leaves a fourth server no host ("No valid
    host"); the upgrade's replacement goes into a group of its own generation and is placed, and the
    generation before the last, with no member left, is deleted when the next one is made."""
    network, groups = base(cloud.driver, cloud, cluster_id)
    group_id = cloud.driver.ensure_server_group(cluster_id, policy="anti-affinity")
    for index in range(3):
        cloud.driver.create_server(
            server_spec(
                cloud,
                cluster_id,
                f"kaas-t-cp-{index}",
                network,
                groups,
                role="control-plane",
                server_group_id=group_id,
            )
        )
    eventually(lambda: all_active(cloud, cluster_id, 3))
    generation = cloud.driver.ensure_server_group(cluster_id, policy="anti-affinity", generation="1.37.2")
    assert generation != group_id
    assert (
        cloud.driver.ensure_server_group(cluster_id, policy="anti-affinity", generation="1.37.2")
        == generation
    )
    assert cloud.admin.compute.get_server_group(generation).name.endswith("-cp-1-37-2")
    cloud.driver.create_server(
        server_spec(
            cloud,
            cluster_id,
            "kaas-t-cp-0-r2",
            network,
            groups,
            role="control-plane",
            server_group_id=generation,
        )
    )
    servers = eventually(lambda: all_active(cloud, cluster_id, 4))
    assert len(servers) == 4  # placed: a fourth host was not needed
    empty = cloud.driver.ensure_server_group(cluster_id, policy="anti-affinity", generation="1.38.0")
    newest = cloud.driver.ensure_server_group(cluster_id, policy="anti-affinity", generation="1.39.0")
    names = sorted(
        r.name for r in cloud.driver.list_cluster_resources(cluster_id) if r.kind == "server_group"
    )
    assert empty not in {r.id for r in cloud.driver.list_cluster_resources(cluster_id)}
    assert newest in {r.id for r in cloud.driver.list_cluster_resources(cluster_id)}
    assert [n.rsplit("-cp", 1)[1] for n in names] == ["", "-1-37-2", "-1-39-0"]  # the used ones stay
