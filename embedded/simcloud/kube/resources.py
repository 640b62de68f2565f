"""The stand-in's resource table: which kinds it serves, under which group/version, and their scope.

Owned by the Kubernetes stand-in; read by the discovery documents and the request router in
``simcloud.kube.server`` and by the store (to validate kinds). Adding a kind is one ``ResourceType`` line:
every kind is stored and served the same generic way.
"""

from __future__ import annotations

from dataclasses import dataclass

READ_VERBS = ("get", "list", "watch")
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
ALL_VERBS = (*READ_VERBS, *WRITE_VERBS)

RBAC_GROUP = "rbac.authorization.k8s.io"
AUTHORIZATION_GROUP = "authorization.k8s.io"
AUTHENTICATION_GROUP = "authentication.k8s.io"


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    # Review kinds (SelfSubjectAccessReview, ...) are answered, never stored.
    stored: bool = True

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def discovery(self) -> dict[str, object]:
        entry: dict[str, object] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        return entry


RESOURCE_TYPES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "namespace", "Namespace", False, ("ns",),
                 ("create", "delete", "get", "list", "patch", "update", "watch")),
    ResourceType("", "v1", "nodes", "node", "Node", False, ("no",)),
    ResourceType("", "v1", "pods", "pod", "Pod", True, ("po",)),
    ResourceType("", "v1", "configmaps", "configmap", "ConfigMap", True, ("cm",)),
    ResourceType("", "v1", "secrets", "secret", "Secret", True),
    ResourceType("", "v1", "services", "service", "Service", True, ("svc",),
                 ("create", "delete", "get", "list", "patch", "update", "watch")),
    ResourceType("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", True, ("sa",)),
    ResourceType("", "v1", "events", "event", "Event", True, ("ev",)),
    ResourceType(RBAC_GROUP, "v1", "clusterroles", "clusterrole", "ClusterRole", False),
    ResourceType(RBAC_GROUP, "v1", "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", False),
    ResourceType(RBAC_GROUP, "v1", "roles", "role", "Role", True),
    ResourceType(RBAC_GROUP, "v1", "rolebindings", "rolebinding", "RoleBinding", True),
    ResourceType(AUTHORIZATION_GROUP, "v1", "selfsubjectaccessreviews", "selfsubjectaccessreview",
                 "SelfSubjectAccessReview", False, (), ("create",), stored=False),
    ResourceType(AUTHENTICATION_GROUP, "v1", "selfsubjectreviews", "selfsubjectreview",
                 "SelfSubjectReview", False, (), ("create",), stored=False),
)

def groups() -> list[tuple[str, str]]:
    """Named API groups and their single served version, in table order (the core group excluded)."""
    seen: list[tuple[str, str]] = []
    for rtype in RESOURCE_TYPES:
        if rtype.group and (rtype.group, rtype.version) not in seen:
            seen.append((rtype.group, rtype.version))
    return seen


def resources_of(group: str, version: str) -> list[ResourceType]:
    return [r for r in RESOURCE_TYPES if r.group == group and r.version == version]


def find(group: str, version: str, plural: str) -> ResourceType | None:
    for rtype in RESOURCE_TYPES:
        if rtype.group == group and rtype.version == version and rtype.plural == plural:
            return rtype
    return None


def find_kind(api_version: str, kind: str) -> ResourceType | None:
    """The resource type of a manifest's ``apiVersion`` + ``kind``."""
    group, _, version = api_version.rpartition("/")
    for rtype in RESOURCE_TYPES:
        if rtype.group == group and rtype.version == version and rtype.kind == kind:
            return rtype
    return None
