"""What nodesim does to a real cluster as its admin, over the apiserver's REST API: apply manifests, issue
ServiceAccount tokens, register and remove Nodes.

Owned by ``nodesim``; called by ``nodesim.control_planes`` (the real control plane of each simulated
cluster) and by the tests that arrange a real cluster the same way. Plain ``httpx.Client`` calls as the
admin of ``nodesim.kube_real``, blocking (the booter runs them in a worker thread). Errors are
``KubeAdminError`` with the apiserver's Status message; a token is never part of one.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from nodesim.kube_real import RealControlPlane

FIELD_MANAGER = "kaas-nodesim"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
# The kinds nodesim applies (kaas's RBAC manifest and what tests arrange): API path, plural, namespaced.
# A short table rather than discovery: a manifest with another kind is a mistake to report, not to guess.
_RBAC = "rbac.authorization.k8s.io/v1"
_KINDS: dict[tuple[str, str], tuple[str, str, bool]] = {
    ("v1", "Namespace"): ("/api/v1", "namespaces", False),
    ("v1", "ServiceAccount"): ("/api/v1", "serviceaccounts", True),
    ("v1", "ConfigMap"): ("/api/v1", "configmaps", True),
    ("v1", "Secret"): ("/api/v1", "secrets", True),
    ("v1", "Node"): ("/api/v1", "nodes", False),
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments", True),
    (_RBAC, "ClusterRole"): (f"/apis/{_RBAC}", "clusterroles", False),
    (_RBAC, "ClusterRoleBinding"): (f"/apis/{_RBAC}", "clusterrolebindings", False),
    (_RBAC, "Role"): (f"/apis/{_RBAC}", "roles", True),
    (_RBAC, "RoleBinding"): (f"/apis/{_RBAC}", "rolebindings", True),
}


class KubeAdminError(Exception):
    """The apiserver refused or failed an admin call; the message is its Status message."""


@dataclass(frozen=True)
class IssuedToken:
    """A ServiceAccount token (TokenRequest) and when it expires. Never logged: ``repr`` hides it."""

    token: str
    expires_at: datetime.datetime

    def __repr__(self) -> str:
        return f"IssuedToken(token='**********', expires_at={self.expires_at.isoformat()})"


def admin_client(control_plane: RealControlPlane, *, timeout: float = 30.0) -> httpx.Client:
    """An HTTP client of ``control_plane``'s apiserver as its admin (``system:masters``)."""
    return httpx.Client(base_url=control_plane.url, verify=control_plane.admin_ssl_context(), timeout=timeout,
                        trust_env=False)


def _check(response: httpx.Response, what: str) -> httpx.Response:
    if response.is_success:
        return response
    try:
        message = str(response.json().get("message") or response.reason_phrase)
    except ValueError:
        message = response.reason_phrase
    raise KubeAdminError(f"{what}: {response.status_code} {message}")


def load_manifest(path: Path) -> list[dict[str, Any]]:
    """The documents of a YAML manifest (empty documents dropped)."""
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def object_path(document: Mapping[str, Any]) -> str:
    """The REST path of a manifest document's object (its kind must be one of ``_KINDS``)."""
    api_version, kind = str(document.get("apiVersion")), str(document.get("kind"))
    try:
        prefix, plural, namespaced = _KINDS[(api_version, kind)]
    except KeyError:
        raise KubeAdminError(f"nodesim does not apply {api_version} {kind}") from None
    metadata = document.get("metadata") or {}
    name = str(metadata.get("name") or "")
    if not name:
        raise KubeAdminError(f"a {kind} without a name")
    if namespaced:
        namespace = str(metadata.get("namespace") or "default")
        return f"{prefix}/namespaces/{namespace}/{plural}/{name}"
    return f"{prefix}/{plural}/{name}"


def apply_documents(client: httpx.Client, documents: Iterable[Mapping[str, Any]]) -> None:
    """Server-side apply each document in order (as ``kubectl apply --server-side --force-conflicts``):
    created when missing, brought back to the manifest when changed."""
    for document in documents:
        path = object_path(document)
        response = client.patch(
            path, params={"fieldManager": FIELD_MANAGER, "force": "true"},
            content=yaml.safe_dump(dict(document)).encode(), headers={"Content-Type": APPLY_CONTENT_TYPE},
        )
        _check(response, f"applying {path}")


