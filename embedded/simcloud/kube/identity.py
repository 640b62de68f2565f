"""Who a request runs as: the user name, groups and extra attributes after authentication/impersonation.

Owned by the Kubernetes stand-in; built by ``simcloud.kube.auth`` and read by ``simcloud.kube.rbac``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

AUTHENTICATED_GROUP = "system:authenticated"
MASTERS_GROUP = "system:masters"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class Identity:
    """An authenticated user. ``system:authenticated`` is added by the authenticator, not listed here."""

    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def service_account(cls, namespace: str, name: str) -> Identity:
        return cls(
            username=f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}",
            groups=("system:serviceaccounts", f"system:serviceaccounts:{namespace}"),
        )

    def with_authenticated(self) -> Identity:
        if AUTHENTICATED_GROUP in self.groups:
            return self
        return Identity(self.username, (*self.groups, AUTHENTICATED_GROUP), self.uid, self.extra)
