"""How a node gets its programs, per region: an image per version, or packages from a mirror."""

from __future__ import annotations

import pytest
import yaml

from provider.bootstrap.cloud_init import render_user_data
from provider.bootstrap.node_binaries import IMAGE, MIRROR, NodeBinaries, NodeBinariesError
from tests.provider.bootstrap.samples import worker_node
from tests.provider.bootstrap.test_kubeadm import MIRROR_BINARIES, MIRROR_KEY


def test_an_image_region_boots_the_image_it_maps_the_version_to() -> None:
    binaries = NodeBinaries(source=IMAGE, base_image="ubuntu-24.04", images={"1.36.3": "kaas-node-1.36.3"})
    assert binaries.image_for("1.36.3") == "kaas-node-1.36.3"
    assert binaries.image_for("1.37.2") == "ubuntu-24.04"  # unmapped: the region's image
    document = yaml.safe_load(render_user_data(worker_node(binaries=binaries)))
    assert "packages" not in document
    assert "apt" not in document


def test_a_mirror_region_installs_the_exact_version_from_its_mirror() -> None:
    document = yaml.safe_load(
        render_user_data(worker_node(binaries=MIRROR_BINARIES, kubernetes_version="1.36.3"))
    )
    assert MIRROR_BINARIES.image_for("1.36.3") == "debian-13"
    source = document["apt"]["sources"]["kaas-kubernetes.list"]
    assert source["source"] == f"deb [signed-by=$KEY_FILE] {MIRROR_BINARIES.mirror_url} /"
    assert source["key"] == MIRROR_KEY
    assert ["kubeadm", "1.36.3-*"] in document["packages"]
    assert ["kubelet", "1.36.3-*"] in document["packages"]
    assert "containerd" in document["packages"]
    assert ["systemctl", "restart", "containerd"] in document["runcmd"]
    paths = [f["path"] for f in document["write_files"]]
    assert "/etc/containerd/config.toml" in paths


@pytest.mark.parametrize(
    "url",
    [
        "https://mirror.example.com/deb /\ndeb http://evil.example.com/ /",
        "https://mirror.example.com/deb [trusted=yes]",
        "ftp://mirror.example.com/deb",
        "https://user:secret@mirror.example.com/deb",
        "https://mirror.example.com/deb?x=1",
    ],
)
def test_a_mirror_url_that_could_change_the_apt_line_is_refused(url: str) -> None:
    with pytest.raises(NodeBinariesError, match="plain http"):
        NodeBinaries(source=MIRROR, base_image="debian-13", images={}, mirror_url=url, mirror_key=MIRROR_KEY)


def test_a_mirror_region_needs_a_key_that_is_a_public_key_block() -> None:
    with pytest.raises(NodeBinariesError, match="needs its URL and key"):
        NodeBinaries(source=MIRROR, base_image="d", images={}, mirror_url="https://m.example.com/deb")
    with pytest.raises(NodeBinariesError, match="OpenPGP"):
        NodeBinaries(
            source=MIRROR,
            base_image="d",
            images={},
            mirror_url="https://m.example.com/deb",
            mirror_key="-----BEGIN PGP PRIVATE KEY BLOCK-----\nxx\n-----END PGP PRIVATE KEY BLOCK-----\n",
        )


def test_an_unknown_source_is_refused() -> None:
    with pytest.raises(NodeBinariesError, match="unknown node binaries source"):
        NodeBinaries(source="curl-pipe-bash", base_image="d", images={})
