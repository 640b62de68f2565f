"""How a node gets containerd, kubelet, kubeadm and kubectl: chosen per region.

- ``image`` (the usual choice): the region maps each Kubernetes version it allows to an image with the
  programs preinstalled (``regions.node_images``); the user-data installs nothing.
- ``mirror``: the region names a package mirror (an air-gapped cloud has one) laid out as the Kubernetes
  project's own package repositories (``deb <url> /``, signed by the region's key); cloud-init's ``apt`` and
  ``packages`` modules install the programs of the node's exact version on the region's base image.

Called by the reconciler (which image a server boots) and by the user-data renderer (what cloud-init
installs). The mirror URL and key are an operator's input: they are checked here before they reach a
cloud-config (``kaas_core.package_mirror``: the URL becomes an apt source line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kaas_core.package_mirror import is_mirror_key, is_mirror_url

IMAGE = "image"
MIRROR = "mirror"
SOURCES = (IMAGE, MIRROR)
PACKAGES = ("kubelet", "kubeadm", "kubectl")

_VERSION = re.compile(r"^v?([0-9]+)\.([0-9]+)\.([0-9]+)$")

CONTAINERD_CONFIG_PATH = "/etc/containerd/config.toml"
# containerd's version 2 config (containerd 1.7 reads it, 2.x migrates it): runc with the systemd cgroup
# driver, which kubelet uses by default; Debian's containerd package ships with cgroupfs
CONTAINERD_CONFIG = """version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true
"""


class NodeBinariesError(ValueError):
    """The region's choice cannot give this node its programs (no image for the version, a bad mirror)."""


def check_mirror_url(url: str) -> str:
    if not is_mirror_url(url):
        raise NodeBinariesError(
            f"package mirror URL {url!r} is not a plain http(s) URL (host, optional port and path only)"
        )
    return url


def check_mirror_key(key: str) -> str:
    if not is_mirror_key(key):
        raise NodeBinariesError("the package mirror's key is not an ASCII-armoured OpenPGP public key block")
    return key


def package_version(kubernetes_version: str) -> str:
    """The Debian version pattern of one release in the Kubernetes project's repositories (``1.36.3-*``)."""
    match = _VERSION.match(kubernetes_version)
    if match is None:
        raise NodeBinariesError(f"Kubernetes version {kubernetes_version!r} is not major.minor.patch")
    return f"{match.group(1)}.{match.group(2)}.{match.group(3)}-*"


@dataclass(frozen=True)
class NodeBinaries:
    """A region's choice, as the reconciler loaded it from the region's row."""

    source: str  # IMAGE | MIRROR
    base_image: str  # the region's image: the fallback of IMAGE, the OS image of MIRROR
    images: dict[str, str]  # Kubernetes version -> image (IMAGE)
    mirror_url: str | None = None
    mirror_key: str | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise NodeBinariesError(
                f"unknown node binaries source {self.source!r}: one of {', '.join(SOURCES)}"
            )
        if self.source == MIRROR:
            if not self.mirror_url or not self.mirror_key:
                raise NodeBinariesError("a region whose nodes install from a mirror needs its URL and key")
            check_mirror_url(self.mirror_url)
            check_mirror_key(self.mirror_key)

    def image_for(self, kubernetes_version: str) -> str:
        """The image a server of this version boots."""
        if self.source == IMAGE:
            return self.images.get(kubernetes_version, self.base_image)
        return self.base_image

    def cloud_config(self, kubernetes_version: str) -> dict[str, Any]:
        """The cloud-config keys that install the programs (nothing for an image that has them)."""
        if self.source == IMAGE:
            return {}
        assert self.mirror_url is not None
        assert self.mirror_key is not None
        version = package_version(kubernetes_version)
        return {
            "package_update": True,
            "apt": {
                "sources": {
                    "kaas-kubernetes.list": {
                        "source": f"deb [signed-by=$KEY_FILE] {self.mirror_url} /",
                        "key": self.mirror_key,
                    }
                }
            },
            "packages": [[name, version] for name in PACKAGES] + ["containerd"],
        }
