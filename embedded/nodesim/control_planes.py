"""The kube-apiserver behind each simulated cluster: a real control plane, or the pure-Python stand-in.

Owned by ``nodesim``; ``nodesim.booter.NodeBooter`` asks ``ControlPlanes.start`` for one per cluster (a
blocking call: the booter runs it in a worker thread) and then talks to it through ``ClusterControlPlane``
only: a kubeconfig for the cluster's agent, the Nodes that follow the cluster's servers, a health check, and
``close``. Which kind a cluster gets (``ControlPlanes.kind_for``):

- **real** (``nodesim.kube_real``: etcd, kube-apiserver, controller manager, scheduler and kwok) when the
  programs of the cluster's Kubernetes version are built (``releases``, from ``nodesim.kube_releases``).
  Its PKI is the one the control-plane node's user-data writes under ``/etc/kubernetes/pki`` (kubeadm's
  names), copied into ``<workdir>/pki``; the pairs the user-data lacks are generated there once and kept
  (until kaas's bootstrap puts the cluster's PKI into the user-data, every pair is). The serving
  certificate also names the cluster's endpoint (the node config's ``api_endpoint``). kaas's RBAC manifest is
  applied for real (server-side apply, as the admin), and the agent authenticates as ServiceAccount
  ``kaas-system/kaas-agent`` with a bound token (TokenRequest, one hour) in ``<workdir>/agent.token``,
  re-issued at 80 % of its life as a kubelet refreshes a pod's projected token (the agent re-reads the file
  when it changes). Nodes are registered as a kubelet registers itself, labels and taints included; a Ready
  one carries kwok's annotation, so kwok keeps its lease and status and runs its pods, a server that is not
  ACTIVE is a Node kwok does not manage, with Ready False. etcd's data stays in ``<workdir>/control-plane``.
  ``start`` returns once the ``default`` ServiceAccount exists: a cluster kaas reports running takes pods.
  Every client reaches it through its balancer (``nodesim.apiserver_balancer``); ``sync_members`` runs one
  kube-apiserver per ACTIVE, joined control-plane server at that server's version on the one etcd (etcd
  membership is not simulated), takes a leaving one out of the balancer before stopping it, and moves the
  controller manager and the scheduler to the newest version once no apiserver of theirs is left.
- **stand-in** (``simcloud.kube``) otherwise: a laptop without Go, a version that is not built, the
  1,000-cluster benchmark, and a cluster first booted on the stand-in (its objects are in
  ``<workdir>/objects.json``, and stay there rather than vanish into a fresh etcd).

Nothing here logs a token, a key or user-data.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import yaml

from nodesim.kube_admin import (
    KubeAdminError,
    admin_client,
    apply_documents,
    create_node,
    delete_node,
    get_object,
    issue_service_account_token,
    list_nodes,
    load_manifest,
    merge_patch,
    patch_node,
    wait_for_aggregated_roles,
    wait_for_service_account,
)
from nodesim.kube_real import (
    KWOK_NODE_ANNOTATION,
    KWOK_NODE_ANNOTATION_VALUE,
    PKI_FILES,
    SERVICE_CLUSTER_IP_RANGE,
    ControlPlaneError,
    KubeadmIssued,
    KubeletOptions,
    RealControlPlane,
    ensure_cluster_pki,
    fake_node,
    issue_apiserver_certificate,
    start_control_plane,
)
from nodesim.kube_releases import version_key
from nodesim.kubeadm_node import (
    CLUSTER_INFO,
    STEP_CONTROL_PLANE_PREPARE,
    STEP_DISCOVERY,
    STEP_INIT,
    STEP_JOIN,
    UNINITIALIZED_TAINT,
    KubeadmDocuments,
    KubeletCredentials,
    NodeBootFailed,
    create_bootstrap_token,
    discover,
    init_certificates,
    join_apiserver_certificate,
    kubelet_credentials,
    kubelet_may_set,
    node_client,
    tls_bootstrap,
    write_init_config,
)
from nodesim.userdata import AUTHORITY_FILES, KUBEADM_CONFIG_PATH
from simcloud.kube.errors import KubeStatusError
from simcloud.kube.identity import Identity
from simcloud.kube.resources import ResourceType, find
from simcloud.kube.testing import KubeStandinHandle, kubeconfig_document, run_kube_standin

logger = logging.getLogger(__name__)

REAL = "real"
STANDIN = "stand-in"
AGENT_NAMESPACE = "kaas-system"
AGENT_SERVICE_ACCOUNT = "kaas-agent"
AGENT_TOKEN_SECONDS = 3600
# as kubelet: a projected token is refreshed once 80 % of its life has passed
TOKEN_REFRESH_FRACTION = 0.8
SERVER_ID_ANNOTATION = "kaas.io/server-id"
STANDIN_OBJECTS_FILE = "objects.json"
CONTROL_PLANE_DIR = "control-plane"
AGENT_TOKEN_FILE = "agent.token"  # noqa: S105 (a file name)
FIRST_APISERVER = "kube-apiserver"  # the first apiserver's member name when no server is named
MEMBER_RETRY_SECONDS = 30.0  # a member apiserver that failed to start is tried again after this


class ControlPlaneStartError(Exception):
    """A cluster's control plane could not be started; the message says why (never a secret)."""


