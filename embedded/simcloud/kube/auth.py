"""Authentication (static bearer tokens) and impersonation, the way kube-apiserver does them.

Owned by the Kubernetes stand-in; called by ``simcloud.kube.server`` before authorization.

Impersonation: ``Impersonate-User``, ``Impersonate-Group`` (repeatable), ``Impersonate-Uid`` and
``Impersonate-Extra-<key>`` headers. The requester needs the ``impersonate`` verb on ``users`` (or on
``serviceaccounts`` in the namespace, for a ``system:serviceaccount:`` user), on ``groups``, on
``uids`` and on ``userextras/<key>`` (group ``authentication.k8s.io``), each checked against the
impersonated name, otherwise 403 ``... cannot impersonate resource "users" ...``. Groups or extras without a
user answer 500, as kube-apiserver does. The impersonated identity always gets ``system:authenticated``;
a service account impersonated without groups gets the service-account groups.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote

from simcloud.kube import errors
from simcloud.kube.identity import AUTHENTICATED_GROUP, SERVICE_ACCOUNT_PREFIX, Identity
from simcloud.kube.rbac import Attributes, RbacAuthorizer, forbidden_reason

EXTRA_PREFIX = "impersonate-extra-"


class HeaderView:
    """Just enough of a multi-valued header mapping (Starlette's ``Headers`` satisfies it)."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = [(k.lower(), v) for k, v in items]

    def get(self, name: str) -> str | None:
        for key, value in self._items:
            if key == name:
                return value
        return None

    def getlist(self, name: str) -> list[str]:
        return [v for k, v in self._items if k == name]

    def keys(self) -> list[str]:
        return [k for k, _ in self._items]


def authenticate(authorization: str | None, tokens: Mapping[str, Identity]) -> Identity:
    """The identity of a ``Bearer`` token; 401 for a missing or unknown one."""
    if not authorization:
        raise errors.unauthorized()
    scheme, _, token = authorization.partition(" ")
    identity = tokens.get(token.strip()) if scheme.lower() == "bearer" else None
    if identity is None:
        raise errors.unauthorized()
    return identity.with_authenticated()


def impersonate(requester: Identity, headers: HeaderView, authorizer: RbacAuthorizer) -> Identity:
    """The identity the request runs as: ``requester`` itself, or the impersonated one if allowed."""
    user = headers.get("impersonate-user")
    groups = headers.getlist("impersonate-group")
    uid = headers.get("impersonate-uid")
    extra: dict[str, tuple[str, ...]] = {}
    for key in headers.keys():
        if key.startswith(EXTRA_PREFIX):
            extra[unquote(key[len(EXTRA_PREFIX):])] = tuple(headers.getlist(key))
    if user is None:
        if groups or extra or uid:
            requested = [*(f"Group={g}" for g in groups), *(f"Extra={k}" for k in extra)]
            raise errors.internal_error(f"requested {requested} without impersonating a user")
        return requester

    def check(
        resource: str, name: str, *, namespace: str = "", api_group: str = "", subresource: str = ""
    ) -> None:
        attrs = Attributes(identity=requester, verb="impersonate", api_group=api_group, resource=resource,
                           subresource=subresource, name=name, namespace=namespace)
        if not authorizer.allowed(attrs):
            reason = forbidden_reason(attrs)
            raise errors.forbidden(resource=resource, group=api_group, name=name, reason=reason)

    if user.startswith(SERVICE_ACCOUNT_PREFIX):
        namespace, _, name = user[len(SERVICE_ACCOUNT_PREFIX):].partition(":")
        check("serviceaccounts", name, namespace=namespace)
    else:
        check("users", user)
    for group in groups:
        check("groups", group)
    if uid is not None:
        check("uids", uid, api_group="authentication.k8s.io")
    for key, values in extra.items():
        for value in values:
            check("userextras", value, api_group="authentication.k8s.io", subresource=key)

    if not groups and user.startswith(SERVICE_ACCOUNT_PREFIX):
        namespace = user[len(SERVICE_ACCOUNT_PREFIX):].partition(":")[0]
        groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
    if user != "system:anonymous" and AUTHENTICATED_GROUP not in groups:
        groups = [*groups, AUTHENTICATED_GROUP]
    return Identity(username=user, groups=tuple(groups), uid=uid or "", extra=extra)
