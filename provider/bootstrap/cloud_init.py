"""Renders the ``#cloud-config`` user-data of one node, and reads the agent config back out of it.

Called by the reconciler's server steps (``provider.reconciler.steps``) for every server it creates, and by
the simulator's "boot a node from its user-data" step (``parse_agent_config``). The document is built as a
Python dict and dumped with ``yaml.safe_dump``: no string templating, so a label value can never inject
YAML. Labels and taints are validated with Kubernetes' rules before anything is rendered.

Files written on the node:
- ``/etc/kaas/node.yaml`` (0644): role, cluster id, Kubernetes version, CIDRs, API endpoint, labels, taints.
- ``/etc/kaas/agent.yaml`` (0600, root:root), on control-plane nodes only: the agent's tunnel URL and the
  cluster's agent token, which is all the agent's Deployment needs. The agent runs on the control plane,
  so a worker's user-data carries no agent token at all: a workload on a worker that reads the metadata
  service (where user-data is served to anything on the VM) or the node's disk finds nothing to
  impersonate the cluster's agent with. On the control plane the file is readable by root only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

NODE_CONFIG_PATH = "/etc/kaas/node.yaml"
AGENT_CONFIG_PATH = "/etc/kaas/agent.yaml"
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
class NodeBootstrap:
    """Everything a node needs to join its cluster."""

    cluster_id: str
    node_name: str
    role: str  # CONTROL_PLANE | WORKER
    kubernetes_version: str
    pod_cidr: str
    service_cidr: str
    api_endpoint: str | None  # None for the first control-plane node of a cluster without load balancer
    tunnel_url: str
    agent_token: str | None  # control-plane nodes only; a worker's must be None
    node_pool: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)


def render_user_data(node: NodeBootstrap) -> str:
    """The ``#cloud-config`` document for ``node``."""
    if node.role not in (CONTROL_PLANE, WORKER):
        raise BootstrapError(f"unknown node role {node.role!r}")
    if node.role != CONTROL_PLANE and node.agent_token is not None:
        raise BootstrapError("only control-plane nodes carry the agent token, never a worker's user-data")
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
        "taints": validate_taints(node.taints),
    }
    files: list[dict[str, Any]] = [
        {
            "path": NODE_CONFIG_PATH,
            "owner": "root:root",
            "permissions": "0644",
            "content": yaml.safe_dump(node_config, sort_keys=True),
        }
    ]
    if node.agent_token is not None:
        agent_config = {
            "tunnel_url": node.tunnel_url,
            "token": node.agent_token,
            "cluster_id": node.cluster_id,
            "node_name": node.node_name,
            "role": node.role,
        }
        files.append(
            {
                "path": AGENT_CONFIG_PATH,
                "owner": "root:root",
                "permissions": "0600",
                "content": yaml.safe_dump(agent_config, sort_keys=True),
            }
        )
    document: dict[str, Any] = {
        "hostname": node.node_name,
        "preserve_hostname": False,
        "write_files": files,
        "runcmd": [["kaas-node-bootstrap", "--config", NODE_CONFIG_PATH]],
    }
    return CLOUD_CONFIG_HEADER + yaml.safe_dump(document, sort_keys=False)


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
