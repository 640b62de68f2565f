"""The add-ons kaas reconciles in every user cluster, in order, and the objects each one applies.

Called by the add-on step (``provider.addons.reconcile``). Each add-on is upstream's own manifests at a
pinned version (package data under ``manifests/``, copied unchanged from the named tag) plus what this
cluster needs changed, done on the parsed objects, never on text:

- ``cni``: flannel v0.28.9 ``Documentation/kube-flannel.yml``; ``net-conf.json``'s Network = the pod CIDR;
- ``cloud-provider``: cloud-provider-openstack v1.36.0 ``manifests/controller-manager``; the
  ``kube-system/cloud-config`` Secret (Keystone URL, region, the cluster's application credential, its
  subnet), the cluster name;
- ``csi``: cloud-provider-openstack v1.36.0 ``manifests/cinder-csi-plugin`` (reads the same Secret);
- ``metrics-server``: metrics-server v0.9.0 ``manifests/base``; the release image (what its ``release``
  component sets) and ``--kubelet-insecure-tls`` (kubeadm's kubelets serve self-signed certificates);
- ``kaas-agent``: the agent's RBAC, Secret and Deployment (``provider.bootstrap.agent_manifest``), last:
  applying it may restart the agent this step talks through.

All three upstreams are Apache-2.0, as kaas is; to move to a newer tag, copy its files over the folder's
(``git show <tag>:<path>``) and change the version constant below, which the recorded versions follow.

The CNI comes first: until it runs no node is Ready and no pod but host-network ones starts.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from provider.bootstrap.agent_manifest import agent_objects

FLANNEL_VERSION = "v0.28.9"
CLOUD_PROVIDER_OPENSTACK_VERSION = "v1.36.0"
METRICS_SERVER_VERSION = "v0.9.0"
METRICS_SERVER_IMAGE = f"registry.k8s.io/metrics-server/metrics-server:{METRICS_SERVER_VERSION}"
CLOUD_CONFIG_SECRET = "cloud-config"  # noqa: S105 (the Secret's name, which upstream's manifests mount)


@dataclass(frozen=True)
class AddonInputs:
    """What one cluster's add-ons are rendered from."""

    cluster_id: str
    pod_cidr: str
    auth_url: str  # Keystone, as the region's cloud reaches it
    region_name: str
    credential_id: str
    credential_secret: str
    subnet_id: str | None
    external_network_id: str | None
    tunnel_url: str
    agent_token: str
    agent_image: str

    def __repr__(self) -> str:
        return f"AddonInputs(cluster_id={self.cluster_id!r})"

    @property
    def cluster_name(self) -> str:
        return f"kaas-{self.cluster_id[:8]}"


@dataclass(frozen=True)
class Addon:
    name: str
    version: str
    render: Callable[[AddonInputs], list[dict[str, Any]]]

    def objects(self, inputs: AddonInputs) -> list[dict[str, Any]]:
        return self.render(inputs)