@dataclass(frozen=True)
class NodeSpec:
    """One Node as the cluster's servers say it should be."""

    name: str
    server_id: str
    ready: bool
    labels: tuple[tuple[str, str], ...]
    taints: tuple[tuple[str, str, str], ...]
    kubelet_version: str


@dataclass(frozen=True)
class ClusterRequest:
    """What the booter knows of a cluster when it starts its control plane."""

    cluster_id: str
    version: str  # "v1.37.2"
    workdir: Path  # owner-only; everything of the cluster lives under it
    endpoint: str | None = None  # the node config's api_endpoint
    pki: Mapping[str, bytes] = field(default_factory=dict, repr=False)  # AUTHORITY_FILES name -> content
    # the first control plane's kubeadm documents (an InitConfiguration): a real control plane is then
    # started as kubeadm init starts it (``nodesim.kubeadm_node``)
    kubeadm: KubeadmDocuments | None = None
    advertise_address: str | None = None  # the server's address, which kubeadm would detect on the VM
    server_id: str | None = None  # the server whose user-data this is
    # that server's addresses, which a serving certificate kubeadm did not issue names
    server_names: tuple[str, ...] = ()
    agent_manifest: tuple[dict[str, Any], ...] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class MemberSpec:
    """One control-plane server whose apiserver runs: ACTIVE and joined (its boot succeeded)."""

    server_id: str
    node_name: str
    version: str  # its node config's Kubernetes version ("v1.37.2")
    advertise_address: str | None = None  # its own address in Nova, which kubeadm detects on the VM
    server_names: tuple[str, ...] = ()  # its addresses, for a serving certificate not issued by kubeadm


@dataclass(frozen=True)
class NodeBoot:
    """One server's boot as the booter sees it: its kubeadm documents, the authorities its user-data
    writes, and the addresses at which the cloud routes to the cluster's apiserver."""

    server_id: str
    node_name: str
    documents: KubeadmDocuments | None
    reachable_hosts: frozenset[str]
    pki: Mapping[str, bytes] = field(default_factory=dict, repr=False)


class ClusterControlPlane(Protocol):
    """One cluster's running apiserver, as the booter uses it (from its worker thread)."""

    @property
    def kind(self) -> str: ...  # REAL or STANDIN

    @property
    def url(self) -> str: ...

    @property
    def version(self) -> str: ...

    def apply(self, documents: list[dict[str, Any]]) -> None:
        """Create or update ``documents`` as the cluster's admin (bootstrap manifests; tests arrange so)."""

    def write_agent_kubeconfig(self, path: Path) -> None:
        """A kubeconfig (0600) with which the agent reaches this apiserver as ``kaas-system/kaas-agent``."""

    def refresh_agent_credentials(self) -> None:
        """Renew what the agent's kubeconfig uses, when it is due (cheap when it is not)."""

    def sync_nodes(self, nodes: Mapping[str, NodeSpec]) -> None:
        """Make the cluster's Nodes these (the ones nodesim registered; others are left alone)."""

    def boot_node(self, boot: NodeBoot) -> None:
        """Play ``boot``'s kubeadm part against this control plane (a joining node's discovery and TLS
        bootstrap); ``NodeBootFailed`` when it fails. A node may register only once this returned."""

    def sync_members(self, members: Mapping[str, MemberSpec]) -> None:
        """One apiserver per member (server id → ``MemberSpec``), at the member's version: start the ones
        missing (or dead), take out and stop the ones whose server is gone or not ACTIVE (never the last
        one), and move the controller manager and the scheduler when their version has no apiserver left."""

    @property
    def apiserver_versions(self) -> tuple[str, ...]:
        """The versions of the running apiservers, one per apiserver (sorted)."""

    def healthy(self) -> bool:
        """Whether it still runs (a real control plane whose process died is not)."""

    def close(self) -> None:
        """Stop it; what persists stays in the cluster's workdir."""


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (0600) all at once: a reader sees the old content or the new, never half."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    temporary.replace(path)


