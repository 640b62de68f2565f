"""Add-ons reach a real cluster the way kaas reaches it: a real control plane (nodesim.kube_real, started
from the PKI kaas generated for the cluster), kaas's RBAC and a real agent connected to a real tunnel
server, and the provider's add-on step server-side applying through the signed internal hop with the
``kubernetes`` client, as ``kaas:system``."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from agents.config import AgentConfig, KubeconfigApiserver
from kaas_core.db.models import ClusterAddon, ClusterAgent
from kaas_core.internal_hop import assertion_key
from nodesim.kube_real import RealControlPlane, start_control_plane
from provider.addons.catalog import ADDONS, Addon, AddonInputs
from provider.addons.join_tokens import bootstrap_token_secret
from provider.addons.kube_client import AddonApplyError
from provider.addons.reconcile import AddonsOutcome, reconcile_addons, tunnel_applier_factory
from provider.bootstrap import rbac_manifest
from provider.bootstrap.pki import generate_cluster_pki
from tests.kaas_tunnel.conftest import (
    INTERNAL_SECRET,
    ServerFactory,
    make_server,  # noqa: F401 (a fixture)
    registry,  # noqa: F401 (a fixture)
    running_agent,
    wait_until,
)
from tests.nodesim.test_kube_real import KUBECTL, NEWEST, release_dir
from tests.provider.factories import CreatedCluster, create_cluster

pytestmark = pytest.mark.kube_real

POD_CIDR = "10.244.0.0/16"
CREDENTIAL_ID = "0123456789abcdef0123456789abcdef"
CREDENTIAL_SECRET = "application-credential-secret-for-the-test"


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealControlPlane]:
    """A real control plane whose CA and service-account key are the ones kaas generates for a cluster."""
    pki = generate_cluster_pki(now=datetime.now(UTC))
    pki_dir = tmp_path_factory.mktemp("pki")
    for pair in (pki.cluster_ca, pki.front_proxy_ca, pki.service_account):
        (pki_dir / pair.kind.cert_file).write_text(pair.public_pem)
        (pki_dir / pair.kind.key_file).write_text(pair.key_pem)
    with start_control_plane(
        bin_dir=release_dir(NEWEST), pki_dir=pki_dir, work_dir=tmp_path_factory.mktemp("cp")
    ) as cp:
        yield cp


def kubectl(cp: RealControlPlane, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(cp.admin_kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def agent_kubeconfig(cp: RealControlPlane, tmp_path: Path) -> Path:
    """What the agent's pod has: its service account's token (kaas's RBAC applied first, as cloud-init
    does)."""
    kubectl(cp, "apply", "--server-side", "-f", str(rbac_manifest()))
    token = kubectl(cp, "create", "token", "kaas-agent", "-n", "kaas-system", "--duration=1h").strip()
    admin = yaml.safe_load(cp.admin_kubeconfig.read_text())
    admin["users"] = [{"name": "agent", "user": {"token": token}}]
    admin["contexts"] = [
        {"name": "agent", "context": {"cluster": admin["clusters"][0]["name"], "user": "agent"}}
    ]
    admin["current-context"] = "agent"
    path = tmp_path / "agent.kubeconfig"
    path.write_text(yaml.safe_dump(admin))
    return path


def inputs_for(cluster: CreatedCluster) -> AddonInputs:
    return AddonInputs(
        cluster_id=cluster.id,
        pod_cidr=POD_CIDR,
        auth_url="http://keystone.example.internal:5000/v3",
        region_name="RegionOne",
        credential_id=CREDENTIAL_ID,
        credential_secret=CREDENTIAL_SECRET,
        subnet_id="5b2c0e4e-0000-4000-8000-000000000001",
        external_network_id=None,
        tunnel_url="wss://kaas.example.com/v1/tunnel",
        agent_token=cluster.agent_token,
        agent_image="kaas/kaas-agent:test",
    )


def run_step(
    session_factory: sessionmaker[Session],
    cluster: CreatedCluster,
    *,
    addons: tuple[Addon, ...] = ADDONS,
    resync: timedelta = timedelta(hours=1),
    key: bytes = assertion_key(INTERNAL_SECRET),
) -> AddonsOutcome:
    """The provider's add-on step, as a pass runs it: in its own session, committed after."""
    with session_factory() as session:
        agent = session.get_one(ClusterAgent, cluster.id)
        assert agent.connected
        assert agent.tunnel_address
        outcome = reconcile_addons(
            session,
            cluster.id,
            inputs=inputs_for(cluster),
            tunnel_address=agent.tunnel_address,
            open_applier=tunnel_applier_factory(key, timeout=30),
            now=datetime.now(UTC),
            addons=addons,
            resync=resync,
        )
        session.commit()
        return outcome


