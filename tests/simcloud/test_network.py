"""Neutron through openstacksdk: networks, subnets, routers with gateway and interfaces, security groups,
tags and the conflicts the real Neutron answers."""

from __future__ import annotations

import pytest
from openstack import exceptions
from openstack.connection import Connection

from simcloud.testing import SimCloudHandle

TAG = "kaas-cluster=c1"


def test_seeded_external_network_is_found_by_name(conn: Connection) -> None:
    public = conn.network.find_network("public")
    assert public is not None
    assert public.is_router_external
    assert conn.network.get_subnet(public.subnet_ids[0]).cidr == "172.24.4.0/24"


def test_network_subnet_router_lifecycle(conn: Connection, cloud: SimCloudHandle) -> None:
    public = conn.network.find_network("public")
    net = conn.network.create_network(name="kaas-c1-net")
    subnet = conn.network.create_subnet(
        network_id=net.id, cidr="10.10.0.0/24", ip_version=4, name="kaas-c1-sub", dns_nameservers=["1.1.1.1"]
    )
    assert subnet.gateway_ip == "10.10.0.1"
    router = conn.network.create_router(
        name="kaas-c1-router", external_gateway_info={"network_id": public.id}
    )
    gateway_ip = router.external_gateway_info["external_fixed_ips"][0]["ip_address"]
    assert gateway_ip.startswith("172.24.4.")
    conn.network.add_interface_to_router(router, subnet=subnet.id)
    interface_ports = list(conn.network.ports(device_id=router.id, device_owner="network:router_interface"))
    assert [p.fixed_ips[0]["ip_address"] for p in interface_ports] == ["10.10.0.1"]

    with pytest.raises(exceptions.ConflictException, match="still in use"):
        conn.network.delete_network(net)
    with pytest.raises(exceptions.ConflictException):
        conn.network.delete_router(router)

    conn.network.remove_interface_from_router(router, subnet=subnet.id)
    conn.network.delete_router(router)
    conn.network.delete_network(net)
    assert conn.network.find_network("kaas-c1-net") is None
    leftovers = cloud.sim.inventory()
    assert leftovers["networks"] == leftovers["subnets"] == leftovers["ports"] == leftovers["routers"] == []


def test_delete_missing_resource_can_be_ignored(conn: Connection) -> None:
    conn.network.delete_network("3b7e1b4c-0000-4000-8000-000000000000", ignore_missing=True)
    with pytest.raises(exceptions.NotFoundException):
        conn.network.delete_network("3b7e1b4c-0000-4000-8000-000000000000", ignore_missing=False)


def test_security_group_with_rules_and_duplicate_rule_conflict(conn: Connection) -> None:
    group = conn.network.create_security_group(name="kaas-c1-cp", description="control plane")
    assert {r["direction"] for r in group.security_group_rules} == {"egress"}
    rule = conn.network.create_security_group_rule(
        security_group_id=group.id,
        direction="ingress",
        protocol="tcp",
        port_range_min=6443,
        port_range_max=6443,
        remote_ip_prefix="0.0.0.0/0",
        ethertype="IPv4",
    )
    with pytest.raises(exceptions.ConflictException, match="already exists"):
        conn.network.create_security_group_rule(
            security_group_id=group.id,
            direction="ingress",
            protocol="tcp",
            port_range_min=6443,
            port_range_max=6443,
            remote_ip_prefix="0.0.0.0/0",
            ethertype="IPv4",
        )
    rules = list(conn.network.security_group_rules(security_group_id=group.id))
    assert rule.id in {r.id for r in rules}
    assert len(rules) == 3
    conn.network.delete_security_group(group)
    assert list(conn.network.security_group_rules(security_group_id=group.id)) == []


