"""Starting and rolling back an upgrade: the pre-flight checks, the desired versions, the operation's params.

Shared by the API (``kaas_api.clusters.upgrades``: ``PATCH .../clusters/{c}`` with ``kubernetes_version``,
``POST .../node-pools/{pool}/upgrade``, ``POST /v1/operations/{id}/rollback``) and the provider's automatic
patch upgrades inside a maintenance window; so it lives below both. It writes desired state only (versions,
generation, the operation, ``next_reconcile_at``) and flushes; the caller commits and, after the commit,
sends the reconcile. ``provider.rollout`` reads the operation's ``params`` and replaces the nodes.

Errors are ours and carry what a caller needs to answer: ``UpgradeRefused`` (the request can never work as
it is: a 422 with the field and the rule) and ``UpgradeConflict`` (not now: another operation is unfinished,
or the cluster is being deleted; a 409 naming the operation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from kaas_core.db.models import (
    Cluster,
    ClusterPhase,
    NodePool,
    Operation,
    OperationKind,
    OperationState,
    utcnow,
)
from kaas_core.kube_versions import (
    KubeVersion,
    VersionError,
    check_control_plane_upgrade,
    check_kubelet_skew,
)
from kaas_core.operations import record_operation, unfinished_operation

MAX_SURGE_LIMIT = 10
MAX_UNAVAILABLE_LIMIT = 10
MIN_TIMEOUT_SECONDS = 30
MAX_TIMEOUT_SECONDS = 86400


class UpgradeRefused(Exception):
    """An upgrade that cannot be done as asked; ``field`` is a path into the request, ``rule`` says which
    check refused it (``not_offered``, ``version_skew``, ``single_control_plane``, ``out_of_range``)."""

    def __init__(self, message: str, *, field: str, rule: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.rule = rule


class UpgradeConflict(Exception):
    """Not now: the cluster has an unfinished operation (``operation_id``) or is being deleted."""

    def __init__(self, message: str, *, operation_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.operation_id = operation_id


@dataclass(frozen=True)
class UpgradeStrategy:
    """How the rollout replaces a pool's nodes (the control plane always goes one server at a time)."""

    max_surge: int = 1  # servers above the pool's count while it rolls
    max_unavailable: int = 0  # Ready nodes below the pool's count while it rolls
    drain_timeout_seconds: int = 600  # a drain blocked longer (a PodDisruptionBudget) pauses the operation
    node_ready_timeout_seconds: int = 600  # a new node not Ready within it pauses the operation

    def check(self) -> None:
        """Raise ``UpgradeRefused`` (field ``upgrade_strategy.<key>``) for a strategy out of bounds."""
        bounds = {
            "max_surge": (0, MAX_SURGE_LIMIT),
            "max_unavailable": (0, MAX_UNAVAILABLE_LIMIT),
            "drain_timeout_seconds": (MIN_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS),
            "node_ready_timeout_seconds": (MIN_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS),
        }
        for key, (low, high) in bounds.items():
            value = getattr(self, key)
            if not low <= value <= high:
                raise UpgradeRefused(
                    f"upgrade_strategy.{key} must be from {low} to {high} (got {value})",
                    field=f"upgrade_strategy.{key}",
                    rule="out_of_range",
                )
        if self.max_surge == 0 and self.max_unavailable == 0:
            raise UpgradeRefused(
                "upgrade_strategy: max_surge and max_unavailable cannot both be 0 (no node could ever be "
                "replaced); allow one surge server or one unavailable node",
                field="upgrade_strategy",
                rule="out_of_range",
            )

    def as_params(self) -> dict[str, int]:
        return {
            "max_surge": self.max_surge,
            "max_unavailable": self.max_unavailable,
            "drain_timeout_seconds": self.drain_timeout_seconds,
            "node_ready_timeout_seconds": self.node_ready_timeout_seconds,
        }


def pool_version(cluster: Cluster, pool: NodePool) -> str:
    """The version a pool's nodes should run: its own, or the cluster's when it follows the cluster."""
    return pool.kubernetes_version or cluster.kubernetes_version


