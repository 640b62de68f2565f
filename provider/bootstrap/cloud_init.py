"""Renders the ``#cloud-config`` user-data of one node, and reads the kaas files back out of it.

Called by the reconciler's server steps (``provider.reconciler.steps``) for every server it creates, and by
the simulator's "boot a node from its user-data" step (``parse_agent_config``). The document is built as a
Python dict and dumped with ``yaml.safe_dump``: no string templating, so a label value can never inject
YAML. Labels and taints are validated with Kubernetes' rules before anything is rendered.

What a node's first boot does, in cloud-init's order:
1. ``write_files``:
   - ``/etc/kaas/node.yaml`` (0644): role, cluster id, Kubernetes version, CIDRs, API endpoint, labels,
     taints (kaas's own summary; read by nodesim);
   - ``/etc/kaas/kubeadm.yaml`` (0600): the kubeadm documents (``provider.bootstrap.kubeadm``) with the
     join wave's bootstrap token;
   - control-plane nodes only: the cluster's authorities under ``/etc/kubernetes/pki`` (``ca``, ``etcd/ca``,
     ``front-proxy-ca``, ``sa``; keys 0600), so that every control-plane node issues its certificates from
     kaas's CAs; ``/etc/kaas/agent.yaml`` (0600: the agent's tunnel URL and token); and on the first one
     ``/etc/kaas/agent-manifest.yaml`` (0600: the agent's RBAC, Secret and Deployment,
     ``provider.bootstrap.agent_manifest``);
   - the kernel modules and sysctls Kubernetes needs, and containerd's config when the node installs it;
2. ``apt`` + ``packages``: only when the region installs the programs from a mirror (``node_binaries``);
3. ``runcmd`` (argument lists, never a shell): load the modules, then ``kubeadm init`` and
   ``kubectl apply`` of the agent manifest on the first control-plane node, ``kubeadm join`` elsewhere.

Secrets: a worker's user-data carries neither the agent token nor any CA key, only the bootstrap token and
the cluster CA's hash (``render_user_data`` refuses otherwise): a workload on a worker that reads the
metadata service or the node's disk finds nothing to impersonate the cluster's agent or a control plane
with. On the control plane the secret files are readable by root only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from provider.bootstrap.agent_manifest import DEFAULT_AGENT_IMAGE, agent_objects
from provider.bootstrap.kubeadm import (
    CERTIFICATES_DIR,
    ClusterShape,
    KubeadmConfigError,
    NodeRegistration,
    init_documents,
    join_documents,
)
from provider.bootstrap.node_binaries import (
    CONTAINERD_CONFIG,
    CONTAINERD_CONFIG_PATH,
    IMAGE,
    NodeBinaries,
    NodeBinariesError,
)
from provider.bootstrap.pki import ClusterPki

NODE_CONFIG_PATH = "/etc/kaas/node.yaml"
AGENT_CONFIG_PATH = "/etc/kaas/agent.yaml"
KUBEADM_CONFIG_PATH = "/etc/kaas/kubeadm.yaml"
AGENT_MANIFEST_PATH = "/etc/kaas/agent-manifest.yaml"
ADMIN_KUBECONFIG = "/etc/kubernetes/admin.conf"
# Nova refuses user-data larger than this (base64 of it, in fact: see USER_DATA_LIMIT_BASE64)
USER_DATA_LIMIT_BASE64 = 65535
MODULES = ("overlay", "br_netfilter")
SYSCTLS = {
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
    "net.ipv4.ip_forward": "1",
}
CLOUD_CONFIG_HEADER = "#cloud-config\n"
CONTROL_PLANE = "control-plane"
WORKER = "worker"

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


class BootstrapError(ValueError):
    """The node's bootstrap input is invalid (a bad label or taint, a missing field)."""


