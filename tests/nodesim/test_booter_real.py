"""``NodeBooter`` with the real Kubernetes programs: each cluster gets a real control plane, started from what
kaas sends its control-plane server (the user-data: version, endpoint, PKI at kubeadm's paths), with kaas's
RBAC applied for real, a ServiceAccount token for the agent, and one kwok Node per server.

simcloud over HTTP, servers created with openstacksdk as kaas's driver creates them, a recording agent
runner (the agent itself runs in ``test_tunnel_e2e.py``). Each test holds control-plane slots
(``tests.kube_targets.control_plane_slots``) for the clusters it boots.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509

from agents.tunnel.boot_report import BootOutcome, last_outcome
from nodesim.booter import NodeBooter
from nodesim.control_planes import REAL, STANDIN, RealClusterControlPlane
from nodesim.kubeadm_node import STEP_DISCOVERY, STEP_KUBELET_START
from provider.bootstrap.pki import generate_cluster_pki
from simcloud.testing import SimCloudHandle
from tests.kube_targets import NEWEST, OLDEST, control_plane_slots, release_dir, releases
from tests.nodesim.conftest import (
    KAAS_RBAC_MANIFEST,
    RecordingRunner,
    create_kaas_server,
    kaas_user_data,
    new_cluster_id,
    wait_until,
)
from tests.provider.bootstrap.samples import NOW

pytestmark = pytest.mark.kube_real

AGENT_IDENTITY = "system:serviceaccount:kaas-system:kaas-agent"


def minor_version(version: str) -> str:
    """``v1.37.2`` → ``1.37.2``, as kaas's regions and node configs write it."""
    return version.removeprefix("v")


def make_booter(sim: SimCloudHandle, tmp_path: Path, runner: RecordingRunner, *,
                persist: bool = False, join_timeout: float = 300.0) -> NodeBooter:
    release_dir(NEWEST)  # fails (or skips) here, before anything starts, when the programs are missing
    return NodeBooter(
        clouds_yaml=sim.clouds_yaml,
        admin_cloud=sim.admin_cloud_name,
        rbac_manifest=KAAS_RBAC_MANIFEST,
        state_dir=tmp_path / "nodesim",
        poll_interval=0.1,
        kubernetes_version_default=NEWEST,
        agent_runner=runner,
        persist=persist,
        kube_releases=releases(),
        join_timeout=join_timeout,
    )


@pytest.fixture
def runner() -> RecordingRunner:
    return RecordingRunner()


@pytest.fixture
def booter(sim: SimCloudHandle, tmp_path: Path, runner: RecordingRunner) -> Iterator[NodeBooter]:
    with control_plane_slots(), make_booter(sim, tmp_path, runner) as running:
        yield running


def agent_client(kubeconfig: Path) -> httpx.Client:
    """An HTTP client that authenticates exactly as the agent's kubeconfig says (its token file)."""
    document = yaml.safe_load(kubeconfig.read_text())
    cluster = document["clusters"][0]["cluster"]
    ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
    context = ssl.create_default_context(cadata=ca)
    token = (kubeconfig.parent / document["users"][0]["user"]["tokenFile"]).read_text()
    return httpx.Client(base_url=cluster["server"], verify=context,
                        headers={"Authorization": f"Bearer {token}"}, timeout=10)


def admin_client(booter: NodeBooter, cluster_id: str) -> httpx.Client:
    control_plane = booter.control_plane_for(cluster_id)
    assert isinstance(control_plane, RealClusterControlPlane)
    return httpx.Client(base_url=control_plane.url, verify=control_plane.control_plane.admin_ssl_context(),
                        timeout=10)


def ready_of(node: dict[str, Any]) -> str:
    conditions = node["status"].get("conditions", [])
    return next((c["status"] for c in conditions if c["type"] == "Ready"), "missing")


def nodes_by_name(client: httpx.Client) -> dict[str, dict[str, Any]]:
    return {n["metadata"]["name"]: n for n in client.get("/api/v1/nodes").raise_for_status().json()["items"]}


