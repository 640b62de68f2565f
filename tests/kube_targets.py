"""The apiservers the tests talk to: a real control plane (``nodesim.kube_real``, from the programs that
``scripts/kube-bin.sh`` builds) or the Python stand-in, behind one small interface, ``KubeTarget``.

- Where the programs are: ``KAAS_KUBE_BIN_DIR`` (``scripts/test.sh`` exports the newest release's folder;
  its siblings are the other releases) or the script's cache (``nodesim.kube_releases``). Without them a
  test that needs them fails when services are required (``KAAS_REQUIRE_SERVICES=1``, CI) and otherwise
  skips, or runs on the stand-in where it says it can (``kube`` fixtures: a laptop without Go).
- How many run at once: a real control plane costs about 530 MiB and a few seconds of both cores to start,
  so ``control_plane_slots`` holds at most ``KAAS_TEST_MAX_CONTROL_PLANES`` (default 4) of them at a time on
  this machine (lock files in the temp dir, shared by every pytest run of every checkout); a test that
  needs one more waits for a slot (at most ``SLOT_WAIT_SECONDS``, then fails).
- ``SharedRealCluster``: ONE real control plane for the whole session (``shared_real_cluster`` in
  ``tests/conftest.py``), with kaas's RBAC applied for real, a token of the agent's ServiceAccount and one of
  a cluster-admin ServiceAccount, one kwok node for pods, kwok serving logs, exec (on this machine: tests
  only) and port-forward (to ``PORT_FORWARD_GREETING``'s server). Tests share it, so each gets its own
  namespace (``KubeTarget.namespace``) and leaves cluster-wide objects alone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shlex
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from nodesim.control_planes import AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT
from nodesim.kube_admin import (
    admin_client,
    apply_documents,
    create_node,
    issue_service_account_token,
    load_manifest,
    wait_for_aggregated_roles,
    wait_for_service_account,
)
from nodesim.kube_real import (
    KubeletOptions,
    RealControlPlane,
    fake_node,
    start_control_plane,
    write_cluster_pki,
)
from nodesim.kube_releases import built_releases, is_complete_release, kube_cache_dir, version_key
from provider.bootstrap import rbac_manifest
from simcloud.kube.identity import Identity
from simcloud.kube.testing import run_kube_standin, write_kubeconfig
from tests.conftest import IN_CI, ROOT

REAL = "real"
STANDIN = "stand-in"
KAAS_RBAC_MANIFEST = rbac_manifest()
STANDIN_AGENT_TOKEN = "agent-service-account-token"
STANDIN_ADMIN_TOKEN = "cluster-admin-token"
TEST_ADMIN_ACCOUNT = "kaas-test-admin"  # a cluster-admin ServiceAccount in kube-system, for arranging objects
TOKEN_SECONDS = 6 * 3600  # the session's tokens outlive any test run
SHARED_NODE = "kaas-test-node"
# the controller manager publishes the cluster CA into every namespace of a real cluster
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
PORT_FORWARD_GREETING = b"hello through port-forward\n"
MAX_CONTROL_PLANES = int(os.environ.get("KAAS_TEST_MAX_CONTROL_PLANES", "4"))
SLOT_WAIT_SECONDS = 900.0
SLOT_DIR = Path(tempfile.gettempdir()) / "kaas-test-control-plane-slots"


def pinned_versions() -> dict[str, str]:
    values: dict[str, str] = {}
    for token in shlex.split((ROOT / "scripts" / "kube" / "versions.env").read_text(), comments=True):
        key, _, value = token.partition("=")
        values[key] = value
    return values


KUBE_VERSIONS = sorted(pinned_versions()["KUBE_VERSIONS"].split(), key=version_key)
NEWEST = KUBE_VERSIONS[-1]
OLDEST = KUBE_VERSIONS[0]


def releases() -> dict[str, Path]:
    """The complete releases on this machine: ``KAAS_KUBE_BIN_DIR`` and its siblings, then the cache."""
    found = built_releases(kube_cache_dir(os.environ, home=Path.home()))
    override = os.environ.get("KAAS_KUBE_BIN_DIR")
    if override and Path(override).is_dir():
        found.update(built_releases(Path(override).parent.parent))
        if is_complete_release(Path(override)):
            found[Path(override).name] = Path(override)
    return found


def missing_programs(message: str) -> None:
    """A test that needs the real programs and lacks them: fails where services are required, else skips."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def release_dir(version: str = NEWEST) -> Path:
    """The programs of one pinned release (``missing_programs`` when they are not built)."""
    folder = releases().get(version)
    if folder is None:
        missing_programs(f"no Kubernetes {version} programs: run bash scripts/kube-bin.sh")
        raise AssertionError("unreachable")
    return folder