def validate_label_key(key: str) -> None:
    """Kubernetes' rule: an optional DNS-subdomain prefix (≤253) and ``/``, then a name (≤63)."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        raise BootstrapError(f"invalid label or taint key prefix {prefix!r}: must be a DNS subdomain")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        raise BootstrapError(
            f"invalid label or taint key {key!r}: the name must be 1-63 characters of [A-Za-z0-9-_.], "
            "starting and ending with an alphanumeric"
        )


def validate_label_value(value: str) -> None:
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        raise BootstrapError(
            f"invalid label or taint value {value!r}: at most 63 characters of [A-Za-z0-9-_.], "
            "starting and ending with an alphanumeric"
        )


def validate_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise BootstrapError("labels must map strings to strings")
        validate_label_key(key)
        validate_label_value(value)
    return dict(sorted(labels.items()))


def validate_taints(taints: list[dict[str, str]]) -> list[dict[str, str]]:
    clean = []
    for taint in taints:
        if not isinstance(taint, dict) or set(taint) - {"key", "value", "effect"}:
            raise BootstrapError(f"invalid taint {taint!r}: only key, value and effect are allowed")
        key, value, effect = taint.get("key", ""), taint.get("value", ""), taint.get("effect", "")
        if not all(isinstance(v, str) for v in (key, value, effect)):
            raise BootstrapError(f"invalid taint {taint!r}: key, value and effect must be strings")
        validate_label_key(key)
        validate_label_value(value)
        if effect not in TAINT_EFFECTS:
            raise BootstrapError(f"invalid taint effect {effect!r}: one of {', '.join(TAINT_EFFECTS)}")
        clean.append({"key": key, "value": value, "effect": effect})
    return clean


@dataclass(frozen=True)
class JoinMaterial:
    """What a node creates or joins its cluster with. ``authorities`` only on control-plane nodes."""

    token: str  # the join wave's bootstrap token, <id>.<secret>
    token_expires_at: datetime
    ca_cert_hash: str  # sha256:<hex> of the cluster CA's public key
    authorities: ClusterPki | None
    initializes: bool = False  # the first control-plane node: kubeadm init
    rendered_at: datetime = field(
        default_factory=lambda: datetime.now(UTC)
    )  # what the token's TTL counts from

    def __repr__(self) -> str:  # the token and the keys never reach a log through a repr
        return f"JoinMaterial(initializes={self.initializes}, control_plane={self.authorities is not None})"


@dataclass(frozen=True, kw_only=True)
class NodeBootstrap:
    """Everything a node needs to create or join its cluster."""

    cluster_id: str
    node_name: str
    role: str  # CONTROL_PLANE | WORKER
    kubernetes_version: str
    pod_cidr: str
    service_cidr: str
    # https://host:port; None only for the first control-plane node of a cluster without load balancer
    api_endpoint: str | None
    tunnel_url: str
    agent_token: str | None  # control-plane nodes only; a worker's must be None
    join: JoinMaterial
    node_pool: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    binaries: NodeBinaries = field(
        default_factory=lambda: NodeBinaries(source=IMAGE, base_image="", images={})
    )
    agent_image: str = DEFAULT_AGENT_IMAGE
    floating_ip: str | None = None

    def __repr__(self) -> str:
        return (
            f"NodeBootstrap(cluster_id={self.cluster_id!r}, node_name={self.node_name!r}, role={self.role!r})"
        )


def _file(path: str, content: str, *, permissions: str) -> dict[str, Any]:
    return {"path": path, "owner": "root:root", "permissions": permissions, "content": content}


def _check_secrets(node: NodeBootstrap) -> None:
    """The role decides which secrets a node may carry; anything else is a bug that must not reach a VM."""
    if node.role not in (CONTROL_PLANE, WORKER):
        raise BootstrapError(f"unknown node role {node.role!r}")
    if node.role == WORKER:
        if node.agent_token is not None:
            raise BootstrapError("only control-plane nodes carry the agent token, never a worker's user-data")
        if node.join.authorities is not None:
            raise BootstrapError("a worker's user-data never carries a CA key: it pins the CA by its hash")
        if node.join.initializes:
            raise BootstrapError("only a control-plane node initializes a cluster")
    elif node.join.authorities is None:
        raise BootstrapError("a control-plane node needs the cluster's authorities")
    if node.join.initializes and node.agent_token is None:
        raise BootstrapError("the first control-plane node applies the agent: it needs the agent token")


def _kubeadm_documents(node: NodeBootstrap, taints: list[dict[str, str]]) -> list[dict[str, Any]]:
    shape = ClusterShape(
        cluster_id=node.cluster_id,
        kubernetes_version=node.kubernetes_version,
        pod_cidr=node.pod_cidr,
        service_cidr=node.service_cidr,
        api_endpoint=node.api_endpoint,
        floating_ip=node.floating_ip,
    )
    registration = NodeRegistration(
        name=node.node_name,
        labels=validate_labels(node.labels),
        # a control-plane node keeps kubeadm's control-plane taint; a worker gets exactly its pool's taints
        taints=None if node.role == CONTROL_PLANE else taints,
    )
    try:
        if node.join.initializes:
            return init_documents(
                shape,
                node=registration,
                join_token=node.join.token,
                token_expires_at=node.join.token_expires_at,
                now=node.join.rendered_at,
            )
        return join_documents(
            shape,
            node=registration,
            join_token=node.join.token,
            ca_cert_hash=node.join.ca_cert_hash,
            control_plane=node.role == CONTROL_PLANE,
        )
    except KubeadmConfigError as exc:
        raise BootstrapError(str(exc)) from exc


def _authority_files(authorities: ClusterPki) -> list[dict[str, Any]]:
    files = []
    for pair in authorities.pairs():
        files.append(_file(f"{CERTIFICATES_DIR}/{pair.kind.cert_file}", pair.public_pem, permissions="0644"))
        files.append(_file(f"{CERTIFICATES_DIR}/{pair.kind.key_file}", pair.key_pem, permissions="0600"))
    return files


def render_user_data(node: NodeBootstrap) -> str:
    """The ``#cloud-config`` document for ``node``."""
    _check_secrets(node)
    taints = validate_taints(node.taints)
    node_config: dict[str, Any] = {
        "cluster_id": node.cluster_id,
        "node_name": node.node_name,
        "role": node.role,
        "node_pool": node.node_pool,
        "kubernetes_version": node.kubernetes_version,
        "pod_cidr": node.pod_cidr,
        "service_cidr": node.service_cidr,
        "api_endpoint": node.api_endpoint,
        "labels": validate_labels(node.labels),
        "taints": taints,
    }
    files: list[dict[str, Any]] = [
        _file(NODE_CONFIG_PATH, yaml.safe_dump(node_config, sort_keys=True), permissions="0644"),
        _file(
            KUBEADM_CONFIG_PATH,
            yaml.safe_dump_all(_kubeadm_documents(node, taints), sort_keys=False),
            permissions="0600",
        ),
        _file(
            "/etc/modules-load.d/kaas-kubernetes.conf", "".join(f"{m}\n" for m in MODULES), permissions="0644"
        ),
        _file(
            "/etc/sysctl.d/90-kaas-kubernetes.conf",
            "".join(f"{k} = {v}\n" for k, v in SYSCTLS.items()),
            permissions="0644",
        ),
    ]
    if node.join.authorities is not None:
        files += _authority_files(node.join.authorities)
    if node.agent_token is not None:
        agent_config = {
            "tunnel_url": node.tunnel_url,
            "token": node.agent_token,
            "cluster_id": node.cluster_id,
            "node_name": node.node_name,
            "role": node.role,
        }
        files.append(
            _file(AGENT_CONFIG_PATH, yaml.safe_dump(agent_config, sort_keys=True), permissions="0600")
        )
    if node.join.initializes:
        assert node.agent_token is not None  # _check_secrets
        objects = agent_objects(
            cluster_id=node.cluster_id,
            tunnel_url=node.tunnel_url,
            agent_token=node.agent_token,
            image=node.agent_image,
        )
        files.append(
            _file(AGENT_MANIFEST_PATH, yaml.safe_dump_all(objects, sort_keys=False), permissions="0600")
        )
    try:
        install = node.binaries.cloud_config(node.kubernetes_version)
    except NodeBinariesError as exc:
        raise BootstrapError(str(exc)) from exc
    commands: list[list[str]] = [["modprobe", module] for module in MODULES]
    commands.append(["sysctl", "--system"])
    if install:
        files.append(_file(CONTAINERD_CONFIG_PATH, CONTAINERD_CONFIG, permissions="0644"))
        commands.append(["systemctl", "restart", "containerd"])
    if node.join.initializes:
        commands.append(["kubeadm", "init", "--config", KUBEADM_CONFIG_PATH])
        commands.append(
            [
                "kubectl", "--kubeconfig", ADMIN_KUBECONFIG, "apply", "--server-side",
                "--field-manager=kaas", "-f", AGENT_MANIFEST_PATH,
            ]
        )  # fmt: skip
    else:
        commands.append(["kubeadm", "join", "--config", KUBEADM_CONFIG_PATH])
    document: dict[str, Any] = {
        "hostname": node.node_name,
        "preserve_hostname": False,
        **install,
        "write_files": files,
        "runcmd": commands,
    }
    rendered = CLOUD_CONFIG_HEADER + yaml.safe_dump(document, sort_keys=False)
    encoded = (len(rendered.encode()) + 2) // 3 * 4
    if encoded > USER_DATA_LIMIT_BASE64:
        raise BootstrapError(
            f"the user-data of {node.node_name} is {encoded} bytes in base64, over Nova's limit of"
            f" {USER_DATA_LIMIT_BASE64}"
        )
    return rendered


