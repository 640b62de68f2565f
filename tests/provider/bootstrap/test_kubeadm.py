"""What kaas renders for a node is accepted by the real tools, for both Kubernetes minors scripts/kube-bin.sh
builds and for one and three control planes: ``cloud-init schema`` takes every user-data, ``kubeadm config
validate`` every kubeadm document, and ``kubeadm init phase certs all`` takes the CAs from the user-data and
issues certificates from them whose SANs hold the control-plane endpoint (and the floating IP).

The programs come from ``KAAS_KUBE_BIN_DIR`` or the kube-bin.sh cache (``tests.nodesim.test_kube_real``); the
tests fail instead of skipping when services are required (``KAAS_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import base64
import ipaddress
import shutil
import subprocess
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from kaas_api.clusters.schemas import MAX_LABELS, MAX_LABELS_CHARACTERS, MAX_TAINTS_CHARACTERS
from provider.bootstrap.cloud_init import (
    KUBEADM_CONFIG_PATH,
    USER_DATA_LIMIT_BASE64,
    BootstrapError,
    NodeBootstrap,
    render_user_data,
)
from provider.bootstrap.kubeadm import CERTIFICATES_DIR, endpoint_host
from provider.bootstrap.node_binaries import MIRROR, NodeBinaries
from provider.bootstrap.pki import ClusterPki, ca_cert_hash
from tests.conftest import IN_CI
from tests.nodesim.test_kube_real import KUBE_VERSIONS, release_dir
from tests.provider.bootstrap.samples import (
    AGENT_TOKEN,
    control_plane_node,
    join_material,
    sample_pki,
    worker_node,
)

pytestmark = pytest.mark.kube_real

VIP = "10.0.0.200"  # the Octavia VIP in front of three control planes
FIRST_SERVER = "10.0.0.11"  # the single control plane's own address
FLOATING_IP = "203.0.113.7"
MIRROR_KEY = (
    "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n"
    + "\n".join(
        "mQINBGMHXwMBEADCbq1Cl7cp+ni4cmVNpGQKlQb1iTskCGhpgWjIGPyPwMnDXBf9y3EGJZEa8P6Pp" for _ in range(40)
    )
    + "\n=AbCd\n-----END PGP PUBLIC KEY BLOCK-----\n"
)
MIRROR_BINARIES = NodeBinaries(
    source=MIRROR,
    base_image="debian-13",
    images={},
    mirror_url="https://mirror.example.internal/kubernetes/core:/stable:/v1.36/deb",
    mirror_key=MIRROR_KEY,
)


@dataclass(frozen=True)
class Case:
    version: str  # v1.36.3
    control_planes: int

    @property
    def id(self) -> str:
        return f"{self.version}-{self.control_planes}cp"


CASES = [Case(version, count) for version in KUBE_VERSIONS for count in (1, 3)]


def kubeadm(version: str) -> Path:
    return release_dir(version) / "kubeadm"


def cloud_init() -> str:
    binary = shutil.which("cloud-init")
    if binary is None:
        message = "cloud-init is not installed; .ci/run installs it (apt-get install -y cloud-init)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return binary


def run(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, timeout=timeout, check=False
    )


def cluster_nodes(case: Case, *, binaries: NodeBinaries | None = None) -> dict[str, NodeBootstrap]:
    """Every node of a cluster as the reconciler renders it: the first control plane initializes (its own
    address is not known before it exists when it is alone), the others and the workers join the
    endpoint."""
    version = case.version.lstrip("v")
    endpoint = f"https://{VIP if case.control_planes == 3 else FIRST_SERVER}:6443"
    extra: dict[str, Any] = {"kubernetes_version": version, "floating_ip": FLOATING_IP}
    if binaries is not None:
        extra["binaries"] = binaries
    nodes = {
        "cp-1": control_plane_node(
            node_name="kaas-4f1c2d3e-cp-1",
            api_endpoint=endpoint if case.control_planes == 3 else None,
            **extra,
        )
    }
    for slot in range(2, case.control_planes + 1):
        nodes[f"cp-{slot}"] = control_plane_node(
            initializes=False, node_name=f"kaas-4f1c2d3e-cp-{slot}", api_endpoint=endpoint, **extra
        )
    nodes["worker"] = worker_node(api_endpoint=endpoint, **extra)
    return nodes


def written_files(user_data: str) -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in yaml.safe_load(user_data)["write_files"]}


def kubeadm_documents(user_data: str) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(written_files(user_data)[KUBEADM_CONFIG_PATH]["content"]))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("source", ["image", "mirror"])
def test_every_user_data_passes_cloud_init_schema(tmp_path: Path, case: Case, source: str) -> None:
    binary = cloud_init()
    nodes = cluster_nodes(case, binaries=MIRROR_BINARIES if source == "mirror" else None)
    for name, node in nodes.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(render_user_data(node))
        result = run(binary, "schema", "--config-file", path)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        assert "Valid cloud-config" in result.stdout


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_every_kubeadm_document_passes_kubeadm_config_validate(tmp_path: Path, case: Case) -> None:
    program = kubeadm(case.version)
    for name, node in cluster_nodes(case).items():
        path = tmp_path / f"{name}-kubeadm.yaml"
        path.write_text(written_files(render_user_data(node))[KUBEADM_CONFIG_PATH]["content"])
        result = run(program, "config", "validate", "--config", path)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"


def test_kubeadm_config_validate_refuses_what_kaas_must_not_render(tmp_path: Path) -> None:
    """The check above can fail: the same kubeadm refuses a broken CIDR."""
    node = worker_node(api_endpoint=f"https://{VIP}:6443", kubernetes_version=KUBE_VERSIONS[-1].lstrip("v"))
    documents = kubeadm_documents(render_user_data(control_plane_node(api_endpoint=node.api_endpoint)))
    documents[1]["networking"]["podSubnet"] = "10.244.0.0/33"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    result = run(kubeadm(KUBE_VERSIONS[-1]), "config", "validate", "--config", path)
    assert result.returncode != 0


def _certs_from_kubeadm(
    tmp_path: Path, case: Case, node: NodeBootstrap, *, advertise_address: str | None
) -> Path:
    """Lay the user-data's authorities into a folder, run ``kubeadm init phase certs all`` on its config."""
    user_data = render_user_data(node)
    pki_dir = tmp_path / "pki"
    for path, entry in written_files(user_data).items():
        if path.startswith(CERTIFICATES_DIR + "/"):
            target = pki_dir / path.removeprefix(CERTIFICATES_DIR + "/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(entry["content"])
    documents = kubeadm_documents(user_data)
    documents[1]["certificatesDir"] = str(pki_dir)
    if advertise_address is not None:
        # what kubeadm detects on the VM (the address of its default route): this machine has another
        documents[0]["localAPIEndpoint"]["advertiseAddress"] = advertise_address
    config = tmp_path / "kubeadm.yaml"
    config.write_text(yaml.safe_dump_all(documents))
    result = run(kubeadm(case.version), "init", "phase", "certs", "all", "--config", config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Using existing ca certificate authority" in result.stdout
    assert "Using existing etcd/ca certificate authority" in result.stdout
    assert "Using existing front-proxy-ca certificate authority" in result.stdout
    assert 'Using the existing "sa" key' in result.stdout
    return pki_dir


def _issued_by(certificate: x509.Certificate, ca_pem: str) -> bool:
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    if certificate.issuer != ca.subject:
        return False
    certificate.verify_directly_issued_by(ca)  # raises unless ca's key signed it
    return True


def _sans(certificate: x509.Certificate) -> set[str]:
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} | set(
        names.get_values_for_type(x509.DNSName)
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_kubeadm_issues_certificates_from_the_user_datas_cas_with_the_endpoint_in_the_sans(
    tmp_path: Path, case: Case
) -> None:
    nodes = cluster_nodes(case)
    first = nodes["cp-1"]
    pki = first.join.authorities
    assert pki is not None
    endpoint = VIP if case.control_planes == 3 else FIRST_SERVER
    # one control plane: its endpoint is its own address, which kubeadm detects at boot
    advertise = None if case.control_planes == 3 else FIRST_SERVER
    pki_dir = _certs_from_kubeadm(tmp_path, case, first, advertise_address=advertise)

    apiserver = x509.load_pem_x509_certificate((pki_dir / "apiserver.crt").read_bytes())
    assert _issued_by(apiserver, pki.cluster_ca.public_pem)
    assert {endpoint, FLOATING_IP, "127.0.0.1"} <= _sans(apiserver)
    etcd_server = x509.load_pem_x509_certificate((pki_dir / "etcd" / "server.crt").read_bytes())
    assert _issued_by(etcd_server, pki.etcd_ca.public_pem)
    front_proxy = x509.load_pem_x509_certificate((pki_dir / "front-proxy-client.crt").read_bytes())
    assert _issued_by(front_proxy, pki.front_proxy_ca.public_pem)
    # kubeadm used kaas's authorities as they were: it rewrote none of them
    assert (pki_dir / "ca.crt").read_text() == pki.cluster_ca.public_pem
    assert (pki_dir / "sa.key").read_text() == pki.service_account.key_pem


def test_without_the_vip_in_the_config_the_apiserver_certificate_lacks_it(tmp_path: Path) -> None:
    """The SAN assertion above can fail: an endpoint kaas did not render is not in the certificate."""
    case = Case(KUBE_VERSIONS[-1], 3)
    first = replace(cluster_nodes(case)["cp-1"], api_endpoint=None, floating_ip=None)
    pki_dir = _certs_from_kubeadm(tmp_path, case, first, advertise_address=None)
    apiserver = x509.load_pem_x509_certificate((pki_dir / "apiserver.crt").read_bytes())
    assert VIP not in _sans(apiserver)


def test_kubeadm_refuses_a_ca_whose_key_is_not_its_own(tmp_path: Path) -> None:
    """...and the CA check can fail: a CA certificate with another CA's key is refused by kubeadm."""
    case = Case(KUBE_VERSIONS[-1], 3)
    first = cluster_nodes(case)["cp-1"]
    pki = first.join.authorities
    assert pki is not None
    mixed = replace(pki, cluster_ca=replace(pki.cluster_ca, key_pem=pki.etcd_ca.key_pem))
    broken = replace(first, join=replace(first.join, authorities=mixed))
    with pytest.raises(AssertionError):
        _certs_from_kubeadm(tmp_path, case, broken, advertise_address=None)


def _openssl_ca_hash(cert_pem: str, tmp_path: Path) -> str:
    """kubeadm's documented recipe for the discovery hash (openssl x509 -pubkey | openssl pkey -pubin ...)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    (tmp_path / "ca.crt").write_text(cert_pem)
    public = run("openssl", "x509", "-pubkey", "-noout", "-in", tmp_path / "ca.crt").stdout
    (tmp_path / "ca.pub").write_text(public)
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", str(tmp_path / "ca.pub"), "-outform", "der"],
        capture_output=True,
        check=True,
    ).stdout
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-hex"], input=der, capture_output=True, check=True
    )
    return "sha256:" + digest.stdout.decode().split()[-1]


def test_a_worker_pins_the_cluster_ca_by_the_hash_kubeadm_computes(tmp_path: Path) -> None:
    pki = sample_pki()
    worker = worker_node()
    discovery = kubeadm_documents(render_user_data(worker))[0]["discovery"]["bootstrapToken"]
    assert discovery["caCertHashes"] == [_openssl_ca_hash(pki.cluster_ca.public_pem, tmp_path)]
    assert discovery["caCertHashes"] == [ca_cert_hash(pki.cluster_ca.public_pem)]
    assert discovery["caCertHashes"] != [ca_cert_hash(pki.etcd_ca.public_pem)]
    assert discovery["apiServerEndpoint"] == "10.0.0.10:6443"


def _private_keys(pki: ClusterPki) -> list[str]:
    return [pair.key_pem for pair in pki.pairs()]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_a_workers_user_data_never_contains_a_ca_private_key(case: Case) -> None:
    nodes = cluster_nodes(case)
    worker_data = render_user_data(nodes["worker"])
    assert "PRIVATE KEY" not in worker_data
    assert AGENT_TOKEN not in worker_data
    for key in _private_keys(sample_pki()):
        body = key.splitlines()[1]  # a line of the key itself, however YAML folds the text
        assert body not in worker_data
    # while every control plane's does carry them, root-only
    for name, node in nodes.items():
        if name.startswith("cp-"):
            files = written_files(render_user_data(node))
            assert files[f"{CERTIFICATES_DIR}/ca.key"]["permissions"] == "0600"
            assert files[f"{CERTIFICATES_DIR}/ca.key"]["content"] == sample_pki().cluster_ca.key_pem


def test_a_worker_is_never_rendered_with_a_ca_key() -> None:
    with pytest.raises(BootstrapError, match="never carries a CA key"):
        render_user_data(worker_node(join=join_material(control_plane=True)))


def test_only_the_first_control_plane_initializes_and_applies_the_agent() -> None:
    nodes = cluster_nodes(Case(KUBE_VERSIONS[-1], 3))
    commands = {name: yaml.safe_load(render_user_data(node))["runcmd"] for name, node in nodes.items()}
    assert ["kubeadm", "init", "--config", KUBEADM_CONFIG_PATH] in commands["cp-1"]
    assert any(c[:1] == ["kubectl"] and "apply" in c for c in commands["cp-1"])
    for name in ("cp-2", "cp-3", "worker"):
        assert commands[name][-1] == ["kubeadm", "join", "--config", KUBEADM_CONFIG_PATH]
        assert not any(c[:1] == ["kubectl"] for c in commands[name])
    assert "controlPlane" in kubeadm_documents(render_user_data(nodes["cp-2"]))[0]
    assert "controlPlane" not in kubeadm_documents(render_user_data(nodes["worker"]))[0]


def test_the_join_token_of_the_first_node_expires_when_kaas_recorded() -> None:
    node = control_plane_node()
    token = kubeadm_documents(render_user_data(node))[0]["bootstrapTokens"][0]
    assert token["token"] == node.join.token
    assert token["ttl"] == "4h0m0s"  # samples: expires four hours after the render
    later = replace(node, join=replace(node.join, rendered_at=node.join.rendered_at + timedelta(minutes=90)))
    assert kubeadm_documents(render_user_data(later))[0]["bootstrapTokens"][0]["ttl"] == "2h30m0s"


def _largest_labels() -> dict[str, str]:
    """MAX_LABELS labels using the whole character budget, with the longest keys Kubernetes allows."""
    per_label = MAX_LABELS_CHARACTERS // MAX_LABELS
    labels = {}
    for i in range(MAX_LABELS):
        key = f"{'p' * 60}.example.com/{'n' * 40}{i:03d}"
        labels[key] = ("v" * (per_label - len(key)))[:63]
    return labels


def _largest_taints() -> list[dict[str, str]]:
    per_taint = MAX_TAINTS_CHARACTERS // 50
    effect = "PreferNoSchedule"
    taints = []
    for i in range(50):
        key = f"{'q' * 60}.example.com/{'t' * 40}{i:03d}"
        taints.append(
            {"key": key, "value": ("v" * (per_taint - len(key) - len(effect)))[:63], "effect": effect}
        )
    return taints


@pytest.mark.parametrize("role", ["first-control-plane", "control-plane", "worker"])
def test_the_largest_user_data_of_each_role_fits_novas_limit(role: str) -> None:
    """The largest case the API allows: a mirror region (key and URL), a three-node control plane, the
    longest names, and for workers as many labels and taints as the API takes."""
    binaries = replace(MIRROR_BINARIES, mirror_key=MIRROR_KEY * 2)
    long_name = "kaas-4f1c2d3e-" + "p" * 63 + "-abcde"
    common: dict[str, Any] = {"binaries": binaries, "node_name": long_name, "floating_ip": FLOATING_IP}
    if role == "worker":
        labels, taints = _largest_labels(), _largest_taints()
        assert sum(len(k) + len(v) for k, v in labels.items()) > MAX_LABELS_CHARACTERS * 0.95
        node = worker_node(labels=labels, taints=taints, **common)
    else:
        node = control_plane_node(
            initializes=role == "first-control-plane", api_endpoint=f"https://{VIP}:6443", **common
        )
    user_data = render_user_data(node)
    assert len(base64.b64encode(user_data.encode())) <= USER_DATA_LIMIT_BASE64


def test_user_data_over_novas_limit_is_refused_before_it_reaches_nova() -> None:
    too_many = {f"example.com/k{i:04d}": "v" * 63 for i in range(700)}  # beyond what the API accepts
    with pytest.raises(BootstrapError, match="over Nova's limit"):
        render_user_data(worker_node(labels=too_many))


def test_the_endpoint_host_is_read_from_every_form_kaas_writes() -> None:
    assert endpoint_host("https://10.0.0.200:6443") == "10.0.0.200"
    assert endpoint_host("10.0.0.200:6443") == "10.0.0.200"
    assert ipaddress.ip_address(endpoint_host("https://[fd00::1]:6443")).version == 6
