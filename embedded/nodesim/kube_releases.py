"""Which real Kubernetes releases this machine has: the folders ``scripts/kube-bin.sh`` builds.

Owned by ``nodesim``; called by ``kaas up`` (the composition root, which decides between the real programs
and the stand-in and which versions its region offers) and by the tests. The layout is the script's:
``<cache>/kube/<version>/`` with every program of a control plane side by side and the ``.built`` stamp the
script writes last, so a folder still being built (``<version>.partial``) or cut short is never offered.
``<cache>`` is ``$KAAS_CACHE_DIR``, else ``$XDG_CACHE_HOME/kaas``, else ``~/.cache/kaas``
(``kube_cache_dir`` works it out from the environment it is given; nothing here reads ``os.environ``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

CONTROL_PLANE_PROGRAMS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
BUILT_STAMP = ".built"
_VERSION = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")


def kube_cache_dir(environ: Mapping[str, str], *, home: Path) -> Path:
    """The cache ``scripts/kube-bin.sh`` builds into, as it works it out."""
    if environ.get("KAAS_CACHE_DIR"):
        return Path(environ["KAAS_CACHE_DIR"])
    return Path(environ.get("XDG_CACHE_HOME") or home / ".cache") / "kaas"


def version_key(version: str) -> tuple[int, int, int]:
    """``v1.37.2`` → ``(1, 37, 2)``, for sorting; ``ValueError`` for anything else."""
    match = _VERSION.match(version)
    if match is None:
        raise ValueError(f"not a Kubernetes release version: {version!r}")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch)


def is_complete_release(folder: Path) -> bool:
    """Whether ``folder`` can run a whole control plane: stamped, every program executable, kwok's stages."""
    if not (folder / BUILT_STAMP).is_file() or not (folder / "kwok-stages.yaml").is_file():
        return False
    return all(
        (folder / name).is_file() and os.access(folder / name, os.X_OK) for name in CONTROL_PLANE_PROGRAMS
    )


def built_releases(cache_dir: Path) -> dict[str, Path]:
    """Every complete release in ``cache_dir``, oldest first: ``{"v1.36.3": <folder>, "v1.37.2": ...}``."""
    kube = cache_dir / "kube"
    if not kube.is_dir():
        return {}
    found: dict[str, Path] = {}
    for folder in kube.iterdir():
        if _VERSION.match(folder.name) and is_complete_release(folder):
            found[folder.name] = folder
    return {version: found[version] for version in sorted(found, key=version_key)}
