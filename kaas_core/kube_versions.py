"""Kubernetes version arithmetic and the skew rules kaas upgrades by; pure, no I/O.

Shared by the API's pre-flight (``kaas_api.clusters.upgrades``: refuse an upgrade the control plane would
not support, with the reason) and the provider's rollout (``provider.rollout``: which nodes are old).
Versions are kaas's plain ``MAJOR.MINOR.PATCH`` (the API's ``Version`` pattern); a leading ``v`` as
kubelets report it is accepted. The rules are upstream's version skew policy: the control plane moves one
minor at a time (or by patch), never down except by a rollback of the same operation, and a kubelet is
never newer than the apiserver and at most three minors older.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import total_ordering

KUBELET_MAX_MINORS_BEHIND = 3


class VersionError(ValueError):
    """A version that is not MAJOR.MINOR.PATCH, or a change the skew policy does not allow."""


@total_ordering
@dataclass(frozen=True)
class KubeVersion:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> KubeVersion:
        core = text.strip().removeprefix("v").split("-", 1)[0].split("+", 1)[0]
        parts = core.split(".")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise VersionError(f"{text[:40]!r} is not a version of the form MAJOR.MINOR.PATCH")
        return cls(int(parts[0]), int(parts[1]), int(parts[2]))

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, KubeVersion):
            return NotImplemented
        return (self.major, self.minor, self.patch) < (other.major, other.minor, other.patch)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def same_version(a: str | None, b: str | None) -> bool:
    """``1.37.2`` and ``v1.37.2`` are the same; an unparsable or missing one is the same only as itself."""
    if a is None or b is None:
        return a == b
    try:
        return KubeVersion.parse(a) == KubeVersion.parse(b)
    except VersionError:
        return a == b


def check_control_plane_upgrade(current: str, target: str) -> None:
    """Raise ``VersionError`` unless ``target`` is a patch or the next minor of ``current``."""
    old, new = KubeVersion.parse(current), KubeVersion.parse(target)
    if new == old:
        raise VersionError(f"the cluster already runs Kubernetes {old}")
    if new < old:
        raise VersionError(
            f"{new} is older than the cluster's {old}: kaas does not downgrade (roll back "
            "the upgrade operation instead)"
        )
    if new.major != old.major or new.minor > old.minor + 1:
        raise VersionError(
            f"{old} to {new} skips a minor version: the control plane moves one minor at a time "
            f"(next: {old.major}.{old.minor + 1}.x)"
        )


def check_kubelet_skew(*, control_plane: str, kubelet: str) -> None:
    """Raise ``VersionError`` when a kubelet at ``kubelet`` may not join a control plane at that version."""
    cp, node = KubeVersion.parse(control_plane), KubeVersion.parse(kubelet)
    if (node.major, node.minor) > (cp.major, cp.minor):
        raise VersionError(f"a node at {node} would be newer than its control plane at {cp}")
    if node.major != cp.major or cp.minor - node.minor > KUBELET_MAX_MINORS_BEHIND:
        raise VersionError(
            f"a node at {node} would be more than {KUBELET_MAX_MINORS_BEHIND} minors behind its "
            f"control plane at {cp}"
        )
