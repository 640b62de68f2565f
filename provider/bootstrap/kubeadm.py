"""kubeadm's configuration for one node, as data: the documents ``kubeadm init`` or ``kubeadm join`` reads.

Called by the user-data renderer (``provider.bootstrap.cloud_init``), which dumps them with
``yaml.safe_dump_all``; no string templates, so nothing a user chose (a label, a taint) can inject a key.
The API is ``kubeadm.k8s.io/v1beta4``, which both Kubernetes minors kaas builds (``scripts/kube-bin.sh``)
read; ``tests/provider/bootstrap/test_kubeadm.py`` runs the real ``kubeadm config validate`` and
``kubeadm init phase certs all`` on what this module renders.

Three shapes, as Cluster API's kubeadm bootstrap provider makes them:
- the first control-plane node: InitConfiguration (the join wave's bootstrap token, created by ``kubeadm
  init`` itself) + ClusterConfiguration (version, endpoint, SANs, CIDRs, local etcd);
- a further control-plane node: JoinConfiguration with ``controlPlane``; the CAs are already on its disk
  (the user-data wrote them), so kubeadm issues its certificates from the cluster's own authorities;
- a worker: JoinConfiguration with the bootstrap token and the cluster CA's hash, nothing more.
Every kubelet runs with ``cloud-provider: external`` (the OpenStack cloud controller initialises nodes).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from provider.bootstrap.pki import ENCRYPTION_ALGORITHM

KUBEADM_API_VERSION = "kubeadm.k8s.io/v1beta4"
CRI_SOCKET = "unix:///var/run/containerd/containerd.sock"
CERTIFICATES_DIR = "/etc/kubernetes/pki"
API_PORT = 6443
BOOTSTRAP_TOKEN_GROUP = "system:bootstrappers:kubeadm:default-node-token"  # noqa: S105 (a group)
# the kaas agent runs on the control plane with the host's network and reaches its apiserver on loopback
# (it must work before any CNI exists: the CNI itself comes through the agent), so loopback is a SAN
LOOPBACK_SANS = ("127.0.0.1", "localhost")


class KubeadmConfigError(ValueError):
    """The node's kubeadm input is inconsistent (a worker without a CA hash, an endpoint without a host)."""


def kubeadm_version(kubernetes_version: str) -> str:
    """kubeadm's spelling: ``v1.36.3``."""
    return kubernetes_version if kubernetes_version.startswith("v") else f"v{kubernetes_version}"


def _split_endpoint(endpoint: str) -> tuple[str, int]:
    """Host and port of ``https://host:port`` or ``host:port`` (IPv6 hosts in brackets)."""
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    try:
        port = parts.port or API_PORT
    except ValueError as exc:
        raise KubeadmConfigError(f"the API endpoint {endpoint!r} has no valid port") from exc
    if not parts.hostname:
        raise KubeadmConfigError(f"the API endpoint {endpoint!r} has no host")
    return parts.hostname, port


def endpoint_host(endpoint: str) -> str:
    """The host of an API endpoint, as a SAN names it."""
    return _split_endpoint(endpoint)[0]


def endpoint_address(endpoint: str) -> str:
    """``host:port`` of an API endpoint, as ``controlPlaneEndpoint`` and discovery want it."""
    host, port = _split_endpoint(endpoint)
    try:
        is_v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        is_v6 = False
    return f"[{host}]:{port}" if is_v6 else f"{host}:{port}"