def _node_type() -> ResourceType:
    rtype = find("", "v1", "nodes")
    assert rtype is not None
    return rtype


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _not_ready_condition() -> dict[str, str]:
    now = _now()
    return {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": "server not ACTIVE",
            "lastHeartbeatTime": now, "lastTransitionTime": now}


# --- the stand-in ---


def standin_node_object(spec: NodeSpec) -> dict[str, Any]:
    """The stand-in's Node for ``spec``: nothing runs there to keep a status, so it carries its own."""
    now = _now()
    ready_condition = (
        {"type": "Ready", "status": "True", "reason": "KubeletReady",
         "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}
        if spec.ready else _not_ready_condition()
    )
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": spec.name, "labels": dict(spec.labels),
                     "annotations": {SERVER_ID_ANNOTATION: spec.server_id}},
        "spec": {
            "providerID": f"openstack:///{spec.server_id}",
            "taints": [{"key": key, "value": value, "effect": effect} for key, value, effect in spec.taints],
        },
        "status": {
            "conditions": [ready_condition],
            "nodeInfo": {"kubeletVersion": spec.kubelet_version, "operatingSystem": "linux"},
            "addresses": [{"type": "Hostname", "address": spec.name}],
        },
    }


class StandinControlPlane:
    """The Python stand-in apiserver of one cluster, with kaas's RBAC and a static agent token."""

    kind = STANDIN

    def __init__(self, *, stack: contextlib.ExitStack, handle: KubeStandinHandle, agent_token: str) -> None:
        self._stack = stack
        self.handle = handle
        self._agent_token = agent_token
        self._applied: dict[str, NodeSpec] = {}
        self._node_type = _node_type()

    @property
    def url(self) -> str:
        return self.handle.url

    @property
    def version(self) -> str:
        return self.handle.standin.version

    def apply(self, documents: list[dict[str, Any]]) -> None:
        self.handle.standin.apply(documents)

    def write_agent_kubeconfig(self, path: Path) -> None:
        self.handle.write_kubeconfig(path, token=self._agent_token, namespace=AGENT_NAMESPACE)

    def refresh_agent_credentials(self) -> None:
        return None  # the stand-in's tokens never expire

    def sync_nodes(self, nodes: Mapping[str, NodeSpec]) -> None:
        store = self.handle.standin.store
        for name in [name for name in self._applied if name not in nodes]:
            with contextlib.suppress(KubeStatusError):
                store.delete(self._node_type, "", name)
            del self._applied[name]
        for name, spec in nodes.items():
            if self._applied.get(name) != spec:
                self.handle.standin.apply([standin_node_object(spec)])
                self._applied[name] = spec

    def boot_node(self, boot: NodeBoot) -> None:
        return None  # the stand-in serves no cluster-info and signs nothing: its nodes join unchecked

    def sync_members(self, members: Mapping[str, MemberSpec]) -> None:
        return None  # one stand-in apiserver, whatever the number of control-plane servers

    @property
    def apiserver_versions(self) -> tuple[str, ...]:
        return (self.version,)

    def healthy(self) -> bool:
        return True

    def close(self) -> None:
        self._stack.close()


# --- the real control plane ---


def real_node_object(spec: NodeSpec) -> dict[str, Any]:
    """The Node a kubelet would register for ``spec``: managed by kwok when Ready (kwok then keeps its
    status and lease and runs its pods), else unmanaged with Ready False."""
    node = fake_node(spec.name, labels=dict(spec.labels))
    metadata = node["metadata"]
    metadata["labels"] = dict(spec.labels)  # exactly the spec's, without fake_node's "type: kwok"
    metadata["annotations"] = {SERVER_ID_ANNOTATION: spec.server_id}
    if spec.ready:
        metadata["annotations"][KWOK_NODE_ANNOTATION] = KWOK_NODE_ANNOTATION_VALUE
    node["spec"] = {
        "providerID": f"openstack:///{spec.server_id}",
        "taints": [{"key": key, "value": value, "effect": effect} for key, value, effect in spec.taints],
    }
    node["status"]["nodeInfo"] = {"kubeletVersion": spec.kubelet_version, "operatingSystem": "linux",
                                  "architecture": "amd64"}
    if not spec.ready:
        node["status"]["conditions"] = [_not_ready_condition()]
    return node


def _managed_by_kwok(node: Mapping[str, Any]) -> bool:
    annotations = (node.get("metadata") or {}).get("annotations") or {}
    return bool(annotations.get(KWOK_NODE_ANNOTATION) == KWOK_NODE_ANNOTATION_VALUE)