def kubeadm_tokens(cp: RealControlPlane) -> str:
    """What the real ``kubeadm token list`` sees in the cluster."""
    result = subprocess.run(
        [str(release_dir(NEWEST) / "kubeadm"), "token", "list", "--kubeconfig", str(cp.admin_kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def get_json(cp: RealControlPlane, *args: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(kubectl(cp, "get", *args, "-o", "json"))
    return document


async def test_every_addon_is_applied_in_order_through_the_tunnel_as_kaas_system(
    control_plane: RealControlPlane,
    make_server: ServerFactory,  # noqa: F811
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    cp = control_plane
    cluster = create_cluster(session_factory)
    server = await make_server()
    config = AgentConfig(
        tunnel_url=server.tunnel_url,
        cluster_id=cluster.id,
        agent_token=SecretStr(cluster.agent_token),
        apiserver=KubeconfigApiserver(kubeconfig=agent_kubeconfig(cp, tmp_path)),
        report_interval_seconds=0.3,
    )
    async with running_agent(config):
        await wait_until(lambda: server.session_for(cluster.id) is not None, what="the agent to connect")

        def connected() -> bool:
            with session_factory() as session:
                agent = session.get(ClusterAgent, cluster.id)
                return bool(agent and agent.connected and agent.tunnel_address)

        await wait_until(connected, what="the tunnel server to record the session")
        outcome = await asyncio.to_thread(run_step, session_factory, cluster)
        assert outcome.ready, outcome.message
        assert outcome.message.startswith("cni flannel-v0.28.9")

        # what the cluster now has, read as its admin
        net_conf = get_json(cp, "configmap", "kube-flannel-cfg", "-n", "kube-flannel")["data"][
            "net-conf.json"
        ]
        assert json.loads(net_conf)["Network"] == POD_CIDR
        assert get_json(cp, "daemonset", "kube-flannel-ds", "-n", "kube-flannel")["kind"] == "DaemonSet"
        secret = get_json(cp, "secret", "cloud-config", "-n", "kube-system")
        cloud_conf = base64.b64decode(secret["data"]["cloud.conf"]).decode()
        assert f"application-credential-id={CREDENTIAL_ID}" in cloud_conf
        assert f"application-credential-secret={CREDENTIAL_SECRET}" in cloud_conf
        occm = get_json(cp, "daemonset", "openstack-cloud-controller-manager", "-n", "kube-system")
        env = {e["name"]: e.get("value") for e in occm["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["CLUSTER_NAME"] == f"kaas-{cluster.id[:8]}"
        assert get_json(cp, "csidriver", "cinder.csi.openstack.org")["kind"] == "CSIDriver"
        metrics = get_json(cp, "deployment", "metrics-server", "-n", "kube-system")
        assert "--kubelet-insecure-tls" in metrics["spec"]["template"]["spec"]["containers"][0]["args"]
        agent = get_json(cp, "deployment", "kaas-agent", "-n", "kaas-system", "--show-managed-fields")
        assert agent["spec"]["template"]["spec"]["hostNetwork"] is True
        # applied by kaas's own field manager, server-side
        managers = {(m["manager"], m["operation"]) for m in agent["metadata"]["managedFields"]}
        assert ("kaas", "Apply") in managers
        # ... as kaas:system: the agent's own service account may only impersonate and read nodes, so the
        # ClusterRoles and the CSIDriver above exist through the group's binding in kaas-rbac.yaml
        with session_factory() as session:
            rows = {
                r.name: r.version
                for r in session.scalars(select(ClusterAddon).where(ClusterAddon.cluster_id == cluster.id))
            }
        assert rows == {addon.name: addon.version for addon in ADDONS}

        # a second pass sends nothing: every digest matches (an applier that may not be opened proves it)
        with session_factory() as session:
            agent_row = session.get_one(ClusterAgent, cluster.id)

            def no_applier(address: str, cluster_id: str) -> Any:
                raise AssertionError("the step opened the tunnel although nothing was due")

            again = reconcile_addons(
                session,
                cluster.id,
                inputs=inputs_for(cluster),
                tunnel_address=str(agent_row.tunnel_address),
                open_applier=no_applier,
                now=datetime.now(UTC),
            )
        assert again.ready
        # ... and when a resync is due, the same server-side applies change nothing and succeed
        resynced = await asyncio.to_thread(run_step, session_factory, cluster, resync=timedelta(0))
        assert resynced.ready, resynced.message
        generation = get_json(cp, "deployment", "kaas-agent", "-n", "kaas-system")["metadata"]["generation"]
        assert generation == agent["metadata"]["generation"]

        # an object the cluster refuses stops the step at that add-on, saying which and why
        broken = Addon(
            "broken",
            "1",
            lambda _: [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "Not_A_Name", "namespace": "default"},
                }
            ],
        )
        refused = await asyncio.to_thread(run_step, session_factory, cluster, addons=(*ADDONS, broken))
        assert not refused.ready
        assert refused.error is not None
        assert not refused.error.temporary
        assert refused.reason == "AddonApplyFailed"
        assert refused.message.startswith(f"{len(ADDONS)} of {len(ADDONS) + 1} add-ons applied; broken:")
        assert "422" in refused.message

        # a later join wave's token, as kaas publishes it: kubeadm itself lists it; retired, it is gone
        token_secret = bootstrap_token_secret(
            cluster_id=cluster.id,
            token_id="abcdef",
            secret="0123456789abcdef",
            expires_at=datetime.now(UTC) + timedelta(hours=4),
        )
        open_applier = tunnel_applier_factory(assertion_key(INTERNAL_SECRET))
        address = str(agent_row.tunnel_address)

        def publish() -> None:
            with open_applier(address, cluster.id) as applier:
                applier.apply(token_secret)

        def retire() -> None:
            with open_applier(address, cluster.id) as applier:
                applier.delete("v1", "Secret", "bootstrap-token-abcdef", "kube-system")
                applier.delete("v1", "Secret", "bootstrap-token-abcdef", "kube-system")  # gone: no error

        await asyncio.to_thread(publish)
        assert "abcdef.0123456789abcdef" in kubeadm_tokens(cp)
        await asyncio.to_thread(retire)
        assert "abcdef" not in kubeadm_tokens(cp)

        # a hop signed with another key is refused by the tunnel server: nothing reaches the cluster
        forged = await asyncio.to_thread(
            run_step, session_factory, cluster, addons=(broken,), key=assertion_key("not-the-internal-secret")
        )
        assert not forged.ready
        assert isinstance(forged.error, AddonApplyError)
        assert "401" in forged.message
