"""Node bootstrap: what a new server is told at first boot (cloud-init user-data), and the manifests kaas
applies in every user cluster (package data under ``manifests/``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def rbac_manifest() -> Path:
    """``kaas-rbac.yaml``: the RBAC every user cluster gets for kaas's agent and the kaas groups.

    Found through the package, so an installed wheel has it as a checkout does.
    """
    return Path(str(resources.files(__package__) / "manifests" / "kaas-rbac.yaml"))