def _registered_by_nodesim(node: Mapping[str, Any]) -> bool:
    return SERVER_ID_ANNOTATION in ((node.get("metadata") or {}).get("annotations") or {})


class RealClusterControlPlane:
    """One cluster's real control plane, the admin client nodesim drives it with, and the agent's token."""

    kind = REAL

    def __init__(self, *, control_plane: RealControlPlane, version: str, workdir: Path,
                 token_seconds: int = AGENT_TOKEN_SECONDS,
                 clock: Callable[[], float] = time.monotonic,
                 kubeadm_init: KubeadmInit | None = None,
                 releases: Mapping[str, Path] | None = None,
                 endpoint_names: tuple[str, ...] = (),
                 start_timeout: float = 180.0) -> None:
        """``kubeadm_init``: the control plane was started as ``kubeadm init`` starts one; its other nodes
        then join only through a discovery and a TLS bootstrap that this cluster accepts. ``releases``: the
        built programs, from which each member's apiserver runs at its version; ``endpoint_names``: the
        cluster's endpoint host, which a member's serving certificate names (when kubeadm does not issue
        it)."""
        self.control_plane = control_plane
        self._releases = dict(releases or {})
        self._endpoint_names = endpoint_names
        self._start_timeout = start_timeout
        self._member_failed_at: dict[str, float] = {}  # server id -> when its apiserver last failed to start
        self._unbuilt_logged: set[str] = set()
        self.clock = clock  # when the agent's token is due for renewal
        self._version = version
        self._workdir = workdir
        self._token_seconds = token_seconds
        self.admin_client = admin_client(control_plane)
        self._token_due = 0.0  # monotonic time at which the agent's token is renewed
        self._lock = threading.Lock()
        self.kubeadm_init = kubeadm_init
        self._kubelets: dict[str, KubeletCredentials] = {}  # node name -> its TLS-bootstrapped identity

    @property
    def url(self) -> str:
        return self.control_plane.url

    @property
    def version(self) -> str:
        return self._version

    @property
    def admin_kubeconfig(self) -> Path:
        return self.control_plane.admin_kubeconfig

    def apply(self, documents: list[dict[str, Any]]) -> None:
        """Server-side apply ``documents`` as the cluster admin (kaas's RBAC; tests arrange objects so)."""
        apply_documents(self.admin_client, documents)

    def _renew_token(self) -> None:
        issued = issue_service_account_token(
            self.admin_client, namespace=AGENT_NAMESPACE, name=AGENT_SERVICE_ACCOUNT,
            expiration_seconds=self._token_seconds,
        )
        _write_private(self._workdir / AGENT_TOKEN_FILE, issued.token.encode())
        lifetime = max((issued.expires_at - datetime.now(UTC)).total_seconds(), 60.0)
        self._token_due = self.clock() + lifetime * TOKEN_REFRESH_FRACTION

    def write_agent_kubeconfig(self, path: Path) -> None:
        with self._lock:
            if not (self._workdir / AGENT_TOKEN_FILE).exists() or self.clock() >= self._token_due:
                self._renew_token()
        document = kubeconfig_document(server=self.url, token="", ca=self.control_plane.ca_pem,
                                       namespace=AGENT_NAMESPACE, name="kaas-nodesim")
        users: Any = document["users"]
        # relative to the kubeconfig's folder, as kubectl and the agent resolve it
        users[0]["user"] = {"tokenFile": os.path.relpath(self._workdir / AGENT_TOKEN_FILE, path.parent)}
        _write_private(path, yaml.safe_dump(document).encode())

    def refresh_agent_credentials(self) -> None:
        with self._lock:
            if self.clock() >= self._token_due:
                self._renew_token()

    def sync_nodes(self, nodes: Mapping[str, NodeSpec]) -> None:
        existing = list_nodes(self.admin_client)
        for name, node in existing.items():
            if name not in nodes and _registered_by_nodesim(node):
                delete_node(self.admin_client, name)
                self._kubelets.pop(name, None)
        for name, spec in nodes.items():
            current = existing.get(name)
            if current is not None and _managed_by_kwok(current) == spec.ready:
                continue
            if current is not None:
                # kwok would keep a Node it manages Ready; a Node that changes sides registers again, as a
                # rebuilt machine's kubelet would
                delete_node(self.admin_client, name)
            if spec.ready and name in self._kubelets:
                self._register_as_kubelet(spec)
            else:
                create_node(self.admin_client, real_node_object(spec))

    def _register_as_kubelet(self, spec: NodeSpec) -> None:
        """The Node as its kubelet registers it, with its own certificate (NodeRestriction lets a node create
        only itself, with the labels a kubelet may set, tainted ``uninitialized`` under an external cloud
        provider); then, as the admin, what others do to it: kubeadm's role labels (``mark-control-plane``)
        and the cloud controller's initialization (``providerID`` of the server, the taint removed)."""
        final = real_node_object(spec)
        registered = json.loads(json.dumps(final))
        registered["metadata"]["labels"] = {k: v for k, v in spec.labels if kubelet_may_set(k)}
        uninitialized = {"key": UNINITIALIZED_TAINT, "value": "true", "effect": "NoSchedule"}
        registered["spec"] = {"taints": [*final["spec"]["taints"], uninitialized]}
        with node_client(api_url=self.url, ca_pem=self.control_plane.ca_pem,
                         cert_file=self._kubelet_dir(spec.name) / "kubelet-client.crt",
                         key_file=self._kubelet_dir(spec.name) / "kubelet-client.key") as node:
            create_node(node, registered)
        patch_node(self.admin_client, spec.name, {
            "metadata": {"labels": final["metadata"]["labels"]},
            "spec": {"providerID": final["spec"]["providerID"], "taints": final["spec"]["taints"]},
        })

    def boot_node(self, boot: NodeBoot) -> None:
        init = self.kubeadm_init
        if init is None:
            return None  # started without kubeadm (no kubeadm documents): its nodes join unchecked
        documents = boot.documents
        if documents is None:
            raise NodeBootFailed(STEP_JOIN, f"the user-data has no {KUBEADM_CONFIG_PATH}")
        name = documents.node_name or boot.node_name
        known = self._known_kubelet(name)
        if known is not None:  # booted before (a restarted booter): its kubelet kept its identity on disk
            self._kubelets[name] = known
            return None
        if documents.initializes:
            if boot.server_id != init.server_id:
                raise NodeBootFailed(STEP_INIT, "the cluster was initialized by another server; a "
                                     "second kubeadm init would make a cluster of its own")
            self._remember_kubelet(name, kubelet_credentials(init.kubelet_kubeconfig))
            return None
        discovery = documents.discovery()
        if discovery.host not in boot.reachable_hosts:
            raise NodeBootFailed(STEP_DISCOVERY, f"cannot reach {discovery.endpoint}: no control plane of "
                                 "the cluster answers at that address", retryable=True)
        ca_pem = discover(discovery, api_url=self.url)
        if documents.joins_control_plane:
            self._check_authorities(boot)
        credentials = tls_bootstrap(discovery, api_url=self.url, ca_pem=ca_pem, node_name=name)
        self._remember_kubelet(name, credentials)
        return None

    def _kubelet_dir(self, name: str) -> Path:
        return self._workdir / "kubelets" / _safe_name(name)

    def _remember_kubelet(self, name: str, credentials: KubeletCredentials) -> None:
        folder = self._kubelet_dir(name)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_private(folder / "kubelet-client.key", credentials.key_pem)
        _write_private(folder / "kubelet-client.crt", credentials.cert_pem)
        self._kubelets[name] = credentials

    def _known_kubelet(self, name: str) -> KubeletCredentials | None:
        folder = self._kubelet_dir(name)
        try:
            return KubeletCredentials(cert_pem=(folder / "kubelet-client.crt").read_bytes(),
                                      key_pem=(folder / "kubelet-client.key").read_bytes())
        except OSError:
            return None

    def _check_authorities(self, boot: NodeBoot) -> None:
        """A joining control plane issues its certificates from the authorities its user-data writes
        (``kubeadm join phase control-plane-prepare certs``): they must be the cluster's."""
        assert self.kubeadm_init is not None
        for name in ("ca.crt", "front-proxy-ca.crt", "etcd/ca.crt", "sa.pub"):
            ours = (self.kubeadm_init.pki_dir / name).read_bytes()
            theirs = boot.pki.get(name)
            if theirs is None:
                raise NodeBootFailed(STEP_CONTROL_PLANE_PREPARE,
                                     f"the user-data writes no /etc/kubernetes/pki/{name}")
            if theirs.strip() != ours.strip():
                raise NodeBootFailed(STEP_CONTROL_PLANE_PREPARE,
                                     f"/etc/kubernetes/pki/{name} of the user-data is not the cluster's")

    @property
    def apiserver_versions(self) -> tuple[str, ...]:
        return tuple(sorted((a.version for a in self.control_plane.apiservers.values()), key=version_key))

    def sync_members(self, members: Mapping[str, MemberSpec]) -> None:
        apiservers = self.control_plane.apiservers
        for name, apiserver in list(apiservers.items()):
            if not apiserver.alive() and len(apiservers) > 1:
                logger.warning("nodesim: the apiserver of member %s exited; starting it again", name)
                self.control_plane.remove_apiserver(name)
        for server_id, member in members.items():
            if server_id in apiservers:
                continue
            failed_at = self._member_failed_at.get(server_id)
            if failed_at is not None and self.clock() - failed_at < MEMBER_RETRY_SECONDS:
                continue
            if member.version not in self._releases:
                if server_id not in self._unbuilt_logged:
                    self._unbuilt_logged.add(server_id)
                    logger.warning("nodesim: control plane %s runs no apiserver: Kubernetes %s is not built",
                                   member.node_name, member.version)
                continue
            try:
                self._start_member(member)
            except (ControlPlaneError, NodeBootFailed, OSError) as exc:
                self._member_failed_at[server_id] = self.clock()
                logger.warning("nodesim: the apiserver of control plane %s did not start (again in %ss): %s",
                               member.node_name, MEMBER_RETRY_SECONDS, exc)
                continue
            self._member_failed_at.pop(server_id, None)
            logger.info("nodesim: control plane %s: kube-apiserver %s joined the balancer", member.node_name,
                        member.version)
        # only once the new ones serve: the cluster's last apiserver is never stopped while it has servers
        for name in [name for name in apiservers if name not in members]:
            if len(apiservers) == 1:
                break
            self.control_plane.remove_apiserver(name)
            logger.info("nodesim: the apiserver of server %s left the balancer and stopped", name)
        self._move_components()

    def _start_member(self, member: MemberSpec) -> None:
        """As ``kubeadm join --control-plane`` on the server: its apiserver's serving certificate from the
        cluster's CA (by kubeadm, when the cluster was started by kubeadm init), then the apiserver at the
        member's version, on the cluster's one etcd."""
        release = self._releases[member.version]
        member_dir = self._workdir / "members" / _safe_name(member.server_id)
        pki_dir = member_dir / "pki"
        pki_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        init = self.kubeadm_init
        if init is not None and (release / "kubeadm").is_file():
            for name in ("ca.crt", "ca.key"):
                _write_private(pki_dir / name, (init.pki_dir / name).read_bytes())
            join_apiserver_certificate(kubeadm=release / "kubeadm", init_config=init.config, pki_dir=pki_dir,
                                       node_name=member.node_name, advertise_address=member.advertise_address,
                                       version=member.version)
            serving = (pki_dir / "apiserver.crt", pki_dir / "apiserver.key")
        else:
            assert self.control_plane.setup is not None
            serving = issue_apiserver_certificate(
                pki_dir=self.control_plane.setup.pki_dir, target_dir=pki_dir,
                server_names=tuple(dict.fromkeys((*member.server_names, *self._endpoint_names))))
        self.control_plane.add_apiserver(name=member.server_id, version=member.version, bin_dir=release,
                                         serving_crt=serving[0], serving_key=serving[1],
                                         timeout=self._start_timeout)

    def _move_components(self) -> None:
        """The controller manager and the scheduler run at the newest version among the apiservers, and move
        only when no apiserver of their own version is left (so they are never newer than an apiserver
        they may talk to: the skew policy's rule)."""
        versions = {a.version for a in self.control_plane.apiservers.values() if a.alive()}
        current = self.control_plane.components_version
        if not versions or current in versions:
            return
        newest = max(versions, key=version_key)
        if newest not in self._releases:
            return
        logger.info("nodesim: no apiserver runs %s any more: the controller manager and the scheduler "
                    "move to %s", current, newest)
        self.control_plane.run_components_at(version=newest, bin_dir=self._releases[newest])

    def healthy(self) -> bool:
        return self.control_plane.alive()

    def close(self) -> None:
        self.admin_client.close()
        self.control_plane.stop()


