"""A real cluster runs one kube-apiserver per ACTIVE control-plane server, at that server's version, behind
its loopback balancer (nodesim's Octavia VIP); replacing a control-plane server as kaas's rolling upgrade does
loses no request of the agent's; and the fault hook holds Nodes NotReady.

simcloud over HTTP, servers created as kaas's driver creates them (user-data rendered by kaas), the real
programs of both pinned releases (``tests.kube_targets``). The probe reads through the agent's own
forwarder (``agents.forward``), which sends a GET once more on a keep-alive connection a stopping apiserver
closed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from agents.forward import ApiserverForwarder, ForwardError
from agents.kube import kubeconfig_connection
from nodesim.booter import NodeBooter
from nodesim.control_planes import RealClusterControlPlane
from nodesim.faults import ServerFacts
from simcloud.testing import SimCloudHandle
from tests.kube_targets import NEWEST, OLDEST, control_plane_slots, release_dir, releases
from tests.nodesim.conftest import (
    RecordingRunner,
    create_kaas_server,
    kaas_user_data,
    new_cluster_id,
    wait_until,
)
from tests.nodesim.test_booter_real import boot, make_booter, minor_version, nodes_by_name, ready_of

pytestmark = pytest.mark.kube_real

CONTROLLER_MANAGER_LEASE = (
    "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager")


@dataclass
class Probe:
    """Threads of GETs through the agent's forwarder, counted."""

    kubeconfig: Path
    workers: int = 4
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    async def _run(self) -> None:
        connection = kubeconfig_connection(self.kubeconfig)
        async with ApiserverForwarder(connection, read_timeout_seconds=20) as forwarder:
            await asyncio.gather(*(self._worker(forwarder) for _ in range(self.workers)))

    async def _worker(self, forwarder: ApiserverForwarder) -> None:
        while not self._stop.is_set():
            try:
                await forwarder.get_json("/api/v1/nodes")
            except ForwardError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            else:
                self.ok += 1
            await asyncio.sleep(0.01)


def real_control_plane(booter: NodeBooter, cluster_id: str) -> RealClusterControlPlane:
    control_plane = booter.control_plane_for(cluster_id)
    assert isinstance(control_plane, RealClusterControlPlane)
    return control_plane


def admin(control_plane: RealClusterControlPlane, *, url: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=url or control_plane.url,
                        verify=control_plane.control_plane.admin_ssl_context(), timeout=10)


def holder(client: httpx.Client) -> str:
    return str(client.get(CONTROLLER_MANAGER_LEASE).json()["spec"]["holderIdentity"])


def versions_of(booter: NodeBooter, cluster_id: str) -> tuple[str, ...]:
    info = booter.clusters().get(cluster_id)
    return info.apiserver_versions if info else ()


def control_plane_server(tenant: Any, cluster_id: str, name: str, version: str, *, initializes: bool) -> Any:
    user_data = kaas_user_data(cluster_id=cluster_id, node_name=name, role="control-plane",
                               kubernetes_version=minor_version(version), initializes=initializes)
    return create_kaas_server(tenant, cluster_id=cluster_id, name=name, role="control-plane",
                              user_data=user_data)


@pytest.fixture
def runner() -> RecordingRunner:
    return RecordingRunner()


@pytest.fixture
def booter(sim: SimCloudHandle, tmp_path: Path, runner: RecordingRunner) -> Iterator[NodeBooter]:
    release_dir(OLDEST)
    # up to four apiservers of ~270 MiB beside the shared etcd, controller manager, scheduler and kwok
    with control_plane_slots(2), make_booter(sim, tmp_path, runner) as running:
        yield running