def digest(objects: list[dict[str, Any]]) -> str:
    """What exactly an add-on applies, as one hash: a changed input (a new credential) is applied again."""
    canonical = json.dumps(objects, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


def _manifests(folder: str) -> list[dict[str, Any]]:
    """Every object of the YAML files of one add-on folder, files in name order, ``kind: List`` unpacked."""
    base = resources.files(__package__) / "manifests" / folder
    objects: list[dict[str, Any]] = []
    for entry in sorted(base.iterdir(), key=lambda e: e.name):
        if entry.name.endswith((".yaml", ".yml")):
            for doc in yaml.safe_load_all(entry.read_text()):
                if doc and doc.get("kind") == "List":
                    objects += [item for item in doc.get("items") or [] if item]
                elif doc:
                    objects.append(doc)
    return copy.deepcopy(objects)


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    return list(spec.get("containers", [])) + list(spec.get("initContainers", []))


def _cni(inputs: AddonInputs) -> list[dict[str, Any]]:
    objects = _manifests("flannel")
    for obj in objects:
        if obj.get("kind") == "ConfigMap" and "net-conf.json" in obj.get("data", {}):
            net_conf = json.loads(obj["data"]["net-conf.json"])
            net_conf["Network"] = inputs.pod_cidr
            obj["data"]["net-conf.json"] = json.dumps(net_conf, indent=2)
    return objects


def cloud_conf(inputs: AddonInputs) -> str:
    """The cloud controller's and CSI's ``cloud.conf`` (gcfg): the cluster's application credential only."""
    lines = [
        "[Global]",
        f"auth-url={inputs.auth_url}",
        f"region={inputs.region_name}",
        f"application-credential-id={inputs.credential_id}",
        f"application-credential-secret={inputs.credential_secret}",
        "",
        "[LoadBalancer]",
    ]
    if inputs.subnet_id:
        lines.append(f"subnet-id={inputs.subnet_id}")
    if inputs.external_network_id:
        lines.append(f"floating-network-id={inputs.external_network_id}")
    for value in (inputs.auth_url, inputs.region_name, inputs.credential_id, inputs.credential_secret):
        if "\n" in value or "\r" in value:
            raise ValueError("a cloud.conf value holds a line break")
    return "\n".join(lines) + "\n"


def _cloud_provider(inputs: AddonInputs) -> list[dict[str, Any]]:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": CLOUD_CONFIG_SECRET,
            "namespace": "kube-system",
            "labels": {"app.kubernetes.io/managed-by": "kaas"},
        },
        "type": "Opaque",
        "stringData": {"cloud.conf": cloud_conf(inputs)},
    }
    objects = _manifests("openstack-cloud-controller-manager")
    for obj in objects:
        for container in _containers(obj):
            for env in container.get("env", []):
                if env.get("name") == "CLUSTER_NAME":
                    env["value"] = inputs.cluster_name
    return [secret, *objects]


def _csi(inputs: AddonInputs) -> list[dict[str, Any]]:
    return _manifests("cinder-csi")


def _common_labels(objects: list[dict[str, Any]], labels: dict[str, str]) -> None:
    """Kustomize's ``commonLabels``, which upstream's base relies on: every object's labels, and a workload's
    or Service's selector and pod template."""
    for obj in objects:
        obj.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            continue
        if obj.get("kind") == "Service":
            spec.setdefault("selector", {}).update(labels)
        elif "template" in spec:
            spec.setdefault("selector", {}).setdefault("matchLabels", {}).update(labels)
            spec["template"].setdefault("metadata", {}).setdefault("labels", {}).update(labels)


def _metrics_server(inputs: AddonInputs) -> list[dict[str, Any]]:
    objects = _manifests("metrics-server")
    _common_labels(objects, {"k8s-app": "metrics-server"})  # manifests/base/kustomization.yaml
    for obj in objects:
        for container in _containers(obj):
            if container.get("name") == "metrics-server":
                container["image"] = METRICS_SERVER_IMAGE
                args = list(container.get("args", []))
                if "--kubelet-insecure-tls" not in args:
                    args.append("--kubelet-insecure-tls")
                container["args"] = args
    return objects


def _kaas_agent(inputs: AddonInputs) -> list[dict[str, Any]]:
    return agent_objects(
        cluster_id=inputs.cluster_id,
        tunnel_url=inputs.tunnel_url,
        agent_token=inputs.agent_token,
        image=inputs.agent_image,
    )


ADDONS: tuple[Addon, ...] = (
    Addon("cni", f"flannel-{FLANNEL_VERSION}", _cni),
    Addon("cloud-provider", f"openstack-{CLOUD_PROVIDER_OPENSTACK_VERSION}", _cloud_provider),
    Addon("csi", f"cinder-csi-{CLOUD_PROVIDER_OPENSTACK_VERSION}", _csi),
    Addon("metrics-server", METRICS_SERVER_VERSION, _metrics_server),
    Addon("kaas-agent", "1", _kaas_agent),
)
ADDON_NAMES: tuple[str, ...] = tuple(addon.name for addon in ADDONS)
