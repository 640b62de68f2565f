"""The kaas agent as Kubernetes objects: its RBAC (``manifests/kaas-rbac.yaml``), a Secret with its config and
its Deployment. The only thing cloud-init applies in a new cluster (``kubectl apply`` on the first
control-plane node, right after ``kubeadm init``), so that the agent can dial home; everything else in the
cluster comes later through the agent.

Called by the user-data renderer (``provider.bootstrap.cloud_init``). Objects are dicts (dumped with
``yaml.safe_dump_all``), never templates.

The agent runs before any CNI exists (the CNI is an add-on that arrives through the agent), so its pod uses
the host's network, runs on a control-plane node, tolerates the taints a new node carries (control-plane,
not-ready, and the cloud provider's uninitialized), and reaches its apiserver on loopback
(``127.0.0.1:6443``, a SAN of the apiserver's certificate: ``provider.bootstrap.kubeadm.LOOPBACK_SANS``)
with its service account's token.
"""

from __future__ import annotations

from typing import Any

import yaml

from provider.bootstrap import rbac_manifest

AGENT_NAMESPACE = "kaas-system"
AGENT_NAME = "kaas-agent"
AGENT_SECRET = "kaas-agent-config"  # noqa: S105 (the Secret's name)
DEFAULT_AGENT_IMAGE = "kaas/kaas-agent:0.1.0"
_LABELS = {"app.kubernetes.io/name": AGENT_NAME, "app.kubernetes.io/managed-by": "kaas"}
NEW_NODE_TOLERATIONS = [
    {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists"},
    {"key": "node.cloudprovider.kubernetes.io/uninitialized", "operator": "Exists"},
]


def rbac_objects() -> list[dict[str, Any]]:
    """The objects of ``kaas-rbac.yaml`` (its comments are for people; they do not reach the user-data)."""
    return [doc for doc in yaml.safe_load_all(rbac_manifest().read_text()) if doc]


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
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": AGENT_NAME, "namespace": AGENT_NAMESPACE, "labels": dict(_LABELS)},
        "spec": {
            "replicas": 1,
            # one live session per cluster: the old pod goes before the new one dials
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app.kubernetes.io/name": AGENT_NAME}},
            "template": {
                "metadata": {"labels": dict(_LABELS)},
                "spec": {
                    "serviceAccountName": AGENT_NAME,
                    "hostNetwork": True,
                    "dnsPolicy": "Default",
                    "nodeSelector": {"node-role.kubernetes.io/control-plane": ""},
                    "tolerations": [dict(t) for t in NEW_NODE_TOLERATIONS],
                    "priorityClassName": "system-cluster-critical",
                    "containers": [
                        {
                            "name": "agent",
                            "image": image,
                            "args": ["--config", "/etc/kaas/agent.yaml"],
                            "env": [
                                {"name": "KAAS_AGENT_APISERVER_HOST", "value": "127.0.0.1"},
                                {"name": "KAAS_AGENT_APISERVER_PORT", "value": "6443"},
                                {
                                    "name": "KAAS_AGENT_NODE_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                                },
                            ],
                            "volumeMounts": [{"name": "config", "mountPath": "/etc/kaas", "readOnly": True}],
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "runAsNonRoot": True,
                                "runAsUser": 65532,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                    "volumes": [
                        {"name": "config", "secret": {"secretName": AGENT_SECRET, "defaultMode": 0o400}}
                    ],
                },
            },
        },
    }
    return [*rbac_objects(), secret, deployment]
