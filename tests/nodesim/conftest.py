"""Fixtures for the simulated nodes' tests: a real simcloud over HTTP, servers created with openstacksdk.

Servers are created as the tenant (cloud ``sim``) with user-data rendered by kaas's own renderer
(``provider.bootstrap.cloud_init``), tagged and labelled the way kaas's OpenStack driver does it.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import openstack
import pytest
from openstack.config import loader

from agents.config import AgentConfig
from provider.bootstrap import rbac_manifest
from provider.bootstrap.cloud_init import NodeBootstrap, render_user_data
from provider.bootstrap.pki import ClusterPki
from simcloud.testing import SimCloudHandle, run_simcloud
from tests.provider.bootstrap.samples import join_material

KAAS_RBAC_MANIFEST = rbac_manifest()
AGENT_TOKEN = "kaas-agent-token-do-not-log-0123456789"
TEST_ENDPOINT = "https://10.0.0.10:6443"


def connect(clouds_yaml: Path, cloud: str) -> Any:
    region = loader.OpenStackConfig(config_files=[str(clouds_yaml)], load_envvars=False).get_one(
        cloud=cloud, api_timeout=30
    )
    return openstack.connection.Connection(config=region)


def kaas_user_data(
    *,
    cluster_id: str,
    node_name: str,
    role: str,
    tunnel_url: str = "ws://127.0.0.1:9/v1/tunnel",
    agent_token: str | None = AGENT_TOKEN,
    kubernetes_version: str = "1.29.4",
    labels: dict[str, str] | None = None,
    api_endpoint: str | None = TEST_ENDPOINT,
    pki: ClusterPki | None = None,
    join_changes: Mapping[str, Any] | None = None,
    initializes: bool | None = None,
) -> str:
    """``join_changes``: fields of the node's ``JoinMaterial`` replaced (a corrupt artefact).
    ``initializes``: whether a control plane runs kubeadm init (by default, one with an agent token does);
    a joining control plane gets the agent's config too, as kaas renders every control plane."""
    if initializes is None:
        initializes = role == "control-plane" and agent_token is not None  # else a node joining the first
    join = join_material(control_plane=role == "control-plane", initializes=initializes, pki=pki)
    return render_user_data(
        NodeBootstrap(
            cluster_id=cluster_id,
            node_name=node_name,
            role=role,
            kubernetes_version=kubernetes_version,
            pod_cidr="10.244.0.0/16",
            service_cidr="10.96.0.0/12",
            # the endpoint kubeadm init is given (controlPlaneEndpoint): nodesim routes it to the cluster's
            # apiserver, as a load balancer or a DNS name would (the servers here have no network)
            api_endpoint=api_endpoint,
            tunnel_url=tunnel_url,
            agent_token=agent_token if role == "control-plane" else None,  # as kaas renders them
            node_pool=None if role == "control-plane" else "workers",
            labels=labels or {},
            join=replace(join, **(join_changes or {})),
        )
    )


def create_kaas_server(
    conn: Any,
    *,
    cluster_id: str,
    name: str,
    role: str,
    user_data: str,
    image: str = "fake-image",
    flavor: str = "m1.tiny",
) -> Any:
    """Create a server the way kaas's OpenStack driver does: tag, metadata and base64 user-data."""
    return conn.compute.create_server(
        name=name,
        flavor_id=conn.compute.find_flavor(flavor, ignore_missing=False).id,
        image_id=conn.image.find_image(image, ignore_missing=False).id,
        networks="none",
        user_data=base64.b64encode(user_data.encode()).decode(),
        metadata={"kaas-cluster": cluster_id, "kaas-role": role},
        tags=[f"kaas-cluster={cluster_id}"],
    )


def wait_until(predicate: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def new_cluster_id() -> str:
    return str(uuid.uuid4())


@dataclass
class RecordingRunner:
    """An agent runner that records its configs and runs until told to stop (no tunnel needed)."""

    started: list[AgentConfig] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    async def __call__(self, config: AgentConfig, *, stop: asyncio.Event) -> None:
        self.started.append(config)
        try:
            await stop.wait()
        finally:
            self.stopped.append(config.cluster_id)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimCloudHandle]:
    with run_simcloud(state_dir=tmp_path / "sim", boot_delay=0.2) as handle:
        yield handle


@pytest.fixture
def tenant(sim: SimCloudHandle) -> Iterator[Any]:
    conn = connect(sim.clouds_yaml, sim.cloud_name)
    yield conn
    conn.close()
