"""Reading a kaas node's ``#cloud-config`` user-data back: the agent config, the node config and the
cluster's PKI.

Owned by ``nodesim``; called by ``nodesim.booter`` for every kaas server it sees. The format is the one
``provider.bootstrap.cloud_init`` renders (``write_files`` entries ``/etc/kaas/agent.yaml`` and
``/etc/kaas/node.yaml``, each a YAML mapping). nodesim may not import ``provider``, so the document is
parsed here with ``yaml.safe_load``. A control-plane node's user-data may also write the cluster's secrets
where kubeadm keeps them (``/etc/kubernetes/pki/ca.crt``, ``ca.key``, ``sa.key``, ``sa.pub``,
``front-proxy-ca.crt``, ``front-proxy-ca.key``: ``nodesim.kube_real.PKI_FILES``; as text, or ``encoding:
b64``); only those exact paths are read, so a document can never make nodesim write anywhere else. The
user-data carries the cluster's agent token and CA key: no error message raised here ever quotes the
document (YAML errors are reported without their snippet), and ``NodeUserData``'s repr shows neither.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

import yaml

from nodesim.kube_real import PKI_FILES
from nodesim.kubeadm_node import KubeadmDocuments, parse_documents

AGENT_CONFIG_PATH = "/etc/kaas/agent.yaml"
NODE_CONFIG_PATH = "/etc/kaas/node.yaml"
KUBEADM_CONFIG_PATH = "/etc/kaas/kubeadm.yaml"
AGENT_MANIFEST_PATH = "/etc/kaas/agent-manifest.yaml"
CLOUD_CONFIG_HEADER = "#cloud-config"
PKI_DIR = "/etc/kubernetes/pki/"
# the authorities a control plane's user-data writes: kubeadm's names under its certificatesDir
AUTHORITY_FILES = (*PKI_FILES, "etcd/ca.crt", "etcd/ca.key")
PKI_PATHS = {f"{PKI_DIR}{name}": name for name in AUTHORITY_FILES}
B64_ENCODINGS = ("b64", "base64")
MAX_USER_DATA_BYTES = 64 * 1024  # Nova's own limit


class UserDataError(ValueError):
    """The user-data is not a kaas node's cloud-config; the message never quotes the document."""


@dataclass(frozen=True)
class NodeUserData:
    """What a kaas node's user-data says: its agent config (None if it has none), its node config, the
    cluster's PKI files it writes (file name in ``AUTHORITY_FILES`` → content; empty when it writes none),
    its kubeadm documents and, on the first control plane, the agent's manifest (None when absent)."""

    agent: dict[str, Any] | None = field(repr=False)
    node: dict[str, Any]
    pki: dict[str, bytes] = field(default_factory=dict, repr=False)
    kubeadm: KubeadmDocuments | None = field(default=None, repr=False)
    agent_manifest: tuple[dict[str, Any], ...] | None = field(default=None, repr=False)

    @property
    def node_name(self) -> str | None:
        name = self.node.get("node_name") or (self.agent or {}).get("node_name")
        return str(name) if name else None

    @property
    def role(self) -> str | None:
        role = self.node.get("role") or (self.agent or {}).get("role")
        return str(role) if role else None

    @property
    def kubernetes_version(self) -> str | None:
        version = self.node.get("kubernetes_version")
        if not version:
            return None
        text = str(version)
        return text if text.startswith("v") else f"v{text}"

    @property
    def api_endpoint(self) -> str | None:
        endpoint = self.node.get("api_endpoint")
        return str(endpoint) if endpoint else None

    @property
    def labels(self) -> dict[str, str]:
        labels = self.node.get("labels")
        if not isinstance(labels, dict):
            return {}
        return {str(k): str(v) for k, v in labels.items()}

    @property
    def taints(self) -> list[dict[str, str]]:
        taints = self.node.get("taints")
        if not isinstance(taints, list):
            return []
        return [
            {str(k): str(v) for k, v in taint.items() if k in ("key", "value", "effect")}
            for taint in taints
            if isinstance(taint, dict)
        ]


