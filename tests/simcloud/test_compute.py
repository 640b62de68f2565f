"""Nova through openstacksdk: flavors, servers (BUILD → ACTIVE, tags, user_data, addresses), server groups and
the scheduler, quotas and injected failures, limits, and the server listeners."""

from __future__ import annotations

import base64
import threading
import time

import pytest
from openstack import exceptions
from openstack.connection import Connection

from simcloud.state import ServerRecord
from simcloud.testing import SimCloudHandle

TAG = "kaas-cluster=c1"


def _network(conn: Connection) -> str:
    net = conn.network.create_network(name="kaas-c1-net")
    conn.network.create_subnet(network_id=net.id, cidr="10.20.0.0/24", ip_version=4)
    return str(net.id)


def _boot(conn: Connection, network_id: str, name: str, **extra: object) -> object:
    image = conn.image.find_image("ubuntu-22.04")
    return conn.compute.create_server(
        name=name,
        flavor_id=conn.compute.find_flavor("m1.small").id,
        image_id=image.id,
        networks=[{"uuid": network_id}],
        **extra,
    )


def test_seeded_flavors_match_the_real_harness(conn: Connection) -> None:
    flavors = {f.name: (f.id, f.vcpus, f.ram) for f in conn.compute.flavors()}
    assert flavors == {
        "m1.tiny": ("1", 1, 512),
        "m1.small": ("2", 1, 2048),
        "m1.medium": ("3", 2, 4096),
        "m1.large": ("4", 4, 8192),
    }
    assert conn.compute.find_flavor("m1.large").vcpus == 4
    assert conn.compute.find_flavor("m9.nope") is None


def test_seeded_images_are_found_by_name(conn: Connection) -> None:
    assert conn.image.find_image("ubuntu-22.04") is not None
    assert conn.image.find_image("fake-image") is not None
    assert conn.image.find_image("nope") is None


def test_server_builds_then_goes_active_with_tags_and_user_data(
    conn: Connection, admin_conn: Connection, cloud: SimCloudHandle
) -> None:
    cloud.sim.set_boot_delay(0.3)
    network_id = _network(conn)
    user_data = "#cloud-config\nruncmd: [echo hi]\n"
    server = _boot(
        conn,
        network_id,
        "kaas-c1-cp-0",
        tags=[TAG],
        metadata={"role": "control-plane"},
        user_data=base64.b64encode(user_data.encode()).decode(),
    )
    assert conn.compute.get_server(server.id).status == "BUILD"
    server = conn.compute.wait_for_server(server, status="ACTIVE", wait=10, interval=0.1)
    assert server.tags == [TAG]
    assert server.metadata == {"role": "control-plane"}
    assert server.addresses["kaas-c1-net"][0]["addr"].startswith("10.20.0.")
    seen_by_admin = admin_conn.compute.get_server(server.id)
    assert base64.b64decode(seen_by_admin.user_data).decode() == user_data
    assert seen_by_admin.compute_host in cloud.sim.hosts
    assert conn.compute.get_server(server.id).user_data is None
    assert cloud.sim.get_user_data(server.id) == user_data


def test_server_list_filters_by_tag_and_name(conn: Connection) -> None:
    network_id = _network(conn)
    _boot(conn, network_id, "kaas-c1-w-0", tags=[TAG, "pool=a"])
    _boot(conn, network_id, "kaas-c1-w-1", tags=[TAG])
    _boot(conn, network_id, "other", tags=["kaas-cluster=c2"])
    assert {s.name for s in conn.compute.servers(tags=TAG)} == {"kaas-c1-w-0", "kaas-c1-w-1"}
    assert {s.name for s in conn.compute.servers(tags=f"{TAG},pool=a")} == {"kaas-c1-w-0"}
    assert {s.name for s in conn.compute.servers(name="^other$")} == {"other"}


def test_admin_lists_all_projects_only_when_asked(conn: Connection, admin_conn: Connection) -> None:
    _boot(conn, _network(conn), "tenant-server")
    assert list(admin_conn.compute.servers()) == []
    assert [s.name for s in admin_conn.compute.servers(all_projects=True)] == ["tenant-server"]


def test_server_tag_endpoints(conn: Connection) -> None:
    server = conn.compute.get_server(_boot(conn, _network(conn), "s", tags=["a"]).id)
    server.add_tag(conn.compute, "b")
    server.remove_tag(conn.compute, "a")
    assert conn.compute.get_server(server.id).tags == ["b"]
    server.set_tags(conn.compute, ["x", "y"])
    assert sorted(conn.compute.get_server(server.id).tags) == ["x", "y"]