# --- which one, and starting it ---


def _host_of(endpoint: str | None) -> tuple[str, ...]:
    if not endpoint:
        return ()
    host = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}").hostname
    return (host,) if host else ()


class ControlPlanes:
    """Starts each cluster's control plane: real where its version is built, else the stand-in."""

    def __init__(self, *, rbac_manifest: Path, releases: Mapping[str, Path] | None = None, tls: bool = True,
                 persist: bool = False, kubelet: KubeletOptions | None = None,
                 start_timeout: float = 180.0) -> None:
        """``releases``: version (``v1.37.2``) → folder of its programs; empty runs every cluster on the
        stand-in. ``tls``: the stand-in over HTTPS (a real apiserver always is). ``persist``: the stand-in
        keeps its objects in the workdir (a real one always keeps etcd's data there; the booter removes the
        workdir of a cluster that is gone). ``kubelet``: what kwok serves for pods (``KubeletOptions``:
        logs by default; exec and port-forward only when a test asks)."""
        self._rbac_manifest = rbac_manifest
        self._releases = dict(releases or {})
        self._tls = tls
        self._persist = persist
        self._kubelet = kubelet
        self._start_timeout = start_timeout

    @property
    def releases(self) -> dict[str, Path]:
        return dict(self._releases)

    def kind_for(self, version: str, workdir: Path) -> str:
        """REAL when ``version`` is built, unless the cluster's objects already live in a stand-in's file."""
        if version not in self._releases:
            return STANDIN
        first_booted_on_standin = (workdir / STANDIN_OBJECTS_FILE).exists() and not (
            workdir / CONTROL_PLANE_DIR).exists()
        return STANDIN if first_booted_on_standin else REAL

    def start(self, request: ClusterRequest) -> ClusterControlPlane:
        """Start ``request``'s control plane (blocking: seconds for a real one). ``ControlPlaneStartError``
        when it cannot start."""
        request.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.kind_for(request.version, request.workdir) == REAL:
            return self._start_real(request)
        return self._start_standin(request)

    def _start_standin(self, request: ClusterRequest) -> StandinControlPlane:
        token = secrets.token_urlsafe(32)
        stack = contextlib.ExitStack()
        try:
            handle = stack.enter_context(run_kube_standin(
                version=request.version,
                tokens={token: Identity.service_account(AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT)},
                manifest_files=[self._rbac_manifest],
                tls=self._tls,
                state_file=request.workdir / STANDIN_OBJECTS_FILE if self._persist else None,
            ))
        except BaseException:
            stack.close()
            raise
        return StandinControlPlane(stack=stack, handle=handle, agent_token=token)

    def _start_real(self, request: ClusterRequest) -> RealClusterControlPlane:
        kubeadm = self._releases[request.version] / "kubeadm"
        if request.kubeadm is not None and request.kubeadm.initializes and kubeadm.is_file():
            return self._start_kubeadm(request, kubeadm=kubeadm)
        pki_dir = request.workdir / "pki"
        pki_dir.mkdir(exist_ok=True, mode=0o700)
        for name, content in request.pki.items():
            # userdata only yields these names; a caller's mistake must never write elsewhere
            if name not in PKI_FILES:
                raise ControlPlaneStartError(f"{name!r} is not a cluster PKI file")
            if not (pki_dir / name).is_file() or (pki_dir / name).read_bytes() != content:
                _write_private(pki_dir / name, content)
        generated = ensure_cluster_pki(pki_dir)
        if generated:
            logger.info("nodesim: cluster %s: generated %s (not in the user-data)", request.cluster_id,
                        ", ".join(generated))
        try:
            control_plane = start_control_plane(
                bin_dir=self._releases[request.version], pki_dir=pki_dir,
                work_dir=request.workdir / CONTROL_PLANE_DIR, timeout=self._start_timeout,
                server_names=(*_host_of(request.endpoint), *request.server_names), kubelet=self._kubelet,
                apiserver_name=request.server_id or FIRST_APISERVER, version=request.version,
            )
        except ControlPlaneError as exc:
            raise ControlPlaneStartError(str(exc)) from exc
        real = RealClusterControlPlane(control_plane=control_plane, version=request.version,
                                       workdir=request.workdir, releases=self._releases,
                                       endpoint_names=_host_of(request.endpoint),
                                       start_timeout=self._start_timeout)
        try:
            real.apply(load_manifest(self._rbac_manifest))
            # a cluster kaas calls running takes pods at once, as a kubeadm cluster does once its nodes joined
            wait_for_service_account(real.admin_client, timeout=self._start_timeout)
            wait_for_aggregated_roles(real.admin_client, timeout=self._start_timeout)
        except (KubeAdminError, httpx.HTTPError) as exc:
            real.close()
            raise ControlPlaneStartError(f"preparing the control plane failed: {exc}") from exc
        except BaseException:
            real.close()
            raise
        return real

    def _start_kubeadm(self, request: ClusterRequest, *, kubeadm: Path) -> RealClusterControlPlane:
        """As ``kubeadm init`` on the first control plane: kaas's authorities laid where its user-data
        writes them, ``kubeadm init phase certs all`` and ``kubeconfig all`` on its documents, the control
        plane started from what they issued, ``kubeadm init phase bootstrap-token`` against it, then the
        agent's manifest applied (``NodeBootFailed`` names the step that failed)."""
        assert request.kubeadm is not None
        documents = request.kubeadm
        workdir = request.workdir
        pki_dir = workdir / "kubernetes" / "pki"
        pki_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, content in request.pki.items():
            # userdata only yields these names; a caller's mistake must never write elsewhere
            if name not in AUTHORITY_FILES:
                raise ControlPlaneStartError(f"{name!r} is not a cluster PKI file")
            target = pki_dir / name
            target.parent.mkdir(exist_ok=True, mode=0o700)
            if not target.is_file() or target.read_bytes() != content:
                _write_private(target, content)
        config = workdir / "kubernetes" / "kubeadm.yaml"
        kubeconfig_dir = workdir / "kubernetes" / "kubeconfigs"
        write_init_config(documents, path=config, pki_dir=pki_dir,
                          advertise_address=request.advertise_address)
        init_certificates(kubeadm=kubeadm, config=config, kubeconfig_dir=kubeconfig_dir)
        extra_args = documents.cluster_value("controllerManager", "extraArgs") or []
        issued = KubeadmIssued(
            kubeconfig_dir=kubeconfig_dir,
            service_cidr=str(documents.cluster_value("networking", "serviceSubnet")
                             or SERVICE_CLUSTER_IP_RANGE),
            pod_cidr=documents.cluster_value("networking", "podSubnet"),
            cluster_name=str(documents.cluster_value("clusterName") or "kubernetes"),
            controller_manager_args=tuple((str(a["name"]), str(a["value"])) for a in extra_args
                                          if isinstance(a, dict) and "name" in a and "value" in a),
        )
        try:
            control_plane = start_control_plane(
                bin_dir=self._releases[request.version], pki_dir=pki_dir,
                work_dir=workdir / CONTROL_PLANE_DIR, timeout=self._start_timeout, kubelet=self._kubelet,
                kubeadm=issued, apiserver_name=request.server_id or FIRST_APISERVER, version=request.version,
            )
        except ControlPlaneError as exc:
            raise ControlPlaneStartError(str(exc)) from exc
        init = KubeadmInit(server_id=request.server_id or "", pki_dir=pki_dir,
                           kubelet_kubeconfig=kubeconfig_dir / "kubelet.conf", config=config)
        real = RealClusterControlPlane(control_plane=control_plane, version=request.version, workdir=workdir,
                                       kubeadm_init=init, releases=self._releases,
                                       start_timeout=self._start_timeout)
        try:
            done = workdir / "kubernetes" / INIT_DONE_FILE
            if not done.exists():  # kubeadm init runs once: a restarted control plane keeps its token
                create_bootstrap_token(kubeadm=kubeadm, config=config,
                                       admin_kubeconfig=control_plane.admin_kubeconfig)
                _publish_endpoint(real.admin_client, kubeconfig_dir / "super-admin.conf")
                done.write_text("kubeadm init phase bootstrap-token ran\n")
            manifest = list(request.agent_manifest) if request.agent_manifest else load_manifest(
                self._rbac_manifest)
            real.apply(manifest)
            wait_for_service_account(real.admin_client, timeout=self._start_timeout)
            wait_for_aggregated_roles(real.admin_client, timeout=self._start_timeout)
        except (KubeAdminError, httpx.HTTPError) as exc:
            real.close()
            raise ControlPlaneStartError(f"preparing the control plane failed: {exc}") from exc
        except BaseException:
            real.close()
            raise
        return real


