"""The API's side of upgrades: start one (``PATCH .../clusters/{c}`` with ``kubernetes_version``, ``POST
.../node-pools/{pool}/upgrade``) and turn ``kaas_core.upgrades``' errors into the API's.

Called by ``kaas_api.clusters.endpoints`` and ``kaas_api.operations.service`` (rollback). The checks and the
desired state live in ``kaas_core.upgrades`` (the provider's automatic upgrades share them); this module adds
the 422/409 answers and the reconcile after the commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kaas_api.clusters.service import get_node_pool, request_reconcile
from kaas_api.dispatch import UnitOfWork
from kaas_api.errors import Conflict, InvalidInput
from kaas_core.db.models import Cluster, Operation
from kaas_core.upgrades import UpgradeConflict, UpgradeRefused, UpgradeStrategy, begin_upgrade


@contextmanager
def api_errors() -> Iterator[None]:
    """``UpgradeRefused`` → 422 (field, rule); ``UpgradeConflict`` → 409 naming the operation."""
    try:
        yield
    except UpgradeRefused as exc:
        raise InvalidInput(exc.message, field=exc.field, rule=exc.rule) from exc
    except UpgradeConflict as exc:
        detail = {"operation_id": exc.operation_id} if exc.operation_id else None
        raise Conflict(exc.message, detail=detail) from exc


def upgrade_cluster(
    uow: UnitOfWork, cluster: Cluster, *, to_version: str, strategy: UpgradeStrategy, requested_by: str
) -> Operation:
    """Upgrade the control plane and every pool."""
    with api_errors():
        operation = begin_upgrade(
            uow.session,
            cluster,
            to_version=to_version,
            pool_names=None,
            strategy=strategy,
            requested_by=requested_by,
        )
    request_reconcile(uow, cluster)
    return operation


def upgrade_node_pool(
    uow: UnitOfWork,
    cluster: Cluster,
    pool_name: str,
    *,
    to_version: str | None,
    strategy: UpgradeStrategy,
    requested_by: str,
) -> Operation:
    """Upgrade one pool's kubelets, by default to the cluster's version."""
    pool = get_node_pool(cluster, pool_name)  # 404 for a pool the cluster has not
    with api_errors():
        operation = begin_upgrade(
            uow.session,
            cluster,
            to_version=to_version or cluster.kubernetes_version,
            pool_names=[pool.name],
            strategy=strategy,
            requested_by=requested_by,
        )
    request_reconcile(uow, cluster)
    return operation