def test_server_metadata_is_updated_item_by_item_and_deleted_by_key(
    conn: Connection, admin_conn: Connection
) -> None:
    """Nova's ``POST /servers/{id}/metadata`` merges; ``DELETE .../metadata/{key}`` removes one item (the way
    a test in another process tells nodesim to hold a node NotReady: ``nodesim.faults``)."""
    server = conn.compute.get_server(_boot(conn, _network(conn), "s", metadata={"kaas-role": "worker"}).id)
    admin_conn.compute.set_server_metadata(server, **{"kaas-sim-fault": "not-ready"})
    assert conn.compute.get_server(server.id).metadata == {
        "kaas-role": "worker",
        "kaas-sim-fault": "not-ready",
    }
    admin_conn.compute.delete_server_metadata(server, ["kaas-sim-fault"])
    assert conn.compute.get_server(server.id).metadata == {"kaas-role": "worker"}
    with pytest.raises(exceptions.NotFoundException):
        conn.compute.delete_server_metadata(server, ["kaas-sim-fault"])


def test_deleted_server_goes_away_and_frees_its_port(conn: Connection, cloud: SimCloudHandle) -> None:
    server = _boot(conn, _network(conn), "s")
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, wait=10, interval=0.1)
    assert cloud.sim.inventory()["ports"] == []


def test_strict_anti_affinity_spreads_and_fourth_member_fails(
    conn: Connection, admin_conn: Connection
) -> None:
    network_id = _network(conn)
    group = conn.compute.create_server_group(name="kaas-c1-cp", policy="anti-affinity")
    servers = [_boot(conn, network_id, f"cp-{i}", scheduler_hints={"group": group.id}) for i in range(4)]
    active = [conn.compute.wait_for_server(s, wait=10, interval=0.1) for s in servers[:3]]
    hosts = {admin_conn.compute.get_server(s.id).compute_host for s in active}
    assert len(hosts) == 3
    with pytest.raises(exceptions.ResourceFailure):
        conn.compute.wait_for_server(servers[3], wait=10, interval=0.1)
    failed = conn.compute.get_server(servers[3].id)
    assert failed.status == "ERROR"
    assert "No valid host was found" in failed.fault["message"]
    assert set(conn.compute.get_server_group(group.id).member_ids) == {s.id for s in servers}


def test_soft_anti_affinity_accepts_more_members_than_hosts(conn: Connection) -> None:
    network_id = _network(conn)
    group = conn.compute.create_server_group(name="g", policy="soft-anti-affinity")
    servers = [_boot(conn, network_id, f"s{i}", scheduler_hints={"group": group.id}) for i in range(4)]
    for server in servers:
        assert conn.compute.wait_for_server(server, wait=10, interval=0.1).status == "ACTIVE"
    conn.compute.delete_server_group(group)
    assert conn.compute.find_server_group("g") is None


def test_injected_quota_failure_answers_novas_403(conn: Connection, cloud: SimCloudHandle) -> None:
    network_id = _network(conn)
    cloud.sim.fail_next_server_creates(1)
    with pytest.raises(exceptions.ForbiddenException, match="Quota exceeded for instances"):
        _boot(conn, network_id, "s0")
    _boot(conn, network_id, "s1")


def test_project_quota_limits_instances(conn: Connection, cloud: SimCloudHandle) -> None:
    network_id = _network(conn)
    cloud.sim.set_quota("demo", instances=1)
    _boot(conn, network_id, "s0")
    with pytest.raises(exceptions.ForbiddenException, match="Requested 1, but already used 1 of 1 instances"):
        _boot(conn, network_id, "s1")
    limits = conn.compute.get_limits().absolute
    assert (limits.instances, limits.instances_used, limits.total_cores_used) == (1, 1, 1)


def test_injected_error_puts_server_in_error_with_fault(conn: Connection, cloud: SimCloudHandle) -> None:
    cloud.sim.error_next_servers(1, "hypervisor on fire")
    server = _boot(conn, _network(conn), "s")
    with pytest.raises(exceptions.ResourceFailure):
        conn.compute.wait_for_server(server, wait=10, interval=0.1)
    assert conn.compute.get_server(server.id).fault["message"] == "hypervisor on fire"


def test_listeners_fire_without_polling(conn: Connection, cloud: SimCloudHandle) -> None:
    cloud.sim.set_boot_delay(0.2)
    activated: list[ServerRecord] = []
    deleted: list[ServerRecord] = []
    got_active = threading.Event()
    got_deleted = threading.Event()
    cloud.sim.add_server_active_listener(lambda r: (activated.append(r), got_active.set()))
    cloud.sim.add_server_deleted_listener(lambda r: (deleted.append(r), got_deleted.set()))
    user_data = base64.b64encode(b"agent-config").decode()
    server = _boot(conn, _network(conn), "s", tags=[TAG], user_data=user_data)
    assert got_active.wait(5)
    assert activated[0].id == server.id
    assert activated[0].user_data == "agent-config"
    assert activated[0].tags == (TAG,)
    assert activated[0].addresses
    assert cloud.sim.delete_server(server.id)
    assert got_deleted.wait(5)
    assert deleted[0].id == server.id
    with pytest.raises(exceptions.NotFoundException):
        conn.compute.get_server(server.id)


def test_boot_delay_is_honoured(conn: Connection, cloud: SimCloudHandle) -> None:
    cloud.sim.set_boot_delay(0.5)
    started = time.monotonic()
    server = _boot(conn, _network(conn), "s")
    conn.compute.wait_for_server(server, wait=10, interval=0.05)
    assert time.monotonic() - started >= 0.5