def boot(tenant: Any, cluster_id: str, servers: tuple[tuple[str, str], ...], **user_data: Any) -> list[Any]:
    return [
        create_kaas_server(
            tenant, cluster_id=cluster_id, name=name, role=role,
            user_data=kaas_user_data(cluster_id=cluster_id, node_name=name, role=role, **user_data),
        )
        for name, role in servers
    ]


def test_a_cluster_boots_a_real_control_plane_whose_kwok_nodes_are_its_servers(
    booter: NodeBooter, tenant: Any, runner: RecordingRunner
) -> None:
    cluster_id = new_cluster_id()
    boot(tenant, cluster_id, (("kaas-r-cp-0", "control-plane"), ("kaas-r-w-a", "worker")),
         kubernetes_version=minor_version(OLDEST), labels={"tier": "x"})
    info = wait_until(lambda: booter.clusters().get(cluster_id), timeout=120, what="the cluster to boot")
    assert (info.control_plane, info.kubernetes_version) == (REAL, OLDEST)
    kubeconfig = runner.started[0].apiserver.kubeconfig  # type: ignore[union-attr]
    with agent_client(kubeconfig) as agent:
        wait_until(lambda: sorted(nodes_by_name(agent)) == ["kaas-r-cp-0", "kaas-r-w-a"], timeout=60,
                   what="both servers' Nodes")
        # kwok makes them Ready, as a kubelet posting its status would; the role labels and the providerID
        # come after the kubelet's registration, in the admin's patch (kubeadm's and the cloud controller's
        # part), and kwok may make a Node Ready before that patch lands: wait for both
        nodes = wait_until(
            lambda: (found := nodes_by_name(agent))
            and all(ready_of(n) == "True" and n["spec"].get("providerID") for n in found.values()) and found,
            timeout=60, what="kwok to make both Nodes Ready, and the admin's patch of each",
        )
        version = agent.get("/version").json()["gitVersion"]
        who = agent.post("/apis/authentication.k8s.io/v1/selfsubjectreviews",
                         json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).json()
        # kaas's RBAC, applied for real: the agent may impersonate a kaas user with a kaas group
        impersonated = agent.post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            headers={"Impersonate-User": "kaas:alice", "Impersonate-Group": "kaas:owner"},
        )
        escalation = agent.get("/api/v1/secrets", headers={"Impersonate-User": "kaas:alice",
                                                           "Impersonate-Group": "system:masters"})
    assert version == OLDEST
    assert who["status"]["userInfo"]["username"] == AGENT_IDENTITY
    assert impersonated.status_code == 201, impersonated.text
    assert impersonated.json()["status"]["userInfo"]["groups"][:1] == ["kaas:owner"]
    assert escalation.status_code == 403  # never system:masters
    control_plane, worker = nodes["kaas-r-cp-0"], nodes["kaas-r-w-a"]
    assert control_plane["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] == ""
    assert control_plane["metadata"]["labels"]["tier"] == "x"
    assert {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}.items() <= (
        control_plane["spec"]["taints"][0].items())
    assert worker["metadata"]["labels"]["node-role.kubernetes.io/worker"] == ""
    assert worker["status"]["nodeInfo"]["kubeletVersion"] == OLDEST
    assert worker["spec"]["providerID"].startswith("openstack:///")


def test_the_control_plane_runs_on_what_kubeadm_issued_from_the_user_datas_authorities(
    booter: NodeBooter, tenant: Any, runner: RecordingRunner, tmp_path: Path
) -> None:
    """As kubeadm init on the VM: kaas's CAs from the user-data, kubeadm's leaf certificates (the serving
    one names the endpoint kubeadm was given), etcd over TLS from the etcd CA, the service-account key."""
    pki = generate_cluster_pki(now=datetime.now(UTC))
    cluster_id = new_cluster_id()
    create_kaas_server(tenant, cluster_id=cluster_id, name="kaas-p-cp-0", role="control-plane",
                       user_data=kaas_user_data(
                           cluster_id=cluster_id, node_name="kaas-p-cp-0", role="control-plane",
                           kubernetes_version=minor_version(NEWEST), api_endpoint="https://10.9.8.7:6443",
                           pki=pki))
    info = wait_until(lambda: booter.clusters().get(cluster_id), timeout=120, what="the cluster to boot")

    host, port = info.apiserver_url.removeprefix("https://").split(":")
    served_pem = ssl.get_server_certificate((host, int(port))).encode()
    served = x509.load_pem_x509_certificate(served_pem)
    served.verify_directly_issued_by(x509.load_pem_x509_certificate(pki.cluster_ca.public_pem.encode()))
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.9.8.7") in names.get_values_for_type(x509.IPAddress)
    kubeadm_dir = tmp_path / "nodesim" / "clusters" / cluster_id / "kubernetes" / "pki"
    kubeadms = x509.load_pem_x509_certificate((kubeadm_dir / "apiserver.crt").read_bytes())
    assert kubeadms == served  # the very certificate kubeadm init phase certs wrote
    etcd_server = x509.load_pem_x509_certificate((kubeadm_dir / "etcd" / "server.crt").read_bytes())
    etcd_server.verify_directly_issued_by(x509.load_pem_x509_certificate(pki.etcd_ca.public_pem.encode()))
    kubeconfig = runner.started[0].apiserver.kubeconfig  # type: ignore[union-attr]
    ca_in_kubeconfig = base64.b64decode(yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"][
        "certificate-authority-data"])
    assert ca_in_kubeconfig.decode() == pki.cluster_ca.public_pem
    # the agent's token is signed with the user-data's service-account key: the apiserver accepts it
    with agent_client(kubeconfig) as agent:
        assert agent.get("/api/v1/nodes").status_code == 200
    assert (kubeadm_dir / "sa.key").read_text() == pki.service_account.key_pem