def decode_user_data(raw: str | bytes | None) -> str:
    """Nova returns user-data base64-encoded (``OS-EXT-SRV-ATTR:user_data``); plain text is accepted too."""
    if raw is None or raw == "":
        raise UserDataError("the server has no user-data (or it is not visible: admin and microversion 2.3+)")
    data = raw.encode() if isinstance(raw, str) else raw
    if len(data) > MAX_USER_DATA_BYTES * 2:
        raise UserDataError("the user-data is too large")
    if data.lstrip().startswith(CLOUD_CONFIG_HEADER.encode()):
        decoded = data
    else:
        try:
            decoded = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise UserDataError("the user-data is neither base64 nor a #cloud-config document") from None
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise UserDataError("the user-data is not UTF-8 text (gzip/multipart is not supported)") from None


def _load_yaml_mapping(text: str, what: str) -> dict[str, Any]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        # The error's snippet would quote the document, which may hold the agent token.
        raise UserDataError(f"{what} is not valid YAML") from None
    if not isinstance(document, dict):
        raise UserDataError(f"{what} is not a YAML mapping")
    return document


def parse_user_data(text: str) -> NodeUserData:
    """Parse a kaas node's cloud-config; ``UserDataError`` if it is not one (no node config)."""
    if not text.lstrip().startswith(CLOUD_CONFIG_HEADER):
        raise UserDataError("the user-data is not a #cloud-config document")
    document = _load_yaml_mapping(text, "the user-data")
    texts: dict[str, str] = {}
    pki: dict[str, bytes] = {}
    for entry in document.get("write_files") or []:
        if isinstance(entry, dict) and entry.get("path") in PKI_PATHS:
            pki[PKI_PATHS[entry["path"]]] = _pki_content(entry)
            continue
        if not isinstance(entry, dict) or entry.get("path") not in TEXT_FILES:
            continue
        if entry.get("encoding"):
            raise UserDataError(f"{entry['path']} in the user-data is encoded, which is not supported")
        content = entry.get("content")
        if not isinstance(content, str):
            raise UserDataError(f"{entry['path']} in the user-data has no text content")
        texts[str(entry["path"])] = content
    agent = _mapping_of(texts, AGENT_CONFIG_PATH)
    node = _mapping_of(texts, NODE_CONFIG_PATH)
    if agent is None and node is None:
        raise UserDataError(f"the user-data writes neither {AGENT_CONFIG_PATH} nor {NODE_CONFIG_PATH}")
    kubeadm = None
    if KUBEADM_CONFIG_PATH in texts:
        try:
            kubeadm = parse_documents(texts[KUBEADM_CONFIG_PATH])
        except ValueError as exc:
            raise UserDataError(str(exc)) from None
    manifest = None
    if AGENT_MANIFEST_PATH in texts:
        try:
            objects = [d for d in yaml.safe_load_all(texts[AGENT_MANIFEST_PATH]) if d]
        except yaml.YAMLError:
            raise UserDataError(f"{AGENT_MANIFEST_PATH} is not valid YAML") from None
        if not all(isinstance(d, dict) for d in objects):
            raise UserDataError(f"{AGENT_MANIFEST_PATH} holds a document that is not a mapping")
        manifest = tuple(objects)
    return NodeUserData(agent=agent, node=node or {}, pki=pki, kubeadm=kubeadm, agent_manifest=manifest)


TEXT_FILES = (AGENT_CONFIG_PATH, NODE_CONFIG_PATH, KUBEADM_CONFIG_PATH, AGENT_MANIFEST_PATH)


def _mapping_of(texts: dict[str, str], path: str) -> dict[str, Any] | None:
    return _load_yaml_mapping(texts[path], path) if path in texts else None


def _pki_content(entry: dict[str, Any]) -> bytes:
    path, content, encoding = entry["path"], entry.get("content"), entry.get("encoding")
    if not isinstance(content, str) or not content:
        raise UserDataError(f"{path} in the user-data has no text content")
    if not encoding:
        return content.encode()
    if encoding not in B64_ENCODINGS:
        raise UserDataError(f"{path} in the user-data has encoding {encoding!r}; text or b64 is supported")
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise UserDataError(f"{path} in the user-data is not valid base64") from None
