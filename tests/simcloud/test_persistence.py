"""A persisted simulated cloud started again is the same cloud: same servers, networks, load balancers,
addresses, tokens and port; unfinished transitions finish after the restart."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
from openstack.connection import Connection

from simcloud.state import SimCloud
from simcloud.testing import run_simcloud
from tests.conftest import ROOT
from tests.simcloud.conftest import connect


def build(conn: Connection) -> dict[str, str]:
    network = conn.network.create_network(name="kaas-p-net")  # Neutron takes no tags in a network's POST
    conn.network.set_tags(network, ["kaas-cluster=p"])
    subnet = conn.network.create_subnet(network_id=network.id, cidr="10.30.0.0/24", ip_version=4)
    router = conn.network.create_router(name="kaas-p-router")
    conn.network.add_interface_to_router(router, subnet=subnet.id)
    image = conn.image.find_image("ubuntu-22.04")
    server = conn.compute.create_server(
        name="kaas-p-cp-0",
        flavor_id=conn.compute.find_flavor("m1.small").id,
        image_id=image.id,
        networks=[{"uuid": network.id}],
        tags=["kaas-cluster=p"],
        user_data="I2Nsb3VkLWNvbmZpZwo=",
    )
    conn.compute.wait_for_server(server, status="ACTIVE", wait=10, interval=0.05)
    lb = conn.load_balancer.create_load_balancer(name="kaas-p-lb", vip_subnet_id=subnet.id)
    return {"network": network.id, "subnet": subnet.id, "router": router.id, "server": server.id, "lb": lb.id}


def test_a_restarted_cloud_has_the_same_resources_at_the_same_address(tmp_path: Path) -> None:
    with run_simcloud(state_dir=tmp_path, persist=True) as first:
        conn = connect(first, first.cloud_name)
        made = build(conn)
        before = {kind: sorted(r["id"] for r in records) for kind, records in first.sim.inventory().items()}
        address = conn.compute.get_server(made["server"]).addresses
        token = conn.session.get_token()
        conn.close()
        url = first.base_url
    with run_simcloud(state_dir=tmp_path, persist=True) as second:
        assert second.base_url == url
        after = {kind: sorted(r["id"] for r in records) for kind, records in second.sim.inventory().items()}
        assert after == before
        conn = connect(second, second.cloud_name)
        server = conn.compute.get_server(made["server"])
        assert (server.name, server.status, server.addresses) == ("kaas-p-cp-0", "ACTIVE", address)
        assert [n.name for n in conn.network.networks(tags=["kaas-cluster=p"])] == ["kaas-p-net"]
        # a token issued before the restart still works (clients do not all re-authenticate at once)
        still = httpx.get(
            f"{second.base_url}/compute/v2.1/servers/{made['server']}", headers={"X-Auth-Token": token}
        )
        assert still.status_code == 200
        # new addresses do not collide with the ones handed out before
        port = conn.network.create_port(network_id=made["network"])
        used = {ip["addr"] for ips in address.values() for ip in ips}
        assert port.fixed_ips[0]["ip_address"] not in used
        conn.close()


def test_a_transition_under_way_finishes_after_the_restart(tmp_path: Path) -> None:
    with run_simcloud(state_dir=tmp_path, persist=True, boot_delay=0.5, lb_delay=0.5) as first:
        conn = connect(first, first.cloud_name)
        network = conn.network.create_network(name="n")
        conn.network.create_subnet(network_id=network.id, cidr="10.40.0.0/24", ip_version=4)
        server = conn.compute.create_server(
            name="booting",
            flavor_id=conn.compute.find_flavor("m1.small").id,
            image_id=conn.image.find_image("ubuntu-22.04").id,
            networks=[{"uuid": network.id}],
        )
        assert conn.compute.get_server(server.id).status == "BUILD"
        conn.close()
    with run_simcloud(state_dir=tmp_path, persist=True, boot_delay=0.5) as second:
        conn = connect(second, second.cloud_name)
        assert conn.compute.get_server(server.id).status in ("BUILD", "ACTIVE")
        booting = conn.compute.get_server(server.id)
        conn.compute.wait_for_server(booting, status="ACTIVE", wait=10, interval=0.05)
        conn.close()


def test_the_snapshot_is_private_and_written_only_after_a_change(tmp_path: Path) -> None:
    state_file = tmp_path / "cloud.json"
    sim = SimCloud(state_file=state_file, save_interval=0.0)
    sim.save()
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    written = state_file.stat().st_mtime_ns
    time.sleep(0.01)
    sim.save()
    assert state_file.stat().st_mtime_ns == written  # nothing changed, nothing written
    sim.set_quota("demo", instances=3)
    sim.save()
    assert state_file.stat().st_mtime_ns != written
    assert SimCloud(state_file=state_file).quotas[sim.projects["demo"]].instances == 3


def test_without_persist_every_start_is_a_fresh_cloud(tmp_path: Path) -> None:
    with run_simcloud(state_dir=tmp_path) as first:
        conn = connect(first, first.cloud_name)
        conn.network.create_network(name="gone-after-restart")
        conn.close()
    with run_simcloud(state_dir=tmp_path) as second:
        conn = connect(second, second.cloud_name)
        assert [n.name for n in conn.network.networks(name="gone-after-restart")] == []
        conn.close()


def test_a_durable_cloud_killed_with_sigkill_keeps_every_change_it_answered(tmp_path: Path) -> None:
    """``python -m simcloud --persist --durable``: what it confirmed is on disk before the answer."""
    port = free_port()

    def start() -> subprocess.Popen[bytes]:
        options = ["--persist", "--durable", "--boot-delay", "3600"]
        process = subprocess.Popen(
            [sys.executable, "-m", "simcloud", "--port", str(port), "--state-dir", str(tmp_path), *options],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/identity/v3", timeout=1).status_code == 200:
                    return process
            except httpx.HTTPError:
                time.sleep(0.05)
        process.kill()
        raise AssertionError("python -m simcloud did not answer")

    first = start()
    try:
        token = issue_token(port)
        created = httpx.post(
            f"http://127.0.0.1:{port}/network/v2.0/networks",
            headers={"X-Auth-Token": token},
            json={"network": {"name": "kaas-durable-net"}},
        )
        assert created.status_code == 201
    finally:
        first.send_signal(signal.SIGKILL)  # at once: no snapshot of the ticker's has been written since
        first.wait()
    second = start()
    try:
        listed = httpx.get(
            f"http://127.0.0.1:{port}/network/v2.0/networks",
            headers={"X-Auth-Token": token},
            params={"name": "kaas-durable-net"},
        )
        assert [n["id"] for n in listed.json()["networks"]] == [created.json()["network"]["id"]]
    finally:
        second.terminate()
        second.wait(20)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def issue_token(port: int) -> str:
    response = httpx.post(
        f"http://127.0.0.1:{port}/identity/v3/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": "demo", "domain": {"name": "Default"}, "password": "secret"}
                    },
                },
                "scope": {"project": {"name": "demo", "domain": {"name": "Default"}}},
            }
        },
    )
    assert response.status_code == 201, response.text
    return response.headers["X-Subject-Token"]
