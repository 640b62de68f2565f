"""Fixtures for the agent's tests: a real Kubernetes stand-in with kaas's RBAC, and forwarders onto it.

The stand-in (``simcloud.kube.testing.run_kube_standin``) is an HTTP kube-apiserver emulator on
127.0.0.1:<free port> with bearer tokens, impersonation and RBAC; it loads
``provider/bootstrap/manifests/kaas-rbac.yaml`` exactly as a user cluster would have it.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agents.forward import ApiserverForwarder
from agents.kube import ApiserverConnection, kubeconfig_connection
from provider.bootstrap import rbac_manifest
from simcloud.kube.identity import Identity
from simcloud.kube.testing import KubeStandinHandle, run_kube_standin

KAAS_RBAC_MANIFEST = rbac_manifest()

AGENT_TOKEN = "agent-service-account-token"
ADMIN_TOKEN = "cluster-admin-token"
AGENT_IDENTITY = Identity.service_account("kaas-system", "kaas-agent")
ADMIN_IDENTITY = Identity("kubernetes-admin", ("system:masters",))
KUBERNETES_VERSION = "v1.30.2"

# The groups kaas sends for each project role (see kaas-rbac.yaml).
VIEWER_GROUPS = ("kaas:authenticated", "kaas:viewer")
MEMBER_GROUPS = ("kaas:authenticated", "kaas:member")

# Lets the agent read nodes for its status report; kaas-rbac.yaml grants only impersonation so far.
@pytest.fixture
def kube() -> Iterator[KubeStandinHandle]:
    """A fresh stand-in apiserver with kaas's RBAC loaded."""
    with run_kube_standin(
        version=KUBERNETES_VERSION,
        tokens={AGENT_TOKEN: AGENT_IDENTITY, ADMIN_TOKEN: ADMIN_IDENTITY},
        manifest_files=[KAAS_RBAC_MANIFEST],
    ) as handle:
        yield handle


@pytest.fixture
def agent_connection(kube: KubeStandinHandle, tmp_path: Path) -> ApiserverConnection:
    """The agent's connection, loaded from a kubeconfig with the agent's service account token."""
    return kubeconfig_connection(kube.write_kubeconfig(tmp_path / "agent.kubeconfig", token=AGENT_TOKEN))


@pytest.fixture
async def forwarder(agent_connection: ApiserverConnection) -> AsyncIterator[ApiserverForwarder]:
    async with ApiserverForwarder(agent_connection) as forwarder:
        yield forwarder


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextmanager
def silent_listener() -> Iterator[int]:
    """A loopback port that completes TCP handshakes (the kernel backlog) but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]
