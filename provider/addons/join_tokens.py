"""A join wave's bootstrap token inside the cluster: the ``kube-system/bootstrap-token-<id>`` Secret kubeadm
reads when a node joins, put there through the tunnel for every wave after the first (``kubeadm init``
creates the first wave's itself) and deleted once the wave joined.

Called by the reconcile pass (``provider.reconciler.reconcile``) with an applier of ``provider.addons``. The
Secret is what ``kubeadm token create`` writes; the controller manager's token cleaner also deletes it when
it expires, so a deletion that does not get through is not a leak for longer than the token's life.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from provider.bootstrap.kubeadm import BOOTSTRAP_TOKEN_GROUP


def bootstrap_token_secret(
    *, cluster_id: str, token_id: str, secret: str, expires_at: datetime
) -> dict[str, Any]:
    expiration = expires_at.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": f"bootstrap-token-{token_id}",
            "namespace": "kube-system",
            "labels": {"app.kubernetes.io/managed-by": "kaas"},
        },
        "type": "bootstrap.kubernetes.io/token",
        "stringData": {
            "description": f"kaas join token of cluster {cluster_id}",
            "token-id": token_id,
            "token-secret": secret,
            "expiration": expiration,
            "usage-bootstrap-authentication": "true",
            "usage-bootstrap-signing": "true",
            "auth-extra-groups": BOOTSTRAP_TOKEN_GROUP,
        },
    }