INIT_DONE_FILE = "init.done"


@dataclass(frozen=True)
class KubeadmInit:
    """What ``kubeadm init`` left of a real control plane: which server ran it, kubeadm's certificate
    folder, and the first node's kubelet identity (``kubelet.conf``)."""

    server_id: str
    pki_dir: Path
    kubelet_kubeconfig: Path
    config: Path  # the kubeadm.yaml init ran with (its ClusterConfiguration is the cluster's kubeadm-config)


def _publish_endpoint(client: httpx.Client, admin_kubeconfig: Path) -> None:
    """``kube-public/cluster-info`` names the endpoint kubeadm put in its admin kubeconfig (the cluster's
    endpoint, or the node's address), not the loopback port kubeadm reached the apiserver at here; the
    bootstrap signer signs the changed content again."""
    server = yaml.safe_load(admin_kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    current = get_object(client, CLUSTER_INFO)
    if current is None:
        raise KubeAdminError("kubeadm init phase bootstrap-token made no kube-public/cluster-info")
    kubeconfig = yaml.safe_load(current["data"]["kubeconfig"])
    kubeconfig["clusters"][0]["cluster"]["server"] = server
    merge_patch(client, CLUSTER_INFO, {"data": {"kubeconfig": yaml.safe_dump(kubeconfig)}})