def test_an_errored_server_is_a_node_kwok_does_not_keep_ready(
    booter: NodeBooter, tenant: Any, sim: SimCloudHandle
) -> None:
    cluster_id = new_cluster_id()
    boot(tenant, cluster_id, (("kaas-e-cp-0", "control-plane"),), kubernetes_version=minor_version(NEWEST))
    wait_until(lambda: cluster_id in booter.clusters(), timeout=120, what="the cluster to boot")
    sim.sim.error_next_servers(1)
    boot(tenant, cluster_id, (("kaas-e-w-a", "worker"),), kubernetes_version=minor_version(NEWEST))
    wait_until(lambda: booter.clusters()[cluster_id].node_count == 2, timeout=60, what="the errored node")
    with admin_client(booter, cluster_id) as admin:
        nodes = wait_until(
            lambda: (found := nodes_by_name(admin)) and ready_of(found["kaas-e-cp-0"]) == "True" and found,
            timeout=60, what="the control-plane node to be Ready",
        )
    errored = nodes["kaas-e-w-a"]
    assert ready_of(errored) == "False"
    assert "kwok.x-k8s.io/node" not in errored["metadata"]["annotations"]  # kwok would make it Ready
    assert booter.clusters()[cluster_id].nodes_ready == 1


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if text.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
    return pids


def test_deleting_the_servers_removes_their_nodes_then_stops_the_control_plane(
    booter: NodeBooter, tenant: Any, runner: RecordingRunner, tmp_path: Path
) -> None:
    cluster_id = new_cluster_id()
    servers = boot(tenant, cluster_id, (("kaas-d-cp-0", "control-plane"), ("kaas-d-w-a", "worker")),
                   kubernetes_version=minor_version(NEWEST))
    wait_until(lambda: (c := booter.clusters().get(cluster_id)) and c.node_count == 2, timeout=120,
               what="two nodes")
    workdir = tmp_path / "nodesim" / "clusters" / cluster_id
    assert processes_mentioning(str(workdir)) != []

    tenant.compute.delete_server(servers[1])
    wait_until(lambda: booter.clusters()[cluster_id].node_count == 1, what="the worker's node to go")
    with admin_client(booter, cluster_id) as admin:
        assert sorted(nodes_by_name(admin)) == ["kaas-d-cp-0"]

    tenant.compute.delete_server(servers[0])
    wait_until(lambda: cluster_id not in booter.clusters(), timeout=60, what="the cluster to stop")
    assert runner.stopped == [cluster_id]
    assert not workdir.exists()
    assert processes_mentioning(str(workdir)) == []


