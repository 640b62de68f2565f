"""Loading YAML manifests (multi-document, ``kind: List`` too) into the stand-in's store.

Owned by the Kubernetes stand-in; called by ``KubeStandin.apply_manifests`` at start (for example with
``provider/bootstrap/manifests/kaas-rbac.yaml``, the RBAC kaas applies in every user cluster) and by tests.
Applying is create-or-replace, like ``kubectl apply`` without the three-way merge; it bypasses RBAC, as a
cluster bootstrap with admin credentials would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from simcloud.kube import resources
from simcloud.kube.errors import KubeStatusError, bad_request
from simcloud.kube.store import ObjectStore

Obj = dict[str, Any]


def parse_manifests(text: str) -> list[Obj]:
    """The objects of a multi-document YAML text, with ``kind: List`` items flattened."""
    objects: list[Obj] = []
    for document in yaml.safe_load_all(text):
        if not document:
            continue
        if not isinstance(document, dict):
            raise bad_request(f"a manifest document must be a mapping, not {type(document).__name__}")
        if document.get("kind") == "List" or str(document.get("kind", "")).endswith("List"):
            objects.extend(document.get("items") or [])
        else:
            objects.append(document)
    return objects


def apply_objects(store: ObjectStore, objects: list[Obj], *, default_namespace: str = "default") -> list[Obj]:
    """Create or replace each object, namespaces first so namespaced objects find theirs."""
    ordered = sorted(objects, key=lambda o: 0 if o.get("kind") == "Namespace" else 1)
    applied: list[Obj] = []
    for obj in ordered:
        rtype = resources.find_kind(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
        if rtype is None or not rtype.stored:
            raise bad_request(f"no kind {obj.get('kind')!r} in {obj.get('apiVersion')!r} is served here")
        metadata = obj.get("metadata") or {}
        namespace = (metadata.get("namespace") or default_namespace) if rtype.namespaced else ""
        try:
            applied.append(store.create(rtype, namespace, obj))
        except KubeStatusError as exc:
            if exc.reason != "AlreadyExists":
                raise
            replacement = {**obj, "metadata": {k: v for k, v in metadata.items() if k != "resourceVersion"}}
            applied.append(store.update(rtype, namespace, metadata["name"], replacement))
    return applied


def apply_file(store: ObjectStore, path: Path) -> list[Obj]:
    return apply_objects(store, parse_manifests(path.read_text(encoding="utf-8")))
