"""A small RBAC authorizer over the stored ClusterRoles, ClusterRoleBindings, Roles and RoleBindings.

Owned by the Kubernetes stand-in; called by ``simcloud.kube.server`` for every request and by
``simcloud.kube.auth`` for impersonation. It follows kube-apiserver's RBAC semantics: a request is allowed
when some binding that applies to the user (User name, Group, or ServiceAccount subject; ClusterRoleBindings
everywhere, RoleBindings in their namespace) references a role with a rule matching the verb, API group,
resource (``resource/subresource``, ``*``, ``*/subresource``) and, when listed, the resource name.
``system:masters`` bypasses RBAC, like the real apiserver. Not implemented: aggregated ClusterRoles
(``aggregationRule``); the default roles below are written flat instead.

Also owns the default ClusterRoles the stand-in seeds (``cluster-admin``, ``admin``, ``edit``, ``view``)
and the forbidden message kubectl prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simcloud.kube import resources
from simcloud.kube.identity import MASTERS_GROUP, SERVICE_ACCOUNT_PREFIX, Identity
from simcloud.kube.store import ObjectStore

Obj = dict[str, Any]


@dataclass(frozen=True)
class Attributes:
    """What a request does (kube-apiserver's ``authorizer.Attributes``)."""

    identity: Identity
    verb: str
    resource_request: bool = True
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    namespace: str = ""
    path: str = ""


def forbidden_reason(attrs: Attributes) -> str:
    """``User "alice" cannot create resource "namespaces" in API group "" at the cluster scope``."""
    user = attrs.identity.username
    if not attrs.resource_request:
        return f'User "{user}" cannot {attrs.verb} path "{attrs.path}"'
    resource = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
    scope = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    return f'User "{user}" cannot {attrs.verb} resource "{resource}" in API group "{attrs.api_group}" {scope}'


def _matches(values: list[str] | None, wanted: str) -> bool:
    candidates = values or []
    return "*" in candidates or wanted in candidates


def _resource_matches(rule_resources: list[str] | None, resource: str, subresource: str) -> bool:
    for candidate in rule_resources or []:
        if candidate == "*":
            return True
        if not subresource and candidate == resource:
            return True
        if subresource and candidate in (f"{resource}/{subresource}", f"*/{subresource}"):
            return True
    return False


def rule_allows(rule: Obj, attrs: Attributes) -> bool:
    if not _matches(rule.get("verbs"), attrs.verb):
        return False
    if not attrs.resource_request:
        urls = rule.get("nonResourceURLs") or []
        return any(
            url == "*" or url == attrs.path or (url.endswith("*") and attrs.path.startswith(url[:-1]))
            for url in urls
        )
    if not _matches(rule.get("apiGroups"), attrs.api_group):
        return False
    if not _resource_matches(rule.get("resources"), attrs.resource, attrs.subresource):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names


def _subject_applies(subject: Obj, identity: Identity, binding_namespace: str) -> bool:
    kind = subject.get("kind")
    name = subject.get("name", "")
    if kind == "User":
        return bool(name == identity.username)
    if kind == "Group":
        return name in identity.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return identity.username == f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"
    return False


class RbacAuthorizer:
    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self._cluster_roles = _type("clusterroles")
        self._cluster_role_bindings = _type("clusterrolebindings")
        self._roles = _type("roles")
        self._role_bindings = _type("rolebindings")

    def rules_for(self, identity: Identity, namespace: str) -> list[Obj]:
        """Every rule granted to ``identity`` at cluster scope plus, when given, in ``namespace``."""
        rules: list[Obj] = []
        cluster_bindings, _ = self._store.list_objects(self._cluster_role_bindings, None)
        for binding in cluster_bindings:
            if any(_subject_applies(s, identity, "") for s in binding.get("subjects") or []):
                rules.extend(self._role_rules(binding.get("roleRef") or {}, ""))
        if namespace:
            bindings, _ = self._store.list_objects(self._role_bindings, namespace)
            for binding in bindings:
                if any(_subject_applies(s, identity, namespace) for s in binding.get("subjects") or []):
                    rules.extend(self._role_rules(binding.get("roleRef") or {}, namespace))
        return rules

    def _role_rules(self, role_ref: Obj, namespace: str) -> list[Obj]:
        kind = role_ref.get("kind")
        name = role_ref.get("name", "")
        if kind == "ClusterRole":
            role = self._store.find(self._cluster_roles, "", name)
        elif kind == "Role" and namespace:
            role = self._store.find(self._roles, namespace, name)
        else:
            role = None
        return list((role or {}).get("rules") or [])

    def allowed(self, attrs: Attributes) -> bool:
        if MASTERS_GROUP in attrs.identity.groups:
            return True
        return any(rule_allows(rule, attrs) for rule in self.rules_for(attrs.identity, attrs.namespace))


def _type(plural: str) -> resources.ResourceType:
    rtype = resources.find(resources.RBAC_GROUP, "v1", plural)
    assert rtype is not None
    return rtype


# --- default ClusterRoles (flattened from Kubernetes' bootstrap policy, for the resources served here) ---

_READ = ["get", "list", "watch"]
_WRITE = ["create", "delete", "deletecollection", "patch", "update"]

_VIEW_RULES: list[Obj] = [
    {"apiGroups": [""], "verbs": _READ, "resources": [
        "configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status", "pods",
        "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts", "services",
        "services/status"]},
    {"apiGroups": [""], "verbs": _READ, "resources": [
        "bindings", "events", "limitranges", "namespaces/status", "pods/log", "pods/status",
        "replicationcontrollers/status", "resourcequotas", "resourcequotas/status"]},
    {"apiGroups": [""], "verbs": _READ, "resources": ["namespaces"]},
    {"apiGroups": ["apps"], "verbs": _READ, "resources": [
        "controllerrevisions", "daemonsets", "daemonsets/status", "deployments", "deployments/scale",
        "deployments/status", "replicasets", "replicasets/scale", "replicasets/status", "statefulsets",
        "statefulsets/scale", "statefulsets/status"]},
    {"apiGroups": ["batch"], "verbs": _READ,
     "resources": ["cronjobs", "cronjobs/status", "jobs", "jobs/status"]},
    {"apiGroups": ["networking.k8s.io"], "verbs": _READ, "resources": [
        "ingresses", "ingresses/status", "networkpolicies"]},
]

_EDIT_RULES: list[Obj] = [
    {"apiGroups": [""], "verbs": ["create", "delete", "deletecollection", "patch", "update"],
     "resources": ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"]},
    {"apiGroups": [""], "verbs": ["create"], "resources": ["pods/eviction", "serviceaccounts/token"]},
    {"apiGroups": [""], "verbs": _WRITE, "resources": [
        "configmaps", "events", "persistentvolumeclaims", "replicationcontrollers",
        "replicationcontrollers/scale", "secrets", "serviceaccounts", "services", "services/proxy"]},
    {"apiGroups": [""], "verbs": _READ, "resources": ["secrets"]},
    {"apiGroups": ["apps"], "verbs": _WRITE, "resources": [
        "daemonsets", "deployments", "deployments/rollback", "deployments/scale", "replicasets",
        "replicasets/scale", "statefulsets", "statefulsets/scale"]},
    {"apiGroups": ["batch"], "verbs": _WRITE, "resources": ["cronjobs", "jobs"]},
    {"apiGroups": ["networking.k8s.io"], "verbs": _WRITE, "resources": ["ingresses", "networkpolicies"]},
    *_VIEW_RULES,
]

_ADMIN_RULES: list[Obj] = [
    {"apiGroups": [resources.AUTHORIZATION_GROUP], "verbs": ["create"],
     "resources": ["localsubjectaccessreviews"]},
    {"apiGroups": [resources.RBAC_GROUP], "verbs": [*_READ, *_WRITE], "resources": ["rolebindings", "roles"]},
    *_EDIT_RULES,
]


def _cluster_role(name: str, rules: list[Obj]) -> Obj:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
        "rules": rules,
    }


def default_cluster_roles() -> list[Obj]:
    """The user-facing default ClusterRoles and the discovery/self-review roles every user gets."""
    return [
        _cluster_role("cluster-admin", [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]},
        ]),
        _cluster_role("admin", _ADMIN_RULES),
        _cluster_role("edit", _EDIT_RULES),
        _cluster_role("view", _VIEW_RULES),
        _cluster_role("system:discovery", [{"nonResourceURLs": [
            "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz",
            "/version", "/version/"], "verbs": ["get"]}]),
        _cluster_role("system:basic-user", [
            {"apiGroups": [resources.AUTHORIZATION_GROUP], "resources": [
                "selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
            {"apiGroups": [resources.AUTHENTICATION_GROUP], "resources": ["selfsubjectreviews"],
             "verbs": ["create"]},
        ]),
    ]


def default_cluster_role_bindings() -> list[Obj]:
    """``system:authenticated`` may discover the API and review itself, as in every real cluster."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "roleRef": {"apiGroup": resources.RBAC_GROUP, "kind": "ClusterRole", "name": name},
            "subjects": [{"apiGroup": resources.RBAC_GROUP, "kind": "Group", "name": "system:authenticated"}],
        }
        for name in ("system:discovery", "system:basic-user")
    ]