def test_a_persisting_booter_restarted_boots_the_real_control_plane_with_its_etcd(
    sim: SimCloudHandle, tenant: Any, tmp_path: Path, runner: RecordingRunner
) -> None:
    cluster_id = new_cluster_id()
    boot(tenant, cluster_id, (("kaas-k-cp-0", "control-plane"),), kubernetes_version=minor_version(NEWEST))
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept"}, "data": {"a": "1"}}
    with control_plane_slots():
        with make_booter(sim, tmp_path, runner, persist=True) as first:
            wait_until(lambda: first.clusters().get(cluster_id), timeout=120, what="the cluster to boot")
            with admin_client(first, cluster_id) as admin:
                created = admin.post("/api/v1/namespaces/default/configmaps", json=configmap)
                assert created.status_code == 201, created.text
                uid = created.json()["metadata"]["uid"]
        workdir = tmp_path / "nodesim" / "clusters" / cluster_id
        assert (workdir / "control-plane" / "etcd").is_dir()
        assert processes_mentioning(str(workdir)) == []  # stopped, its data kept
        with make_booter(sim, tmp_path, runner, persist=True) as second:
            wait_until(lambda: second.clusters().get(cluster_id), timeout=120, what="its return")
            with admin_client(second, cluster_id) as admin:
                kept = admin.get("/api/v1/namespaces/default/configmaps/kept").json()
                nodes = nodes_by_name(admin)
    assert (kept["metadata"]["uid"], kept["data"]) == (uid, {"a": "1"})
    assert list(nodes) == ["kaas-k-cp-0"]  # registered once, found again


def test_a_version_that_is_not_built_runs_on_the_standin(
    booter: NodeBooter, tenant: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cluster_id = new_cluster_id()
    boot(tenant, cluster_id, (("kaas-s-cp-0", "control-plane"),), kubernetes_version="1.29.4")
    info = wait_until(lambda: booter.clusters().get(cluster_id), timeout=60, what="the cluster to boot")
    assert (info.control_plane, info.kubernetes_version) == (STANDIN, "v1.29.4")
    assert booter.standin_for(cluster_id) is not None
    assert "Kubernetes v1.29.4 is not built" in caplog.text


def test_kwok_serves_what_a_user_then_finds(booter: NodeBooter, tenant: Any) -> None:
    """The booted cluster runs a Deployment's pods on its servers' Nodes (kwok's), once Ready."""
    cluster_id = new_cluster_id()
    boot(tenant, cluster_id, (("kaas-w-cp-0", "control-plane"), ("kaas-w-w-a", "worker")),
         kubernetes_version=minor_version(NEWEST))
    wait_until(lambda: booter.clusters().get(cluster_id), timeout=120, what="the cluster to boot")
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]}}},
    }
    with admin_client(booter, cluster_id) as admin:
        created = admin.post("/apis/apps/v1/namespaces/default/deployments", content=json.dumps(deployment),
                             headers={"Content-Type": "application/json"})
        assert created.status_code == 201, created.text
        pods = wait_until(
            lambda: (items := admin.get("/api/v1/namespaces/default/pods").json()["items"])
            and len(items) == 2 and all(p["status"].get("phase") == "Running" for p in items) and items,
            timeout=90, what="two Running pods",
        )
    # the control-plane node is tainted NoSchedule, as kubeadm taints it: the pods land on the worker
    assert {pod["spec"]["nodeName"] for pod in pods} == {"kaas-w-w-a"}


