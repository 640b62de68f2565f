"""Octavia through openstacksdk: load balancer with VIP, listener, pool, member, health monitor; PENDING_*
immutability; cascade delete."""

from __future__ import annotations

import pytest
from openstack import exceptions
from openstack.connection import Connection

from simcloud.testing import SimCloudHandle

TAG = "kaas-cluster=c1"


def _subnet(conn: Connection) -> str:
    net = conn.network.create_network(name="kaas-c1-net")
    return str(conn.network.create_subnet(network_id=net.id, cidr="10.30.0.0/24", ip_version=4).id)


def _wait(conn: Connection, lb_id: str) -> None:
    conn.load_balancer.wait_for_load_balancer(lb_id, wait=10, interval=0.05)


def test_load_balancer_lifecycle_with_cascade_delete(conn: Connection, cloud: SimCloudHandle) -> None:
    subnet_id = _subnet(conn)
    lb = conn.load_balancer.create_load_balancer(name="kaas-c1-api", vip_subnet_id=subnet_id, tags=[TAG])
    assert lb.provisioning_status == "PENDING_CREATE"
    assert lb.vip_address.startswith("10.30.0.")
    vip_port = conn.network.get_port(lb.vip_port_id)
    assert vip_port.fixed_ips[0]["ip_address"] == lb.vip_address
    _wait(conn, lb.id)
    listener = conn.load_balancer.create_listener(loadbalancer_id=lb.id, protocol="TCP", protocol_port=6443)
    _wait(conn, lb.id)
    pool = conn.load_balancer.create_pool(listener_id=listener.id, protocol="TCP", lb_algorithm="ROUND_ROBIN")
    _wait(conn, lb.id)
    conn.load_balancer.create_health_monitor(pool_id=pool.id, type="TCP", delay=5, timeout=3, max_retries=3)
    _wait(conn, lb.id)
    member = conn.load_balancer.create_member(
        pool, address="10.30.0.50", protocol_port=6443, subnet_id=subnet_id
    )
    _wait(conn, lb.id)
    assert [m.address for m in conn.load_balancer.members(pool)] == ["10.30.0.50"]
    assert conn.load_balancer.get_pool(pool.id).health_monitor_id
    assert [x.id for x in conn.load_balancer.load_balancers(tags=TAG)] == [lb.id]
    assert conn.load_balancer.get_listener(listener.id).default_pool_id == pool.id

    conn.load_balancer.delete_member(member, pool)
    _wait(conn, lb.id)
    assert list(conn.load_balancer.members(pool)) == []
    with pytest.raises(exceptions.BadRequestException, match="it has children"):
        conn.load_balancer.delete_load_balancer(lb.id)
    conn.load_balancer.delete_load_balancer(lb.id, cascade=True)
    conn.load_balancer.wait_for_delete(lb, wait=10, interval=0.05)
    left = cloud.sim.inventory()
    assert left["loadbalancers"] == left["listeners"] == left["pools"] == left["healthmonitors"] == []
    assert left["ports"] == []


def test_pending_load_balancer_is_immutable(conn: Connection, cloud: SimCloudHandle) -> None:
    cloud.sim.set_lb_delay(0.5)
    lb = conn.load_balancer.create_load_balancer(name="lb", vip_subnet_id=_subnet(conn))
    with pytest.raises(exceptions.ConflictException, match="is immutable"):
        conn.load_balancer.create_listener(loadbalancer_id=lb.id, protocol="TCP", protocol_port=6443)
    _wait(conn, lb.id)
    assert conn.load_balancer.get_load_balancer(lb.id).provisioning_status == "ACTIVE"
    conn.load_balancer.create_listener(loadbalancer_id=lb.id, protocol="TCP", protocol_port=6443)
    assert conn.load_balancer.get_load_balancer(lb.id).provisioning_status == "PENDING_UPDATE"
    _wait(conn, lb.id)
    with pytest.raises(exceptions.ConflictException, match="protocol_port 6443"):
        conn.load_balancer.create_listener(loadbalancer_id=lb.id, protocol="TCP", protocol_port=6443)


def test_unknown_load_balancer_is_404(conn: Connection) -> None:
    with pytest.raises(exceptions.NotFoundException):
        conn.load_balancer.get_load_balancer("6a1e2b3c-0000-4000-8000-000000000000")
