"""``NodeBooter`` against a real simcloud (openstacksdk over HTTP) with a recording agent runner."""

from __future__ import annotations

import base64
import logging
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from nodesim.booter import NodeBooter
from simcloud.kube.resources import find
from simcloud.testing import SimCloudHandle, run_simcloud, write_clouds_yaml
from tests.nodesim.conftest import (
    KAAS_RBAC_MANIFEST,
    RecordingRunner,
    connect,
    create_kaas_server,
    kaas_user_data,
    new_cluster_id,
    wait_until,
)

TOKEN = "kaas-agent-token-do-not-log-0123456789"


def make_booter(
    clouds_yaml: Path, admin_cloud: str, tmp_path: Path, runner: RecordingRunner, *, persist: bool = False
) -> NodeBooter:
    return NodeBooter(
        clouds_yaml=clouds_yaml,
        admin_cloud=admin_cloud,
        rbac_manifest=KAAS_RBAC_MANIFEST,
        state_dir=tmp_path / "nodesim",
        poll_interval=0.1,
        kubernetes_version_default="v1.30.2",
        agent_runner=runner,
        persist=persist,
    )


@pytest.fixture
def runner() -> RecordingRunner:
    return RecordingRunner()


@pytest.fixture
def booter(sim: SimCloudHandle, tmp_path: Path, runner: RecordingRunner) -> Iterator[NodeBooter]:
    with make_booter(sim.clouds_yaml, sim.admin_cloud_name, tmp_path, runner) as running:
        yield running