def test_tags_set_add_remove_and_filter(conn: Connection) -> None:
    first = conn.network.create_network(name="a")
    second = conn.network.create_network(name="b")
    conn.network.set_tags(first, [TAG, "role=x"])
    conn.network.add_tag(second, TAG)
    assert {n.name for n in conn.network.networks(tags=TAG)} == {"a", "b"}
    assert {n.name for n in conn.network.networks(tags=[TAG, "role=x"])} == {"a"}
    assert {n.name for n in conn.network.networks(any_tags=["role=x", "nope"])} == {"a"}
    conn.network.remove_tag(first, "role=x")
    assert conn.network.get_network(first.id).tags == [TAG]
    assert list(conn.network.networks(tags="role=x")) == []


def test_tenant_does_not_see_other_projects_networks(conn: Connection, admin_conn: Connection) -> None:
    admin_conn.network.create_network(name="admin-only")
    assert conn.network.find_network("admin-only") is None
    assert admin_conn.network.find_network("admin-only") is not None


def test_overlapping_subnet_is_refused(conn: Connection) -> None:
    net = conn.network.create_network(name="n")
    conn.network.create_subnet(network_id=net.id, cidr="10.0.0.0/24", ip_version=4)
    with pytest.raises(exceptions.BadRequestException, match="overlaps"):
        conn.network.create_subnet(network_id=net.id, cidr="10.0.0.0/16", ip_version=4)


def test_the_external_network_runs_out_of_addresses_like_the_real_one_unless_made_larger() -> None:
    from simcloud.state import SimCloud, external_pool

    assert external_pool("172.24.4.0/24") == ("172.24.4.10", "172.24.4.250")  # as ../shared/openstack
    assert external_pool("172.24.0.0/16") == ("172.24.0.10", "172.24.255.250")
    sim = SimCloud(external_cidr="10.200.0.0/16")
    public = [n for n in sim.tables["networks"].values() if n["router:external"]]
    assert len(public) == 1
    subnets = [s for s in sim.tables["subnets"].values() if s["network_id"] == public[0]["id"]]
    assert [s["cidr"] for s in subnets] == ["10.200.0.0/16"]
    with pytest.raises(ValueError, match="too small"):
        SimCloud(external_cidr="10.0.0.0/29")


def test_only_ports_take_tags_in_their_create_request_as_in_neutron(conn: Connection) -> None:
    net = conn.network.create_network(name="n")
    subnet_args = {"network_id": net.id, "cidr": "10.0.0.0/24", "ip_version": 4}
    for create, args in (
        (conn.network.create_network, {"name": "m"}),
        (conn.network.create_subnet, subnet_args),
        (conn.network.create_router, {"name": "r"}),
        (conn.network.create_security_group, {"name": "g"}),
    ):
        with pytest.raises(exceptions.BadRequestException, match="Attribute 'tags' not allowed in POST"):
            create(**args, tags=[TAG])
    assert [n.name for n in conn.network.networks(tags=TAG)] == []
    conn.network.create_subnet(**subnet_args)
    port = conn.network.create_port(network_id=net.id, tags=[TAG])
    assert conn.network.get_port(port.id).tags == [TAG]


def test_a_recreated_external_network_has_a_new_id_the_same_addresses_and_no_gateways(
    conn: Connection, cloud: SimCloudHandle
) -> None:
    old = conn.network.find_network("public")
    router = conn.network.create_router(name="r", external_gateway_info={"network_id": old.id})
    new_id = cloud.sim.recreate_external_network("public")
    assert new_id != old.id
    assert conn.network.find_network(old.id) is None
    new = conn.network.find_network("public")
    assert (new.id, new.is_router_external) == (new_id, True)
    assert conn.network.get_subnet(new.subnet_ids[0]).cidr == "172.24.4.0/24"
    assert conn.network.get_router(router.id).external_gateway_info is None
    assert cloud.sim.inventory()["networks"] == []  # still part of the seed, as the one it replaces
    conn.network.update_router(router, external_gateway_info={"network_id": new_id})
    assert conn.network.get_router(router.id).external_gateway_info["network_id"] == new_id