def _affected_pools(cluster: Cluster, pool_names: list[str] | None) -> list[NodePool]:
    if pool_names is None:
        return list(cluster.node_pools)
    by_name = {pool.name: pool for pool in cluster.node_pools}
    missing = [name for name in pool_names if name not in by_name]
    if missing:
        raise UpgradeRefused(
            f"cluster {cluster.name!r} has no node pool {missing[0][:80]!r}; "
            f"it has: {', '.join(sorted(by_name)) or '(none)'}",
            field="pool",
            rule="unknown_node_pool",
        )
    return [by_name[name] for name in pool_names]


def _refuse_version(exc: VersionError) -> UpgradeRefused:
    return UpgradeRefused(str(exc), field="kubernetes_version", rule="version_skew")


def check_upgrade(
    session: Session,
    cluster: Cluster,
    *,
    to_version: str,
    pool_names: list[str] | None,
    strategy: UpgradeStrategy | None = None,
) -> None:
    """The pre-flight of an upgrade of the control plane and every pool (``pool_names`` None) or of the named
    pools only. Raises ``UpgradeRefused`` or ``UpgradeConflict``; needs ``cluster.region`` and
    ``cluster.node_pools`` loaded."""
    if cluster.phase in (ClusterPhase.DELETING.value, ClusterPhase.DELETED.value) or cluster.deleted_at:
        raise UpgradeConflict(f"cluster {cluster.name!r} is being deleted; it cannot be upgraded")
    # "not now" before "never like this": a second upgrade during one is told about the first
    unfinished = unfinished_operation(session, cluster)
    if unfinished is not None:
        raise UpgradeConflict(
            f"cluster {cluster.name!r} has an unfinished {unfinished.kind} operation {unfinished.id} "
            f"({unfinished.state}); wait for it, or resume, roll back or cancel it first",
            operation_id=unfinished.id,
        )
    if strategy is not None:
        strategy.check()
    offered = list(cluster.region.kubernetes_versions or [])
    if to_version not in offered:
        raise UpgradeRefused(
            f"kubernetes_version {to_version[:40]!r} is not offered in region {cluster.region.name!r}; "
            f"allowed: {', '.join(offered) or '(none configured)'}",
            field="kubernetes_version",
            rule="not_offered",
        )
    pools = _affected_pools(cluster, pool_names)
    if pool_names is None:
        if cluster.control_plane_count == 1:
            raise UpgradeRefused(
                f"cluster {cluster.name!r} has one control-plane node, and its API endpoint is that server's "
                "own address: replacing it with a server at the new version cannot be done without "
                "downtime, so kaas does not upgrade it in place. A cluster with 3 control-plane nodes "
                "(behind a load balancer) upgrades without downtime; its node pools can be upgraded up to "
                "the control plane's version (POST .../node-pools/{pool}/upgrade)",
                field="kubernetes_version",
                rule="single_control_plane",
            )
        try:
            check_control_plane_upgrade(cluster.kubernetes_version, to_version)
        except VersionError as exc:
            raise _refuse_version(exc) from None
    else:
        target = KubeVersion.parse(to_version)
        try:
            check_kubelet_skew(control_plane=cluster.kubernetes_version, kubelet=to_version)
        except VersionError as exc:
            raise _refuse_version(exc) from None
        if target > KubeVersion.parse(cluster.kubernetes_version):
            raise UpgradeRefused(
                f"node pools cannot run {target}: it is newer than the control plane's "
                f"{cluster.kubernetes_version}; upgrade the cluster first",
                field="kubernetes_version",
                rule="version_skew",
            )
        for pool in pools:
            current = pool_version(cluster, pool)
            if target == KubeVersion.parse(current):
                raise UpgradeRefused(
                    f"node pool {pool.name!r} already runs Kubernetes {current}",
                    field="kubernetes_version",
                    rule="version_skew",
                )
            if target < KubeVersion.parse(current):
                raise UpgradeRefused(
                    f"{target} is older than node pool {pool.name!r}'s {current}: kaas does not downgrade "
                    "(roll back the upgrade operation instead)",
                    field="kubernetes_version",
                    rule="version_skew",
                )


def upgrade_targets(cluster: Cluster) -> list[str]:
    """The region's versions that ``check_upgrade``'s version rule accepts for the whole cluster (newer than
    its version, at most the next minor), oldest first; what the dashboard's Upgrade form offers. The other
    refusals (an unfinished operation, one control-plane node) do not depend on the version and are left
    to ``check_upgrade``. Needs ``cluster.region`` loaded."""
    targets: list[tuple[KubeVersion, str]] = []
    for text in cluster.region.kubernetes_versions or []:
        try:
            check_control_plane_upgrade(cluster.kubernetes_version, text)
        except VersionError:
            continue
        targets.append((KubeVersion.parse(text), text))
    return [text for _, text in sorted(targets)]