def issue_service_account_token(client: httpx.Client, *, namespace: str, name: str,
                                expiration_seconds: int) -> IssuedToken:
    """A bound token of ServiceAccount ``namespace/name`` (the TokenRequest API, as a kubelet gets one for
    a pod's projected token), valid ``expiration_seconds`` (the apiserver may shorten it: the answer
    says when it expires)."""
    response = client.post(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
              "spec": {"expirationSeconds": expiration_seconds}},
    )
    status = _check(response, f"a token for {namespace}/{name}").json()["status"]
    expires_at = datetime.datetime.fromisoformat(str(status["expirationTimestamp"]).replace("Z", "+00:00"))
    return IssuedToken(token=str(status["token"]), expires_at=expires_at)


def list_nodes(client: httpx.Client) -> dict[str, dict[str, Any]]:
    """Every Node by name."""
    items = _check(client.get("/api/v1/nodes"), "listing nodes").json().get("items") or []
    return {str(node["metadata"]["name"]): node for node in items}


def create_node(client: httpx.Client, node: Mapping[str, Any]) -> None:
    """Register a Node, its status included (as a kubelet registers itself)."""
    _check(client.post("/api/v1/nodes", json=dict(node)), f"registering node {node['metadata']['name']}")


def patch_node(client: httpx.Client, name: str, patch: Mapping[str, Any]) -> None:
    """A JSON merge patch of a Node (lists, such as its taints, are replaced whole)."""
    merge_patch(client, f"/api/v1/nodes/{name}", patch)


def get_object(client: httpx.Client, path: str) -> dict[str, Any] | None:
    """The object at ``path``, or None when there is none."""
    response = _check_found(client.get(path), path)
    return None if response is None else dict(response.json())


def merge_patch(client: httpx.Client, path: str, patch: Mapping[str, Any]) -> None:
    _check(client.patch(path, json=dict(patch), headers={"Content-Type": "application/merge-patch+json"}),
           f"updating {path}")


def delete_node(client: httpx.Client, name: str) -> None:
    """Remove a Node; one already gone is fine."""
    response = client.delete(f"/api/v1/nodes/{name}")
    if response.status_code != 404:
        _check(response, f"removing node {name}")


def wait_for_service_account(client: httpx.Client, *, namespace: str = "default", name: str = "default",
                             timeout: float = 60.0) -> None:
    """Until the ServiceAccount exists: the controller manager makes each namespace's ``default`` a few
    seconds after it starts, and until then the namespace's pods are refused. ``KubeAdminError`` after
    ``timeout`` seconds."""
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}"
    _poll_until(lambda: get_object(client, path) is not None, deadline=time.monotonic() + timeout,
                failure=f"no ServiceAccount {namespace}/{name} after {timeout:.0f} s")


def wait_for_aggregated_roles(client: httpx.Client, *, names: tuple[str, ...] = ("admin", "edit", "view"),
                              timeout: float = 60.0) -> None:
    """Until each aggregated ClusterRole has rules: the apiserver creates ``admin``, ``edit`` and ``view``
    empty and the controller manager's aggregation controller fills them, so until then a binding to
    ``edit`` (kaas's member group) grants nothing and a member's first request is refused.
    ``KubeAdminError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    for name in names:
        path = f"/apis/{_RBAC}/clusterroles/{name}"
        _poll_until(lambda: bool((get_object(client, path) or {}).get("rules")),  # noqa: B023 (called now)
                    deadline=deadline, failure=f"ClusterRole {name} has no rules after {timeout:.0f} s")


def _poll_until(ready: Callable[[], bool], *, deadline: float, failure: str) -> None:
    """Ask ``ready`` every 0.1 s until it says yes; ``KubeAdminError(failure)`` once the monotonic clock has
    passed ``deadline``."""
    while not ready():
        if time.monotonic() > deadline:
            raise KubeAdminError(failure)
        time.sleep(0.1)


def _check_found(response: httpx.Response, what: str) -> httpx.Response | None:
    """The response, None for a 404, ``KubeAdminError`` for any other failure."""
    return None if response.status_code == 404 else _check(response, what)