def _load_cloud_config(user_data: str) -> dict[str, Any]:
    if not user_data.startswith("#cloud-config"):
        raise BootstrapError("user-data is not a #cloud-config document")
    try:
        document = yaml.safe_load(user_data)
    except yaml.YAMLError as exc:
        raise BootstrapError(f"user-data is not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise BootstrapError("user-data is not a mapping")
    return document


def _read_file(user_data: str, path: str) -> dict[str, Any]:
    for entry in _load_cloud_config(user_data).get("write_files") or []:
        if isinstance(entry, dict) and entry.get("path") == path:
            content = yaml.safe_load(entry.get("content", ""))
            if not isinstance(content, dict):
                raise BootstrapError(f"{path} in user-data is not a mapping")
            return content
    raise BootstrapError(f"user-data does not write {path}")


def parse_agent_config(user_data: str) -> dict[str, Any]:
    """The agent config (``tunnel_url``, ``token``, ``cluster_id``, ``node_name``, ``role``) of a node."""
    return _read_file(user_data, AGENT_CONFIG_PATH)


def parse_node_config(user_data: str) -> dict[str, Any]:
    """The node config (role, versions, CIDRs, endpoint, labels, taints) of a node."""
    return _read_file(user_data, NODE_CONFIG_PATH)