def test_each_control_plane_server_runs_its_apiserver_at_its_version_and_a_replacement_loses_no_request(
    booter: NodeBooter, tenant: Any, runner: RecordingRunner
) -> None:
    cluster_id = new_cluster_id()
    old = [control_plane_server(tenant, cluster_id, f"kaas-m-cp-{slot}", OLDEST, initializes=slot == 0)
           for slot in range(3)]
    wait_until(lambda: versions_of(booter, cluster_id) == (OLDEST,) * 3, timeout=300,
               what="three apiservers at the old version")
    control_plane = real_control_plane(booter, cluster_id)
    with admin(control_plane) as through_balancer:
        assert through_balancer.get("/version").json()["gitVersion"] == OLDEST
        lease_before = holder(through_balancer)
    balancer = control_plane.control_plane.balancer
    assert balancer is not None
    assert set(balancer.backends()) == {server.id for server in old}

    kubeconfig = runner.started[0].apiserver.kubeconfig  # type: ignore[union-attr]
    probe = Probe(kubeconfig)
    probe.start()
    try:
        started = time.monotonic()
        new = control_plane_server(tenant, cluster_id, "kaas-m-cp-0-r1", NEWEST, initializes=False)
        wait_until(lambda: versions_of(booter, cluster_id) == (OLDEST, OLDEST, OLDEST, NEWEST),
                   timeout=300, what="the new server's apiserver at the new version")
        joined_after = time.monotonic() - started
        apiserver = control_plane.control_plane.apiservers[new.id]
        with admin(control_plane, url=apiserver.url) as own_port:
            assert own_port.get("/version").json()["gitVersion"] == NEWEST
        rss = control_plane.control_plane.rss_bytes()
        with admin(control_plane) as through_balancer:
            nodes = wait_until(
                lambda: (found := nodes_by_name(through_balancer)) and len(found) == 4
                and all(ready_of(n) == "True" for n in found.values()) and found,
                timeout=120, what="four Ready control-plane Nodes")
        assert {name: node["status"]["nodeInfo"]["kubeletVersion"] for name, node in nodes.items()} == {
            "kaas-m-cp-0": OLDEST, "kaas-m-cp-1": OLDEST, "kaas-m-cp-2": OLDEST, "kaas-m-cp-0-r1": NEWEST}
        assert control_plane.control_plane.components_version == OLDEST  # old apiservers remain

        # the first server (the one kubeadm init ran on) goes, as the upgrade replaces slot 0
        old_process = control_plane.control_plane.apiservers[old[0].id].process
        tenant.compute.delete_server(old[0])
        wait_until(lambda: versions_of(booter, cluster_id) == (OLDEST, OLDEST, NEWEST), timeout=120,
                   what="the deleted server's apiserver to stop")
        assert old_process.poll() is not None
        # the remaining old ones go too: the controller manager and the scheduler move to the new version
        for server in old[1:]:
            tenant.compute.delete_server(server)
        wait_until(lambda: versions_of(booter, cluster_id) == (NEWEST,), timeout=120,
                   what="only the new apiserver")
        requests_before = probe.ok
        wait_until(lambda: probe.ok > requests_before + 20, timeout=60,
                   what="more probes after the last stop")
    finally:
        probe.stop()

    assert probe.failures == []
    assert probe.ok > 0
    assert control_plane.control_plane.components_version == NEWEST
    manager_program = control_plane.control_plane.component_args["kube-controller-manager"][0]
    assert Path(manager_program).parent == releases()[NEWEST]
    with admin(control_plane) as through_balancer:
        wait_until(lambda: holder(through_balancer) != lease_before, timeout=90,
                   what="the new controller manager to hold the lease")
    print(f"\njoined apiserver ready in {joined_after:.1f} s; probe {probe.ok} GETs, "
          f"{len(probe.failures)} failed; RSS MiB: "
          + ", ".join(f"{name} {size / 2**20:.0f}" for name, size in rss.items()))


def test_a_fault_holds_the_nodes_of_matching_servers_not_ready_until_cleared(
    sim: SimCloudHandle, tmp_path: Path, tenant: Any, runner: RecordingRunner
) -> None:
    cluster_id = new_cluster_id()
    boot(tenant, cluster_id, (("kaas-f-cp-0", "control-plane"),), kubernetes_version=minor_version(NEWEST))
    with control_plane_slots(), make_booter(sim, tmp_path, runner) as booter:
        booter.faults.hold_not_ready(lambda server: server.version == OLDEST)
        boot(tenant, cluster_id, (("kaas-f-w-a", "worker"),), kubernetes_version=minor_version(OLDEST))
        wait_until(lambda: (c := booter.clusters().get(cluster_id)) and c.node_count == 2, timeout=180,
                   what="both Nodes")
        control_plane = real_control_plane(booter, cluster_id)
        with admin(control_plane) as client:
            held = wait_until(
                lambda: (found := nodes_by_name(client)) and ready_of(found["kaas-f-cp-0"]) == "True"
                and found,
                timeout=60, what="the control plane's Node Ready")
            assert ready_of(held["kaas-f-w-a"]) == "False"  # its server is ACTIVE and joined, its Node held
            assert booter.clusters()[cluster_id].nodes_ready == 1

            booter.faults.clear()
            # a Node that changes sides registers again: it may be missing for a moment
            wait_until(lambda: (node := nodes_by_name(client).get("kaas-f-w-a")) is not None
                       and ready_of(node) == "True", timeout=60, what="the released Node to become Ready")
        assert booter.clusters()[cluster_id].nodes_ready == 2


def test_a_fault_rule_sees_the_servers_name_metadata_and_version() -> None:
    from nodesim.faults import NodeFaults

    faults = NodeFaults()
    faults.hold_not_ready(
        lambda server: server.metadata.get("kaas-version") == "7" and server.name.endswith("-a"))
    assert faults.holds_not_ready(ServerFacts(name="w-a", metadata={"kaas-version": "7"}, version=NEWEST))
    assert not faults.holds_not_ready(ServerFacts(name="w-b", metadata={"kaas-version": "7"}, version=NEWEST))
    generation = faults.generation
    faults.clear()
    assert faults.generation != generation
    assert not faults.holds_not_ready(ServerFacts(name="w-a", metadata={"kaas-version": "7"}, version=NEWEST))


def test_a_server_whose_metadata_names_the_fault_is_held_not_ready_until_the_key_goes() -> None:
    """The way in from another process (a test driving ``kaas up``): the server's Nova metadata."""
    from nodesim.faults import FAULT_METADATA_KEY, NOT_READY_FAULT, NodeFaults

    faults = NodeFaults()
    faults.clear()  # the standing metadata rule is not one a test can clear by mistake
    held = ServerFacts(name="w-a", metadata={FAULT_METADATA_KEY: NOT_READY_FAULT}, version=NEWEST)
    assert faults.holds_not_ready(held)
    assert not faults.holds_not_ready(ServerFacts(name="w-a", metadata={}, version=NEWEST))
    assert not faults.holds_not_ready(
        ServerFacts(name="w-a", metadata={FAULT_METADATA_KEY: "something-else"}, version=NEWEST)
    )