def real_kube_available(version: str = NEWEST) -> bool:
    return version in releases()


# --- how many run at once ---


@contextlib.contextmanager
def control_plane_slots(count: int = 1, *, wait: float = SLOT_WAIT_SECONDS) -> Iterator[None]:
    """Hold ``count`` of the machine's ``MAX_CONTROL_PLANES`` slots for the block (flock on lock files, so
    a crashed run's slots free themselves)."""
    if count > MAX_CONTROL_PLANES:
        pytest.fail(f"a test wants {count} real control planes; the cap is {MAX_CONTROL_PLANES}")
    SLOT_DIR.mkdir(exist_ok=True)
    with contextlib.suppress(PermissionError):
        SLOT_DIR.chmod(0o1777)  # every developer's runs share the cap
    deadline = time.monotonic() + wait
    held: list[int] = []
    try:
        while True:
            for index in range(MAX_CONTROL_PLANES):
                if len(held) == count:
                    break
                fd = os.open(SLOT_DIR / f"slot-{index}", os.O_RDWR | os.O_CREAT, 0o666)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    os.close(fd)
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    continue
                held.append(fd)
            if len(held) == count:
                break
            for fd in held:  # all or nothing: never sit on some slots while waiting for more
                os.close(fd)
            held.clear()
            if time.monotonic() > deadline:
                pytest.fail(f"no free control-plane slot in {wait:.0f} s (cap: {MAX_CONTROL_PLANES})")
            time.sleep(0.5)
        yield
    finally:
        for fd in held:
            os.close(fd)


# --- one real control plane for the session ---


class GreetingServer:
    """A loopback TCP server that greets every connection (port-forward's far end) in a daemon thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.address = ("127.0.0.1", int(self.sock.getsockname()[1]))
        self._thread = threading.Thread(target=self._serve, name="port-forward-greeter", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return  # closed
            with connection:
                connection.sendall(PORT_FORWARD_GREETING)

    def close(self) -> None:
        self.sock.close()


@dataclass
class SharedRealCluster:
    control_plane: RealControlPlane
    version: str
    agent_token: str = field(repr=False)
    admin_token: str = field(repr=False)


def wait_for_default_service_account(client: httpx.Client, namespace: str = "default", *,
                                     timeout: float = 60.0) -> None:
    """Until the controller manager has made it, a namespace's pods are refused."""
    wait_for_service_account(client, namespace=namespace, timeout=timeout)


def prepare_real_cluster(control_plane: RealControlPlane, *, nodes: tuple[str, ...] = ()) -> tuple[str, str]:
    """kaas's RBAC applied, a cluster-admin ServiceAccount for the tests, kwok nodes, the ``default``
    ServiceAccount made; returns the tokens (agent, admin)."""
    admin_account = [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": TEST_ADMIN_ACCOUNT, "namespace": "kube-system"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": TEST_ADMIN_ACCOUNT},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
         "subjects": [{"kind": "ServiceAccount", "name": TEST_ADMIN_ACCOUNT, "namespace": "kube-system"}]},
    ]
    with admin_client(control_plane) as client:
        apply_documents(client, [*load_manifest(KAAS_RBAC_MANIFEST), *admin_account])
        agent = issue_service_account_token(client, namespace=AGENT_NAMESPACE, name=AGENT_SERVICE_ACCOUNT,
                                            expiration_seconds=TOKEN_SECONDS)
        admin = issue_service_account_token(client, namespace="kube-system", name=TEST_ADMIN_ACCOUNT,
                                            expiration_seconds=TOKEN_SECONDS)
        for name in nodes:
            create_node(client, fake_node(name))
        wait_for_default_service_account(client)
        wait_for_aggregated_roles(client)  # a member is bound to `edit`, empty until the controller fills it
    return agent.token, admin.token


@contextlib.contextmanager
def real_cluster_session(tmp_dir: Path) -> Iterator[SharedRealCluster]:
    """A real control plane for many tests (the session's, or a module's second cluster), in a slot."""
    bin_dir = release_dir(NEWEST)
    greeter = GreetingServer()
    try:
        with control_plane_slots():
            write_cluster_pki(tmp_dir / "pki")
            exec_dir = tmp_dir / "exec"
            exec_dir.mkdir()
            kubelet = KubeletOptions(exec_on_host=exec_dir, port_forward_to=greeter.address)
            with start_control_plane(bin_dir=bin_dir, pki_dir=tmp_dir / "pki", work_dir=tmp_dir / "cp",
                                     kubelet=kubelet) as control_plane:
                agent_token, admin_token = prepare_real_cluster(control_plane, nodes=(SHARED_NODE,))
                yield SharedRealCluster(control_plane=control_plane, version=NEWEST, agent_token=agent_token,
                                        admin_token=admin_token)
    finally:
        greeter.close()


