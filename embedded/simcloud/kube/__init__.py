"""A Kubernetes API stand-in (in-memory kube-apiserver emulator) that real kubectl can use.

Owned by the simulated cloud; used by kaas's embedded mode and by tests of the agent, the tunnel and
kubeconfig handling, because no real kube-apiserver can run here. It serves discovery, list/get/create/
update/patch/delete/watch for a table of core and RBAC kinds, bearer-token authentication, kube-apiserver's
impersonation, a small RBAC authorizer and ``kubectl exec`` over WebSocket (a few emulated commands).
``simcloud.kube.testing.run_kube_standin`` runs one on 127.0.0.1.
"""

from simcloud.kube.errors import KubeStatusError
from simcloud.kube.identity import Identity
from simcloud.kube.server import KubeStandin

__all__ = ["Identity", "KubeStandin", "KubeStatusError"]
