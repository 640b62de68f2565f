"""Node bootstrap: what a new server is told at first boot (cloud-init user-data), and the manifests kaas
applies in every user cluster (package data under ``manifests/``: links to their one source,
``deploy/agent/`` of the repository, which the wheel carries as files)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def rbac_manifest() -> Path:
    """``kaas-rbac.yaml``: the RBAC every user cluster gets for kaas's agent and the kaas groups.

    Found through the package, so an installed wheel has it as a checkout does.
    """
    return _manifest("kaas-rbac.yaml")


def agent_deployment_manifest() -> Path:
    """``kaas-agent.yaml``: the agent's Deployment, whose image ``agent_manifest`` sets per region."""
    return _manifest("kaas-agent.yaml")


def _manifest(name: str) -> Path:
    return Path(str(resources.files(__package__) / "manifests" / name))