def agent_client(kubeconfig: Path) -> httpx.Client:
    """An HTTP client that authenticates exactly as the agent's kubeconfig says."""
    document = yaml.safe_load(kubeconfig.read_text())
    cluster = document["clusters"][0]["cluster"]
    context = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
    )
    token = document["users"][0]["user"]["token"]
    return httpx.Client(
        base_url=cluster["server"], verify=context, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def ready_of(node: dict[str, Any]) -> str:
    return next(c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready")


def test_an_active_control_plane_boots_a_standin_and_one_agent(
    booter: NodeBooter, tenant: Any, runner: RecordingRunner
) -> None:
    cluster_id = new_cluster_id()
    for name, role in (
        ("kaas-x-cp-0", "control-plane"),
        ("kaas-x-cp-1", "control-plane"),
        ("kaas-x-w-a", "worker"),
    ):
        create_kaas_server(
            tenant,
            cluster_id=cluster_id,
            name=name,
            role=role,
            user_data=kaas_user_data(cluster_id=cluster_id, node_name=name, role=role, labels={"tier": "x"}),
        )

    info = wait_until(
        lambda: (c := booter.clusters().get(cluster_id)) and c.nodes_ready == 3 and c.agent_running and c,
        what="the cluster's three nodes to be Ready",
    )
    assert info.node_count == 3
    assert len(runner.started) == 1  # one agent per cluster, like a Deployment
    config = runner.started[0]
    assert config.cluster_id == cluster_id
    assert config.tunnel_url == "ws://127.0.0.1:9/v1/tunnel"
    assert config.agent_token.get_secret_value() == TOKEN
    assert config.node_name == "kaas-x-cp-0"
    assert config.apiserver.kind == "kubeconfig"

    handle = booter.standin_for(cluster_id)
    assert handle is not None
    assert handle.url == info.apiserver_url
    with agent_client(config.apiserver.kubeconfig) as client:
        assert client.get("/version").json()["gitVersion"] == "v1.29.4"  # the user-data's version
        nodes = {
            n["metadata"]["name"]: n for n in client.get("/api/v1/nodes").raise_for_status().json()["items"]
        }
        # kaas's RBAC: the agent may impersonate the kaas groups, as kaas's tunnel needs
        review = client.post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            headers={"Impersonate-User": "kaas:alice", "Impersonate-Group": "kaas:owner"},
        )
    assert review.status_code == 201, review.text
    assert set(nodes) == {"kaas-x-cp-0", "kaas-x-cp-1", "kaas-x-w-a"}
    assert all(ready_of(node) == "True" for node in nodes.values())
    cp_labels = nodes["kaas-x-cp-0"]["metadata"]["labels"]
    assert cp_labels["node-role.kubernetes.io/control-plane"] == ""
    assert cp_labels["tier"] == "x"
    assert "node-role.kubernetes.io/control-plane" not in nodes["kaas-x-w-a"]["metadata"]["labels"]
    assert nodes["kaas-x-w-a"]["metadata"]["labels"]["node-role.kubernetes.io/worker"] == ""
    assert nodes["kaas-x-w-a"]["status"]["nodeInfo"]["kubeletVersion"] == "v1.29.4"


def test_workers_alone_boot_nothing(
    booter: NodeBooter, tenant: Any, runner: RecordingRunner, sim: SimCloudHandle
) -> None:
    cluster_id = new_cluster_id()
    server = create_kaas_server(
        tenant,
        cluster_id=cluster_id,
        name="kaas-w-only",
        role="worker",
        user_data=kaas_user_data(cluster_id=cluster_id, node_name="kaas-w-only", role="worker"),
    )
    tenant.compute.wait_for_server(server, status="ACTIVE", wait=20, interval=0.1)
    other = new_cluster_id()
    create_kaas_server(
        tenant,
        cluster_id=other,
        name="kaas-o-cp-0",
        role="control-plane",
        user_data=kaas_user_data(cluster_id=other, node_name="kaas-o-cp-0", role="control-plane"),
    )
    # once a later cluster is booted, the earlier polls have certainly seen the worker-only cluster
    wait_until(lambda: other in booter.clusters(), what="the other cluster to boot")
    assert cluster_id not in booter.clusters()
    assert [c.cluster_id for c in runner.started] == [other]


def test_deleting_servers_removes_nodes_then_stops_agent_and_standin(
    booter: NodeBooter, tenant: Any, runner: RecordingRunner, tmp_path: Path
) -> None:
    cluster_id = new_cluster_id()
    servers = [
        create_kaas_server(
            tenant,
            cluster_id=cluster_id,
            name=name,
            role=role,
            user_data=kaas_user_data(cluster_id=cluster_id, node_name=name, role=role),
        )
        for name, role in (("kaas-d-cp-0", "control-plane"), ("kaas-d-w-a", "worker"))
    ]
    wait_until(
        lambda: (c := booter.clusters().get(cluster_id)) and c.nodes_ready == 2, what="two Ready nodes"
    )
    handle = booter.standin_for(cluster_id)
    assert handle is not None
    kubeconfig = runner.started[0].apiserver.kubeconfig  # type: ignore[union-attr]
    assert kubeconfig.exists()

    tenant.compute.delete_server(servers[1])
    wait_until(lambda: booter.clusters()[cluster_id].node_count == 1, what="the worker's node to go")
    with agent_client(kubeconfig) as client:
        names = [n["metadata"]["name"] for n in client.get("/api/v1/nodes").json()["items"]]
    assert names == ["kaas-d-cp-0"]
    assert runner.stopped == []

    tenant.compute.delete_server(servers[0])
    wait_until(lambda: cluster_id not in booter.clusters(), what="the cluster to stop")
    assert booter.standin_for(cluster_id) is None
    wait_until(lambda: runner.stopped == [cluster_id], what="the agent to stop")
    assert not kubeconfig.exists()
    port = int(handle.url.rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError):  # the stand-in no longer listens
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_an_errored_server_is_a_node_that_is_not_ready(
    booter: NodeBooter, tenant: Any, sim: SimCloudHandle
) -> None:
    cluster_id = new_cluster_id()
    create_kaas_server(
        tenant,
        cluster_id=cluster_id,
        name="kaas-e-cp-0",
        role="control-plane",
        user_data=kaas_user_data(cluster_id=cluster_id, node_name="kaas-e-cp-0", role="control-plane"),
    )
    wait_until(lambda: cluster_id in booter.clusters(), what="the cluster to boot")
    sim.sim.error_next_servers(1)
    create_kaas_server(
        tenant,
        cluster_id=cluster_id,
        name="kaas-e-w-a",
        role="worker",
        user_data=kaas_user_data(cluster_id=cluster_id, node_name="kaas-e-w-a", role="worker"),
    )
    info = wait_until(
        lambda: (c := booter.clusters()[cluster_id]) and c.node_count == 2 and c, what="the errored node"
    )
    assert info.nodes_ready == 1
    handle = booter.standin_for(cluster_id)
    assert handle is not None
    node = handle.standin.store.find(_node_type(), "", "kaas-e-w-a")
    assert node is not None
    assert ready_of(node) == "False"


def _node_type() -> Any:
    from simcloud.kube.resources import find

    return find("", "v1", "nodes")


def test_bad_user_data_is_logged_once_and_skipped(
    booter: NodeBooter, tenant: Any, runner: RecordingRunner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    broken = new_cluster_id()
    no_agent = new_cluster_id()
    good = new_cluster_id()
    create_kaas_server(
        tenant,
        cluster_id=broken,
        name="kaas-b-cp-0",
        role="control-plane",
        user_data=f"#cloud-config\nwrite_files: [{{path: /etc/kaas/agent.yaml, content: '{TOKEN}: [' }}]\n",
    )
    create_kaas_server(
        tenant,
        cluster_id=no_agent,
        name="kaas-n-cp-0",
        role="control-plane",
        user_data=kaas_user_data(
            cluster_id=no_agent, node_name="kaas-n-cp-0", role="control-plane", agent_token=None
        ),
    )
    create_kaas_server(
        tenant,
        cluster_id=good,
        name="kaas-g-cp-0",
        role="control-plane",
        user_data=kaas_user_data(cluster_id=good, node_name="kaas-g-cp-0", role="control-plane"),
    )
    wait_until(lambda: good in booter.clusters(), what="the good cluster to boot")
    polls_seen = caplog.text.count("kaas-g-cp-0")
    # a few more polls: the warnings must not repeat
    wait_until(lambda: booter.clusters()[good].nodes_ready == 1, what="the good node")
    time.sleep(0.5)
    assert polls_seen >= 1
    assert set(booter.clusters()) == {good}
    assert [c.cluster_id for c in runner.started] == [good]
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("nodesim"))
    assert ours.count("kaas-b-cp-0") == 1, ours
    assert "is not valid YAML" in ours
    assert ours.count("kaas-n-cp-0") == 1, ours
    assert "has no agent config" in ours
    # not even keystoneauth's DEBUG body logging may show the user-data (plain or base64)
    assert "OS-EXT-SRV-ATTR:user_data" not in caplog.text
    assert TOKEN not in caplog.text
    assert base64.b64encode(b"#cloud-config").decode()[:16] not in caplog.text
    assert "#cloud-config" not in caplog.text


def test_cloud_errors_are_retried_on_the_next_poll(tmp_path: Path, runner: RecordingRunner) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    clouds_yaml = write_clouds_yaml(tmp_path / "early", f"http://127.0.0.1:{port}")
    with make_booter(clouds_yaml, "sim-admin", tmp_path, runner) as booter:
        time.sleep(0.5)  # several failed polls: nothing listens yet
        assert booter.clusters() == {}
        with run_simcloud(state_dir=tmp_path / "sim", port=port) as sim:
            conn = connect(sim.clouds_yaml, sim.cloud_name)
            cluster_id = new_cluster_id()
            create_kaas_server(
                conn,
                cluster_id=cluster_id,
                name="kaas-r-cp-0",
                role="control-plane",
                user_data=kaas_user_data(
                    cluster_id=cluster_id, node_name="kaas-r-cp-0", role="control-plane"
                ),
            )
            wait_until(lambda: cluster_id in booter.clusters(), what="the booter to recover and boot")
            conn.close()
            booter.stop()
        assert runner.stopped == [cluster_id]


def test_a_persisting_booter_restarted_boots_each_cluster_with_the_objects_it_had(
    sim: SimCloudHandle, tenant: Any, tmp_path: Path, runner: RecordingRunner
) -> None:
    cluster_id = new_cluster_id()
    create_kaas_server(
        tenant,
        cluster_id=cluster_id,
        name="kaas-p-cp-0",
        role="control-plane",
        user_data=kaas_user_data(cluster_id=cluster_id, node_name="kaas-p-cp-0", role="control-plane"),
    )
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept"}, "data": {"a": "1"}}

    def persisting() -> NodeBooter:
        return make_booter(sim.clouds_yaml, sim.admin_cloud_name, tmp_path, runner, persist=True)

    with persisting() as first:
        info = wait_until(lambda: first.clusters().get(cluster_id), what="the cluster to boot")
        handle = first.standin_for(cluster_id)
        assert handle is not None
        handle.standin.apply([configmap])
        uid = handle.standin.store.get(*_configmap_key())["metadata"]["uid"]
    assert (tmp_path / "nodesim" / "clusters" / cluster_id / "objects.json").exists()
    with persisting() as second:
        wait_until(lambda: second.standin_for(cluster_id), what="the cluster to boot again")
        handle = second.standin_for(cluster_id)
        assert handle is not None
        kept = handle.standin.store.get(*_configmap_key())
        assert (kept["metadata"]["uid"], kept["data"]) == (uid, {"a": "1"})
    assert info.apiserver_url


def test_a_booter_that_does_not_persist_forgets_its_clusters_when_stopped(
    sim: SimCloudHandle, tenant: Any, tmp_path: Path, runner: RecordingRunner
) -> None:
    cluster_id = new_cluster_id()
    create_kaas_server(
        tenant,
        cluster_id=cluster_id,
        name="kaas-q-cp-0",
        role="control-plane",
        user_data=kaas_user_data(cluster_id=cluster_id, node_name="kaas-q-cp-0", role="control-plane"),
    )
    with make_booter(sim.clouds_yaml, sim.admin_cloud_name, tmp_path, runner) as booter:
        wait_until(lambda: booter.clusters().get(cluster_id), what="the cluster to boot")
    assert not (tmp_path / "nodesim" / "clusters" / cluster_id).exists()


def _configmap_key() -> tuple[Any, str, str]:
    rtype = find("", "v1", "configmaps")
    assert rtype is not None
    return rtype, "default", "kept"