def test_the_agents_token_is_renewed_before_it_expires(
    booter: NodeBooter, tenant: Any, runner: RecordingRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As kubelet renews a pod's projected token at 80 % of its life: the token file is replaced and the
    new token works (the agent re-reads the file when it changes)."""
    cluster_id = new_cluster_id()
    boot(tenant, cluster_id, (("kaas-t-cp-0", "control-plane"),), kubernetes_version=minor_version(NEWEST))
    wait_until(lambda: booter.clusters().get(cluster_id), timeout=120, what="the cluster to boot")
    kubeconfig = runner.started[0].apiserver.kubeconfig  # type: ignore[union-attr]
    token_file = kubeconfig.parent / yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["tokenFile"]
    first = token_file.read_text()
    control_plane = booter.control_plane_for(cluster_id)
    assert control_plane is not None
    control_plane.refresh_agent_credentials()
    assert token_file.read_text() == first  # not due yet

    assert isinstance(control_plane, RealClusterControlPlane)
    later = control_plane.clock() + 0.8 * 3600 + 1  # 80 % of the token's hour, and a second
    monkeypatch.setattr(control_plane, "clock", lambda: later)
    control_plane.refresh_agent_credentials()
    renewed = token_file.read_text()
    assert renewed != first
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    with agent_client(kubeconfig) as agent:
        assert agent.get("/api/v1/nodes").status_code == 200


def console_outcome(tenant: Any, server: Any) -> BootOutcome | None:
    """What the server's boot last said on its console, read as kaas reads it (Nova's os-getConsoleOutput)."""
    return last_outcome(tenant.compute.get_server_console_output(server, length=40)["output"])


def test_a_worker_pinning_another_ca_fails_discovery_on_its_console_and_never_registers(
    booter: NodeBooter, tenant: Any
) -> None:
    """kubeadm join's discovery pins the cluster CA by caCertHashes: a hash of another CA is refused at
    once (no retry can fix it), said on the node's console; the worker with the right hash joins."""
    cluster_id = new_cluster_id()
    stranger = generate_cluster_pki(now=datetime.now(UTC))
    servers = {
        name: create_kaas_server(
            tenant, cluster_id=cluster_id, name=name, role=role,
            user_data=kaas_user_data(cluster_id=cluster_id, node_name=name, role=role,
                                     kubernetes_version=minor_version(NEWEST), join_changes=changes))
        for name, role, changes in (("kaas-h-cp-0", "control-plane", {}), ("kaas-h-w-a", "worker", {}),
                                    ("kaas-h-w-b", "worker", {"ca_cert_hash": stranger.ca_cert_hash}))
    }
    wait_until(lambda: (c := booter.clusters().get(cluster_id)) and c.node_count == 2, timeout=120,
               what="the control plane and the good worker")
    refused = wait_until(lambda: console_outcome(tenant, servers["kaas-h-w-b"]), timeout=60,
                         what="the bad worker's boot report")

    assert refused.failed
    assert refused.step == STEP_DISCOVERY
    assert "none of the public keys" in refused.reason
    assert stranger.ca_cert_hash in refused.reason  # the pin it was given, so an operator can compare
    assert console_outcome(tenant, servers["kaas-h-w-a"]) == BootOutcome(failed=False)
    assert console_outcome(tenant, servers["kaas-h-cp-0"]) == BootOutcome(failed=False)
    with admin_client(booter, cluster_id) as admin:
        nodes = nodes_by_name(admin)
    assert sorted(nodes) == ["kaas-h-cp-0", "kaas-h-w-a"]
    # the good worker registered with the identity its TLS bootstrap got; the cloud controller's part
    # (kaas's providerID for the server) came after
    assert nodes["kaas-h-w-a"]["spec"]["providerID"] == f"openstack:///{servers['kaas-h-w-a'].id}"