def begin_upgrade(
    session: Session,
    cluster: Cluster,
    *,
    to_version: str,
    pool_names: list[str] | None,
    strategy: UpgradeStrategy,
    requested_by: str | None,
) -> Operation:
    """Check, then record the upgrade: desired versions, generation + 1, the ``upgrade`` operation with its
    params, and the cluster due now. ``pool_names`` None upgrades the control plane and every pool."""
    check_upgrade(session, cluster, to_version=to_version, pool_names=pool_names, strategy=strategy)
    pools = _affected_pools(cluster, pool_names)
    before = {pool.name: pool_version(cluster, pool) for pool in pools}
    with_control_plane = pool_names is None
    if with_control_plane:
        from_version: str | None = cluster.kubernetes_version
    else:
        distinct = set(before.values())
        from_version = distinct.pop() if len(distinct) == 1 else None
    params: dict[str, Any] = {
        "from_version": from_version,
        "to_version": to_version,
        "control_plane": with_control_plane,
        "pools": [pool.name for pool in pools],
        "pool_versions_before": before,
        **strategy.as_params(),
    }
    if with_control_plane:
        cluster.kubernetes_version = to_version
    for pool in pools:
        pool.kubernetes_version = to_version
    _spec_changed(session, cluster)
    return record_operation(
        session, cluster, kind=OperationKind.UPGRADE, requested_by=requested_by, params=params
    )


def _spec_changed(session: Session, cluster: Cluster) -> None:
    now = utcnow()
    cluster.generation += 1
    cluster.phase = ClusterPhase.UPDATING.value
    cluster.updated_at = now
    cluster.next_reconcile_at = now
    session.flush()


def rollback_refusal(operation: Operation) -> UpgradeConflict | None:
    """Why ``operation`` cannot be rolled back now, or None when it can (an unfinished upgrade not already
    rolling back). ``rollback_upgrade`` raises it; the dashboard shows its Roll back button when None."""
    if operation.kind != OperationKind.UPGRADE.value:
        return UpgradeConflict(f"operation {operation.id} is a {operation.kind}: only upgrades roll back")
    if OperationState(operation.state).finished:
        return UpgradeConflict(
            f"operation {operation.id} is {operation.state}: only an unfinished upgrade rolls back",
            operation_id=operation.id,
        )
    if operation.rolling_back:
        return UpgradeConflict(f"operation {operation.id} is already rolling back", operation_id=operation.id)
    return None


def rollback_upgrade(session: Session, operation: Operation, cluster: Cluster) -> Operation:
    """Turn an unfinished upgrade around: the desired versions go back to what ``params`` recorded, and the
    same careful rollout brings replaced nodes back to the old build. The operation runs again (cleared of
    its pause), targeting the new generation; ``cluster`` is the operation's, with its pools loaded."""
    refusal = rollback_refusal(operation)
    if refusal is not None:
        raise refusal
    params = operation.params or {}
    before: dict[str, str] = dict(params.get("pool_versions_before") or {})
    if params.get("control_plane") and params.get("from_version"):
        cluster.kubernetes_version = str(params["from_version"])
    for pool in cluster.node_pools:
        if pool.name in before:
            pool.kubernetes_version = before[pool.name]
    _spec_changed(session, cluster)
    operation.rolling_back = True
    operation.state = OperationState.RUNNING.value
    operation.paused_reason = None
    operation.target_generation = cluster.generation
    session.flush()
    return operation


def pending_upgrade(cluster: Cluster) -> str | None:
    """The newest of the region's automatic upgrades on the cluster's minor that is newer than its version."""
    try:
        current = KubeVersion.parse(cluster.kubernetes_version)
    except VersionError:
        return None
    best: tuple[KubeVersion, str] | None = None
    for text in cluster.region.automatic_upgrades or []:
        try:
            candidate = KubeVersion.parse(text)
        except VersionError:
            continue
        same_minor = (candidate.major, candidate.minor) == (current.major, current.minor)
        if same_minor and candidate > current and (best is None or candidate > best[0]):
            best = (candidate, text)
    return best[1] if best is not None else None