# --- what a test sees ---


@dataclass
class KubeTarget:
    """An apiserver for one test: its URL and CA, the agent's and an admin's bearer tokens, and a namespace
    of the test's own."""

    kind: str  # REAL or STANDIN
    url: str
    ca: bytes | None
    version: str
    namespace: str
    agent_token: str = field(repr=False)
    admin_token: str = field(repr=False)
    standin: Any = None  # the KubeStandin (stand-in only)
    control_plane: RealControlPlane | None = None  # real only

    def write_kubeconfig(self, path: Path, *, token: str, namespace: str = "default") -> Path:
        return write_kubeconfig(path, server=self.url, token=token, ca=self.ca, namespace=namespace)

    def write_agent_kubeconfig(self, path: Path) -> Path:
        return self.write_kubeconfig(path, token=self.agent_token, namespace=AGENT_NAMESPACE)

    def write_admin_kubeconfig(self, path: Path) -> Path:
        return self.write_kubeconfig(path, token=self.admin_token, namespace=self.namespace)

    def path(self, plural: str, name: str = "") -> str:
        """The REST path of a core (v1) resource in the test's namespace."""
        base = f"/api/v1/namespaces/{self.namespace}/{plural}"
        return f"{base}/{name}" if name else base

    def _verify(self) -> Any:
        if self.ca is None:
            return True
        import ssl

        return ssl.create_default_context(cadata=self.ca.decode())

    def admin(self, *, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.admin_token}"},
                            verify=self._verify(), timeout=timeout, trust_env=False)

    def async_admin(self, *, timeout: float = 30.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {self.admin_token}"},
                                 verify=self._verify(), timeout=timeout, trust_env=False)

    def create_pod(self, name: str, *, timeout: float = 60.0) -> None:
        """A one-container pod in the test's namespace; on a real cluster, once it runs on a kwok node
        (exec, logs and port-forward need a pod with a node)."""
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"containers": [{"name": "main", "image": "busybox"}]}}
        with self.admin() as admin:
            created = admin.post(self.path("pods"), json=pod)
            assert created.status_code == 201, created.text
            deadline = time.monotonic() + timeout
            while self.kind == REAL:
                phase = admin.get(self.path("pods", name)).json().get("status", {}).get("phase")
                if phase == "Running":
                    return
                assert time.monotonic() < deadline, f"pod {name} is {phase}, not Running"
                time.sleep(0.1)

    def register_node(self, name: str, *, ready: bool) -> None:
        """A Node as a kubelet registers one: on a real cluster a Ready one is kwok's (kwok turns it Ready
        and keeps it so), a not-ready one nobody's; the stand-in's carries its Ready condition itself."""
        if self.kind == REAL:
            from nodesim.control_planes import NodeSpec, real_node_object

            node = real_node_object(NodeSpec(name=name, server_id=f"server-{name}", ready=ready, labels=(),
                                             taints=(), kubelet_version=self.version))
        else:
            condition = {"type": "Ready", "status": "True" if ready else "False"}
            node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                    "status": {"conditions": [condition]}}
        with self.admin() as admin:
            created = admin.post("/api/v1/nodes", json=node)
        assert created.status_code == 201, created.text

    def describe_nodes(self) -> dict[str, Any]:
        """Each Node's Ready condition and annotations (a failing test's explanation)."""
        with self.admin() as admin:
            items = admin.get("/api/v1/nodes").json().get("items", [])
        described: dict[str, Any] = {
            node["metadata"]["name"]: {
                "ready": [c for c in node.get("status", {}).get("conditions", []) if c["type"] == "Ready"],
                "annotations": node["metadata"].get("annotations"),
            }
            for node in items
        }
        if self.control_plane is not None:
            described["processes alive"] = self.control_plane.alive()
        return described

    def open_namespaced_watches(self, resource: str) -> int:
        """How many watches of ``resource`` in a namespace the apiserver serves now (every namespace)."""
        if self.kind == STANDIN:
            return len(self.standin.store._watchers)
        with self.admin() as admin:
            text = admin.get("/metrics").raise_for_status().text
        total = 0
        for line in text.splitlines():
            if line.startswith("apiserver_longrunning_requests{") and 'verb="WATCH"' in line and (
                f'resource="{resource}"' in line and 'scope="namespace"' in line
            ):
                total += int(float(line.rsplit(" ", 1)[1]))
        return total


