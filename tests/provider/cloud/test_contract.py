"""The cloud driver contract: the same tests against the simulated cloud and the real OpenStack.

If simcloud drifts from OpenStack, one half of a test here fails. Every test deletes what it created and
proves that nothing tagged with its cluster is left.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from provider.cloud.driver import (
    LoadBalancerInfo,
    LoadBalancerSpec,
    NetworkInfo,
    NetworkSpec,
    SecurityGroupsInfo,
    ServerInfo,
    ServerSpec,
    cluster_tag,
)
from provider.cloud.errors import CloudNotFound, CloudQuotaExceeded
from tests.provider.cloud.conftest import CloudUnderTest

T = TypeVar("T")
USER_DATA = "#cloud-config\nwrite_files:\n  - path: /etc/kaas/marker\n    content: contract\n"


def eventually(probe: Callable[[], T | None], *, timeout: float = 90, interval: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"condition not reached within {timeout}s")


@pytest.fixture
def cluster_id(cloud: CloudUnderTest) -> Iterator[str]:
    cid = cloud.new_cluster_id()
    yield cid
    eventually(lambda: cloud.driver.delete_cluster_resources(cid) == [], timeout=120)


def base(cloud: CloudUnderTest, cluster_id: str) -> tuple[NetworkInfo, SecurityGroupsInfo]:
    network = cloud.driver.ensure_network(
        NetworkSpec(cluster_id=cluster_id, cidr="10.20.0.0/24", external_network=cloud.external_network)
    )
    groups = cloud.driver.ensure_security_groups(cluster_id, node_cidr="10.20.0.0/24")
    return network, groups


def server_spec(
    cloud: CloudUnderTest,
    cluster_id: str,
    name: str,
    network: NetworkInfo,
    groups: SecurityGroupsInfo,
    **extra: str,
) -> ServerSpec:
    return ServerSpec(
        cluster_id=cluster_id,
        name=name,
        role=extra.get("role", "worker"),
        flavor=extra.get("flavor", cloud.flavor),
        image=cloud.image,
        network_id=network.network_id,
        security_group_ids=(groups.nodes_id,),
        user_data=USER_DATA,
        server_group_id=extra.get("server_group_id"),
    )


def all_active(cloud: CloudUnderTest, cluster_id: str, count: int) -> list[ServerInfo] | None:
    servers = cloud.driver.list_servers(cluster_id)
    return servers if len(servers) == count and all(s.status == "ACTIVE" for s in servers) else None


def test_cluster_resources_are_created_tagged_and_visible_to_the_admin(
    cloud: CloudUnderTest, cluster_id: str
) -> None:
    network, groups = base(cloud, cluster_id)
    cloud.driver.create_server(
        server_spec(cloud, cluster_id, "kaas-t-cp-0", network, groups, role="control-plane")
    )
    cloud.driver.create_server(server_spec(cloud, cluster_id, "kaas-t-w-0", network, groups))
    servers = eventually(lambda: all_active(cloud, cluster_id, 2))
    assert all(s.address for s in servers)

    tag = cluster_tag(cluster_id)
    admin_servers = list(cloud.admin.compute.servers(all_projects=True, tags=tag))
    assert sorted(s.name for s in admin_servers) == ["kaas-t-cp-0", "kaas-t-w-0"]
    assert [n.id for n in cloud.admin.network.networks(tags=tag)] == [network.network_id]
    assert [s.id for s in cloud.admin.network.subnets(tags=tag)] == [network.subnet_id]
    assert [r.id for r in cloud.admin.network.routers(tags=tag)] == [network.router_id]
    assert sorted(g.id for g in cloud.admin.network.security_groups(tags=tag)) == sorted(
        [groups.control_plane_id, groups.nodes_id]
    )
    for server in admin_servers:
        assert tag in cloud.admin.compute.get_server(server.id).tags


def test_the_admin_reads_back_the_user_data_the_server_was_given(
    cloud: CloudUnderTest, cluster_id: str
) -> None:
    network, groups = base(cloud, cluster_id)
    created = cloud.driver.create_server(server_spec(cloud, cluster_id, "kaas-t-w-0", network, groups))
    import base64

    server = cloud.admin.compute.get_server(created.id)
    assert base64.b64decode(server.user_data).decode() == USER_DATA


def test_every_ensure_is_idempotent(cloud: CloudUnderTest, cluster_id: str) -> None:
    first_network, first_groups = base(cloud, cluster_id)
    second_network, second_groups = base(cloud, cluster_id)
    assert (first_network, first_groups) == (second_network, second_groups)
    assert cloud.driver.ensure_server_group(
        cluster_id, policy="anti-affinity"
    ) == cloud.driver.ensure_server_group(cluster_id, policy="anti-affinity")
    spec = server_spec(cloud, cluster_id, "kaas-t-w-0", first_network, first_groups)
    assert cloud.driver.create_server(spec).id == cloud.driver.create_server(spec).id
    assert len(cloud.driver.list_servers(cluster_id)) == 1
    kinds = [r.kind for r in cloud.driver.list_cluster_resources(cluster_id)]
    assert sorted(kinds) == sorted(
        ["network", "subnet", "router", "security_group", "security_group", "server_group", "server"]
    )


def test_three_control_plane_servers_spread_over_three_hosts_behind_a_load_balancer(
    cloud: CloudUnderTest, cluster_id: str
) -> None:
    network, groups = base(cloud, cluster_id)
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
    servers = eventually(lambda: all_active(cloud, cluster_id, 3))
    hosts = {cloud.admin.compute.get_server(s.id).compute_host for s in servers}
    assert len(hosts) == 3

    spec = LoadBalancerSpec(cluster_id=cluster_id, subnet_id=network.subnet_id)

    def pool_ready() -> LoadBalancerInfo | None:
        lb = cloud.driver.ensure_load_balancer(spec)
        return lb if lb.pool_id and lb.provisioning_status == "ACTIVE" else None

    lb = eventually(pool_ready)
    addresses = sorted(s.address for s in servers if s.address)
    eventually(
        lambda: cloud.driver.ensure_lb_members(
            lb, subnet_id=network.subnet_id, addresses=addresses, port=6443
        )
    )
    assert lb.pool_id is not None
    members = sorted(m.address for m in cloud.admin.load_balancer.members(lb.pool_id))
    assert members == addresses
    listeners = list(cloud.admin.load_balancer.get_load_balancer(lb.id).listeners)
    assert len(listeners) == 1
    assert cluster_tag(cluster_id) in cloud.admin.load_balancer.get_load_balancer(lb.id).tags


def test_deleting_leaves_nothing_tagged_in_any_service(cloud: CloudUnderTest) -> None:
    cluster_id = cloud.new_cluster_id()
    network, groups = base(cloud, cluster_id)
    cloud.driver.ensure_server_group(cluster_id, policy="anti-affinity")
    cloud.driver.create_server(server_spec(cloud, cluster_id, "kaas-t-w-0", network, groups))
    eventually(
        lambda: (
            cloud.driver.ensure_load_balancer(
                LoadBalancerSpec(cluster_id=cluster_id, subnet_id=network.subnet_id)
            ).pool_id
        )
    )

    eventually(lambda: cloud.driver.delete_cluster_resources(cluster_id) == [], timeout=120)

    tag = cluster_tag(cluster_id)
    assert cloud.driver.list_cluster_resources(cluster_id) == []
    assert list(cloud.admin.compute.servers(all_projects=True, tags=tag)) == []
    assert list(cloud.admin.network.networks(tags=tag)) == []
    assert list(cloud.admin.network.routers(tags=tag)) == []
    assert list(cloud.admin.network.security_groups(tags=tag)) == []
    assert [
        lb for lb in cloud.admin.load_balancer.load_balancers(tags=tag) if lb.provisioning_status != "DELETED"
    ] == []
    assert cluster_id not in cloud.driver.list_tagged_cluster_ids()


def test_deleting_twice_or_what_never_existed_is_not_an_error(cloud: CloudUnderTest) -> None:
    cluster_id = cloud.new_cluster_id()
    assert cloud.driver.delete_cluster_resources(cluster_id) == []
    assert cloud.driver.delete_cluster_resources(cluster_id) == []
    cloud.driver.delete_server("00000000-0000-0000-0000-000000000000")


def test_an_unknown_flavor_is_a_clear_permanent_error(cloud: CloudUnderTest, cluster_id: str) -> None:
    network, groups = base(cloud, cluster_id)
    with pytest.raises(CloudNotFound, match="flavor 'no-such-flavor' does not exist"):
        cloud.driver.create_server(
            server_spec(cloud, cluster_id, "kaas-t-w-0", network, groups, flavor="no-such-flavor")
        )
    with pytest.raises(CloudNotFound, match="image"):
        cloud.driver.check_image("no-such-image")


def test_an_exhausted_quota_is_a_quota_error(cloud: CloudUnderTest, cluster_id: str) -> None:
    network, groups = base(cloud, cluster_id)
    with cloud.exhaust_instance_quota(), pytest.raises(CloudQuotaExceeded, match=r"(?i)quota"):
        cloud.driver.create_server(server_spec(cloud, cluster_id, "kaas-t-w-0", network, groups))
    assert cloud.driver.list_servers(cluster_id) == []


def test_the_sweep_finds_clusters_by_their_tags(cloud: CloudUnderTest, cluster_id: str) -> None:
    network, groups = base(cloud, cluster_id)
    cloud.driver.create_server(server_spec(cloud, cluster_id, "kaas-t-w-0", network, groups))
    assert cluster_id in cloud.driver.list_tagged_cluster_ids()