def _args(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    """v1beta4's ordered ``extraArgs`` list."""
    return [{"name": name, "value": value} for name, value in pairs]


@dataclass(frozen=True)
class ClusterShape:
    """What every node of one cluster agrees on."""

    cluster_id: str
    kubernetes_version: str
    pod_cidr: str
    service_cidr: str
    # https://host:port: the load balancer's VIP (3 control planes) or the first server's address (1); None
    # while the single control plane's address is not known yet (kubeadm then uses the address it detects,
    # which it also puts into the apiserver certificate)
    api_endpoint: str | None
    floating_ip: str | None = None  # a public address in front of the endpoint, if the region gives one
    extra_sans: tuple[str, ...] = ()

    @property
    def cluster_name(self) -> str:
        return f"kaas-{self.cluster_id[:8]}"

    def cert_sans(self) -> list[str]:
        sans: list[str] = []
        for san in (
            *([endpoint_host(self.api_endpoint)] if self.api_endpoint else []),
            *([self.floating_ip] if self.floating_ip else []),
            *self.extra_sans,
            *LOOPBACK_SANS,
        ):
            if san not in sans:
                sans.append(san)
        return sans


@dataclass(frozen=True)
class NodeRegistration:
    """One node's registration: its name (the server's), labels and taints of its pool."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    # None: kubeadm's default for the role (the control-plane taint on control-plane nodes, none on workers)
    taints: list[dict[str, str]] | None = None

    def as_dict(self) -> dict[str, Any]:
        kubelet_args = [("cloud-provider", "external")]
        if self.labels:
            kubelet_args.append(("node-labels", ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))))
        registration: dict[str, Any] = {
            "name": self.name,
            "criSocket": CRI_SOCKET,
            "imagePullPolicy": "IfNotPresent",
            "kubeletExtraArgs": _args(kubelet_args),
        }
        if self.taints is not None:
            registration["taints"] = [dict(t) for t in self.taints]
        return registration


def cluster_configuration(shape: ClusterShape) -> dict[str, Any]:
    document: dict[str, Any] = {
        "apiVersion": KUBEADM_API_VERSION,
        "kind": "ClusterConfiguration",
        "clusterName": shape.cluster_name,
        "kubernetesVersion": kubeadm_version(shape.kubernetes_version),
        "certificatesDir": CERTIFICATES_DIR,
        "encryptionAlgorithm": ENCRYPTION_ALGORITHM,
        "networking": {
            "podSubnet": shape.pod_cidr,
            "serviceSubnet": shape.service_cidr,
            "dnsDomain": "cluster.local",
        },
        "apiServer": {"certSANs": shape.cert_sans()},
        "controllerManager": {"extraArgs": _args([("cloud-provider", "external")])},
        "etcd": {"local": {"dataDir": "/var/lib/etcd"}},
    }
    if shape.api_endpoint:
        document["controlPlaneEndpoint"] = endpoint_address(shape.api_endpoint)
    return document


def token_ttl(expires_at: datetime, *, now: datetime) -> str:
    """kubeadm's ``ttl`` for a token kaas recorded as expiring at ``expires_at`` (whole seconds, at least 1).

    kubeadm defaults ``ttl`` and refuses it together with ``expires``, so the time left is sent: the
    cluster's copy then lives as long as kaas's record plus the node's boot time, and kaas deletes it
    through the tunnel once the wave joined anyway."""
    seconds = max(1, int((expires_at - now).total_seconds()))
    return f"{seconds // 3600}h{seconds % 3600 // 60}m{seconds % 60}s"


def init_documents(
    shape: ClusterShape, *, node: NodeRegistration, join_token: str, token_expires_at: datetime, now: datetime
) -> list[dict[str, Any]]:
    """The first control-plane node: ``kubeadm init`` creates the wave's bootstrap token in the cluster."""
    init: dict[str, Any] = {
        "apiVersion": KUBEADM_API_VERSION,
        "kind": "InitConfiguration",
        "bootstrapTokens": [
            {
                "token": join_token,
                "description": f"kaas join token of cluster {shape.cluster_id}",
                "ttl": token_ttl(token_expires_at, now=now),
                "usages": ["signing", "authentication"],
                "groups": [BOOTSTRAP_TOKEN_GROUP],
            }
        ],
        "nodeRegistration": node.as_dict(),
        "localAPIEndpoint": {"bindPort": API_PORT},
    }
    return [init, cluster_configuration(shape)]


def join_documents(
    shape: ClusterShape,
    *,
    node: NodeRegistration,
    join_token: str,
    ca_cert_hash: str,
    control_plane: bool,
) -> list[dict[str, Any]]:
    """A further control-plane node or a worker: discovery by bootstrap token, the cluster CA pinned."""
    if not shape.api_endpoint:
        raise KubeadmConfigError("a joining node needs the cluster's API endpoint")
    if not ca_cert_hash.startswith("sha256:"):
        raise KubeadmConfigError("a joining node needs the cluster CA's hash (sha256:<hex>)")
    join: dict[str, Any] = {
        "apiVersion": KUBEADM_API_VERSION,
        "kind": "JoinConfiguration",
        "discovery": {
            "bootstrapToken": {
                "apiServerEndpoint": endpoint_address(shape.api_endpoint),
                "token": join_token,
                "caCertHashes": [ca_cert_hash],
            },
        },
        "nodeRegistration": node.as_dict(),
    }
    if control_plane:
        join["controlPlane"] = {"localAPIEndpoint": {"bindPort": API_PORT}}
    return [join]