def test_a_worker_whose_join_token_expired_fails_after_the_join_timeout_and_says_why(
    sim: SimCloudHandle, tenant: Any, tmp_path: Path, runner: RecordingRunner
) -> None:
    """The wave's token lives one second (kubeadm init creates it with that ttl): the controller manager
    stops signing cluster-info with it and deletes it, so the worker's discovery keeps failing until the
    join timeout, then its console says why."""
    cluster_id = new_cluster_id()
    short = {"token_expires_at": NOW + timedelta(seconds=1)}  # samples render at NOW: a ttl of 1 s
    control_plane = create_kaas_server(
        tenant, cluster_id=cluster_id, name="kaas-x-cp-0", role="control-plane",
        user_data=kaas_user_data(cluster_id=cluster_id, node_name="kaas-x-cp-0", role="control-plane",
                                 kubernetes_version=minor_version(NEWEST), join_changes=short))
    worker = create_kaas_server(
        tenant, cluster_id=cluster_id, name="kaas-x-w-a", role="worker",
        user_data=kaas_user_data(cluster_id=cluster_id, node_name="kaas-x-w-a", role="worker",
                                 kubernetes_version=minor_version(NEWEST)))
    with control_plane_slots(), make_booter(sim, tmp_path, runner, join_timeout=3.0) as booter:
        wait_until(lambda: booter.clusters().get(cluster_id), timeout=120, what="the cluster to boot")
        refused = wait_until(lambda: console_outcome(tenant, worker), timeout=60,
                             what="the worker's boot report")
        with admin_client(booter, cluster_id) as admin:
            nodes = nodes_by_name(admin)

    assert refused.failed
    # discovery finds no signature for the token; had it passed in the token's second, the kubelet's TLS
    # bootstrap is refused instead: either way the node says the token may have expired
    assert refused.step in (STEP_DISCOVERY, STEP_KUBELET_START)
    assert "expired" in refused.reason
    assert console_outcome(tenant, control_plane) == BootOutcome(failed=False)
    assert sorted(nodes) == ["kaas-x-cp-0"]


def test_a_worker_joining_at_a_vip_the_serving_certificate_does_not_name_fails_tls_and_says_so(
    booter: NodeBooter, tenant: Any
) -> None:
    """The apiserver's serving certificate holds the SANs kubeadm derived from kaas's configuration. The
    cluster's load balancer routes to it, but its VIP is not among them (a certSANs without the VIP): a
    worker sent there is refused by TLS at discovery at once, says so on its console and never registers;
    the worker at the endpoint the certificate names joins."""
    cluster_id = new_cluster_id()
    network = tenant.network.create_network(name=f"kaas-{cluster_id[:8]}")
    subnet = tenant.network.create_subnet(network_id=network.id, ip_version=4, cidr="10.9.0.0/24")
    balancer = tenant.load_balancer.create_load_balancer(
        name=f"kaas-{cluster_id[:8]}-api", vip_subnet_id=subnet.id, tags=[f"kaas-cluster={cluster_id}"]
    )
    unnamed_vip = str(balancer.vip_address)
    servers = {
        name: create_kaas_server(
            tenant, cluster_id=cluster_id, name=name, role=role,
            user_data=kaas_user_data(cluster_id=cluster_id, node_name=name, role=role,
                                     kubernetes_version=minor_version(NEWEST), **endpoint))
        for name, role, endpoint in (
            ("kaas-s-cp-0", "control-plane", {}), ("kaas-s-w-a", "worker", {}),
            ("kaas-s-w-b", "worker", {"api_endpoint": f"https://{unnamed_vip}:6443"}),
        )
    }
    wait_until(lambda: (c := booter.clusters().get(cluster_id)) and c.node_count == 2, timeout=120,
               what="the control plane and the good worker")
    refused = wait_until(lambda: console_outcome(tenant, servers["kaas-s-w-b"]), timeout=60,
                         what="the bad worker's boot report")

    assert refused.failed
    assert refused.step == STEP_DISCOVERY
    assert f"TLS to {unnamed_vip}:6443 with the pinned CA failed" in refused.reason
    assert "IP address mismatch" in refused.reason, refused.reason
    assert console_outcome(tenant, servers["kaas-s-w-a"]) == BootOutcome(failed=False)
    with admin_client(booter, cluster_id) as admin:
        assert sorted(nodes_by_name(admin)) == ["kaas-s-cp-0", "kaas-s-w-a"]