def names_of(items: list[dict[str, Any]]) -> list[str]:
    """The names of listed objects, without what a real cluster adds to every namespace by itself."""
    return [item["metadata"]["name"] for item in items if item["metadata"]["name"] != ROOT_CA_CONFIGMAP]


def _create_namespace(target: KubeTarget, *, timeout: float = 30.0) -> None:
    """The test's namespace, settled: on a real cluster, once the controller manager has made its
    ``default`` ServiceAccount (pods need it) and published the CA into it (so nothing appears in it that
    the test did not make)."""
    with target.admin() as admin:
        created = admin.post("/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                         "metadata": {"name": target.namespace}})
        assert created.status_code == 201, created.text
        if target.kind == REAL:
            wait_for_default_service_account(admin, target.namespace, timeout=timeout)
        deadline = time.monotonic() + timeout
        root_ca = target.path("configmaps", ROOT_CA_CONFIGMAP)
        while target.kind == REAL and admin.get(root_ca).status_code != 200:
            assert time.monotonic() < deadline, f"no {ROOT_CA_CONFIGMAP} in {target.namespace}"
            time.sleep(0.05)


def new_namespace() -> str:
    return f"t-{secrets.token_hex(4)}"


@contextlib.contextmanager
def real_target(shared: SharedRealCluster, *, namespace: str | None = None) -> Iterator[KubeTarget]:
    """A fresh namespace (``namespace``, or a random name) in a shared real cluster for one test, deleted
    after it."""
    target = KubeTarget(
        kind=REAL, url=shared.control_plane.url, ca=shared.control_plane.ca_pem, version=shared.version,
        namespace=namespace or new_namespace(), agent_token=shared.agent_token,
        admin_token=shared.admin_token, control_plane=shared.control_plane,
    )
    _create_namespace(target)
    try:
        yield target
    finally:
        with target.admin() as admin:
            admin.delete(f"/api/v1/namespaces/{target.namespace}")


@contextlib.contextmanager
def standin_target(*, tls: bool = False, namespace: str | None = None) -> Iterator[KubeTarget]:
    """A fresh stand-in for one test, with kaas's RBAC and the same two identities as the real one."""
    with run_kube_standin(
        version=NEWEST,  # as the real one: kubectl at that minor warns of no skew
        tokens={
            STANDIN_AGENT_TOKEN: Identity.service_account(AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT),
            STANDIN_ADMIN_TOKEN: Identity("kubernetes-admin", ("system:masters",)),
        },
        manifest_files=[KAAS_RBAC_MANIFEST],
        tls=tls,
    ) as handle:
        target = KubeTarget(
            kind=STANDIN, url=handle.url, ca=handle.ca, version=handle.standin.version,
            namespace=namespace or new_namespace(), agent_token=STANDIN_AGENT_TOKEN,
            admin_token=STANDIN_ADMIN_TOKEN, standin=handle.standin,
        )
        _create_namespace(target)
        yield target


@contextlib.contextmanager
def dedicated_real_target(tmp_dir: Path) -> Iterator[KubeTarget]:
    """A real control plane of the test's own (for what is cluster-wide, such as Nodes), in a slot."""
    bin_dir = release_dir(NEWEST)
    with control_plane_slots():
        write_cluster_pki(tmp_dir / "pki")
        with start_control_plane(bin_dir=bin_dir, pki_dir=tmp_dir / "pki", work_dir=tmp_dir / "cp") as cp:
            agent_token, admin_token = prepare_real_cluster(cp)
            target = KubeTarget(kind=REAL, url=cp.url, ca=cp.ca_pem, version=NEWEST,
                                namespace=new_namespace(), agent_token=agent_token,
                                admin_token=admin_token, control_plane=cp)
            _create_namespace(target)
            yield target


def default_kind() -> str:
    """The real apiserver where its programs are built; without them the stand-in, unless services are
    required (then the test fails: CI must run the real one)."""
    return REAL if real_kube_available() or IN_CI else STANDIN


def kube_target(request: pytest.FixtureRequest, kind: str | None = None, *,
                dedicated: bool = False) -> contextlib.AbstractContextManager[KubeTarget]:
    """The apiserver a test runs against: ``kind`` if given (the contract suite runs both), else
    ``default_kind()``. A real one is a namespace in the session's shared control plane, or with
    ``dedicated`` a control plane of the test's own."""
    kind = kind or default_kind()
    if kind == REAL and dedicated:
        tmp_path: Path = request.getfixturevalue("tmp_path")
        return dedicated_real_target(tmp_path / "dedicated-kube")
    if kind == REAL:
        shared: SharedRealCluster = request.getfixturevalue("shared_real_cluster")
        return real_target(shared)
    return standin_target()
