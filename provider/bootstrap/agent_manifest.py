"""The kaas agent as Kubernetes objects: its RBAC (``manifests/kaas-rbac.yaml``), a Secret with its config and
its Deployment (``manifests/kaas-agent.yaml``, which says why the pod is shaped as it is). Both files live
in ``deploy/agent/`` of the repository, their one source; the package's manifests link there. The only
thing cloud-init applies in a new cluster (``kubectl apply`` on the first control-plane node, right after
``kubeadm init``), so that the agent can dial home; everything else in the cluster comes later through the
agent.

Called by the user-data renderer (``provider.bootstrap.cloud_init``) and the add-ons catalog. Objects are
dicts (dumped with ``yaml.safe_dump_all``), never templates: the files are read as YAML and only the
Deployment's image is set.
"""

from __future__ import annotations

from typing import Any

import yaml

from provider.bootstrap import agent_deployment_manifest, rbac_manifest

AGENT_NAMESPACE = "kaas-system"
AGENT_NAME = "kaas-agent"
AGENT_SECRET = "kaas-agent-config"  # noqa: S105 (the Secret's name)
DEFAULT_AGENT_IMAGE = "kaas/kaas-agent:0.1.0"
_LABELS = {"app.kubernetes.io/name": AGENT_NAME, "app.kubernetes.io/managed-by": "kaas"}
LINTER_ANNOTATION_PREFIX = "checkov.io/"


def rbac_objects() -> list[dict[str, Any]]:
    """The objects of ``kaas-rbac.yaml`` (its comments are for people; they do not reach the user-data)."""
    return [doc for doc in yaml.safe_load_all(rbac_manifest().read_text()) if doc]


def agent_deployment() -> dict[str, Any]:
    """The agent's Deployment as ``kaas-agent.yaml`` has it (a fresh copy: callers may change it), less the
    linter's notes (``checkov.io/skip*`` annotations), which are for the repository, not the user-data."""
    document: dict[str, Any] = yaml.safe_load(agent_deployment_manifest().read_text())
    metadata = document["metadata"]
    notes = {key for key in metadata.get("annotations", {}) if key.startswith(LINTER_ANNOTATION_PREFIX)}
    for key in notes:
        del metadata["annotations"][key]
    if not metadata.get("annotations"):
        metadata.pop("annotations", None)
    return document


def agent_objects(*, cluster_id: str, tunnel_url: str, agent_token: str, image: str) -> list[dict[str, Any]]:
    """RBAC, the config Secret and the Deployment of one cluster's agent."""
    config = yaml.safe_dump({"tunnel_url": tunnel_url, "cluster_id": cluster_id, "token": agent_token})
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": AGENT_SECRET, "namespace": AGENT_NAMESPACE, "labels": dict(_LABELS)},
        "type": "Opaque",
        "stringData": {"agent.yaml": config},
    }
    deployment = agent_deployment()
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = image
    return [*rbac_objects(), secret, deployment]
