"""One real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok (fake nodes whose pods become Running), as separate processes.

Owned by ``nodesim``: ``nodesim.kube_backends`` starts one per simulated cluster (``kaas up`` and the tests
that use the real binaries); ``benchmarks/real_control_plane.py`` measures one. The programs come from a
folder laid out by ``scripts/kube-bin.sh`` (``kube-apiserver``, ``kube-controller-manager``,
``kube-scheduler``, ``etcd``, ``kwok`` and ``kwok-stages.yaml`` side by side; ``nodesim.kube_releases`` finds
them); this module never builds or looks them up.

- ``write_cluster_pki(pki_dir)`` writes a cluster's own secrets, named as kubeadm names them in
  /etc/kubernetes/pki: ``ca.crt``/``ca.key`` (the cluster CA), ``sa.key``/``sa.pub`` (the service-account
  signing key) and ``front-proxy-ca.crt``/``front-proxy-ca.key`` (the CA of the aggregation layer's
  front proxy); ``ensure_cluster_pki`` writes only the pairs a folder lacks.
- ``start_control_plane(bin_dir=..., pki_dir=..., work_dir=...)`` issues from those CAs, into
  ``work_dir/pki``, what each component needs: the apiserver's serving certificate for 127.0.0.1, the
  in-cluster names and the cluster's endpoint (``server_names``), the front-proxy client certificate, the
  apiserver's kubelet-client certificate, kwok's kubelet serving certificate, and client certificates for the
  admin (``system:masters``), the controller manager, the scheduler and kwok; writes their kubeconfigs
  (0600); starts the five processes on free loopback ports, etcd's data in ``work_dir/etcd`` (kept: started
  again on the same ``work_dir``, the control plane has the objects it had), each process's output in
  ``work_dir/logs/<name>.log``; and returns once the apiserver answers /readyz, the controller manager
  and the scheduler hold their leader leases and kwok's kubelet API answers (kwok serves it once it
  watches the apiserver). The controller manager makes each namespace's ``default`` ServiceAccount a few
  seconds later; until then the pods of a namespace are refused, as on any new cluster.
  Every kubeconfig (and ``RealControlPlane.url``) names the control plane's balancer
  (``nodesim.apiserver_balancer``), not the apiserver: ``add_apiserver`` starts another kube-apiserver on the
  same etcd (another release's program, its own serving certificate: ``issue_apiserver_certificate``) and
  puts it into the balancer once ready; ``remove_apiserver`` takes one out, then stops it gracefully
  (``--shutdown-delay-duration``); ``run_components_at`` restarts the controller manager and the scheduler
  on another release's programs.
- ``fake_node(name)`` is a Node that this kwok manages (kwok only manages nodes with its annotation).

kwok also serves the kubelet API of its nodes (on its own loopback port, with a certificate the apiserver
verifies against the cluster CA): ``kubectl logs`` reads ``KubeletOptions.pod_logs`` (one file for every
container; by default a line saying no process runs). ``kubectl exec`` and ``port-forward`` are refused
unless the caller asks: kwok's exec runs the command ON THIS MACHINE, so ``exec_on_host`` is for tests
only, and ``port_forward_to`` forwards every pod port to one loopback address the caller chose.

Authorization is ``Node,RBAC`` with the NodeRestriction admission plugin and the front-proxy (request
header) settings, as kubeadm configures them. etcd runs over plain HTTP on loopback without fsync: it is
reachable only from this machine. A process that exits while the control plane starts fails the start with
``ControlPlaneError`` and the tail of its log; the other processes are stopped first.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nodesim.apiserver_balancer import ApiserverBalancer

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/12"
# the first address of the service range: in-cluster clients reach the apiserver as this Service
KUBERNETES_SERVICE_IP = "10.96.0.1"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_ANNOTATION_VALUE = "fake"
# kwok renews each fake node's Lease; without it the node lifecycle controller marks the node NotReady
# after its 40 s grace period and, five minutes later, evicts its pods
KWOK_NODE_LEASE_SECONDS = 40
LEASE_HOLDERS = ("kube-controller-manager", "kube-scheduler")
FRONT_PROXY_CLIENT = "front-proxy-client"
# what kwok serves as every container's log when the caller names no file of its own
DEFAULT_POD_LOG = "kwok: this container is simulated; no process runs in it"
PKI_PAIRS = (("ca.crt", "ca.key"), ("sa.pub", "sa.key"), ("front-proxy-ca.crt", "front-proxy-ca.key"))
PKI_FILES = tuple(name for pair in PKI_PAIRS for name in pair)
CERT_VALIDITY = datetime.timedelta(days=30)
CA_VALIDITY = datetime.timedelta(days=3650)
LOG_TAIL_BYTES = 4000
STOP_GRACE_SECONDS = 10.0
APISERVER_SHUTDOWN_DELAY_SECONDS = 2


class ControlPlaneError(Exception):
    """The control plane could not be started: a program is missing, a process exited, or a wait ran out."""


@dataclass(frozen=True)
class _Issued:
    cert_pem: bytes
    key_pem: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_secret(path: Path, data: bytes) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)


def _write_ca(pki_dir: Path, stem: str, common_name: str) -> None:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=True, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False,
        ), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (pki_dir / f"{stem}.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_secret(pki_dir / f"{stem}.key", _key_pem(ca_key))


def _write_service_account_keys(pki_dir: Path) -> None:
    sa_key = ec.generate_private_key(ec.SECP256R1())
    _write_secret(pki_dir / "sa.key", _key_pem(sa_key))
    (pki_dir / "sa.pub").write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def write_cluster_pki(pki_dir: Path, *, common_name: str = "kubernetes") -> None:
    """The cluster CA (``ca.crt``, ``ca.key``), the service-account key pair (``sa.key``, ``sa.pub``) and
    the front-proxy CA (``front-proxy-ca.crt``, ``front-proxy-ca.key``), replacing any there.

    ECDSA P-256 throughout (kubeadm's ``encryptionAlgorithm: ECDSA-P256``): every component accepts it and a
    key costs microseconds, where RSA 2048 costs tens of milliseconds per key."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    _write_ca(pki_dir, "ca", common_name)
    _write_service_account_keys(pki_dir)
    _write_ca(pki_dir, "front-proxy-ca", "front-proxy-ca")


def ensure_cluster_pki(pki_dir: Path) -> list[str]:
    """Write each pair of ``PKI_PAIRS`` that ``pki_dir`` lacks (a pair with one file missing is replaced
    whole: a certificate without its key is of no use); returns the names written."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    for public, private in PKI_PAIRS:
        if (pki_dir / public).is_file() and (pki_dir / private).is_file():
            continue
        if public == "sa.pub":
            _write_service_account_keys(pki_dir)
        else:
            stem = public.removesuffix(".crt")
            _write_ca(pki_dir, stem, "kubernetes" if stem == "ca" else stem)
        written += [public, private]
    return written


def _issue(*, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str,
           organizations: tuple[str, ...] = (), server_names: tuple[str, ...] = ()) -> _Issued:
    """A leaf certificate: a server certificate when ``server_names`` is given, else a client certificate
    whose CN is the Kubernetes user and whose O fields are its groups."""
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_encipherment=True, key_cert_sign=False, crl_sign=False,
            content_commitment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False,
        ), critical=True)
    )
    if server_names:
        alt_names: list[x509.GeneralName] = []
        for host in server_names:
            try:
                alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt_names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        usage = ExtendedKeyUsageOID.SERVER_AUTH
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return _Issued(cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=_key_pem(key))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _write_kubeconfig(path: Path, *, url: str, ca_pem: bytes, user: str, issued: _Issued) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubernetes", "cluster": {
            "server": url, "certificate-authority-data": _b64(ca_pem),
        }}],
        "users": [{"name": user, "user": {
            "client-certificate-data": _b64(issued.cert_pem),
            "client-key-data": _b64(issued.key_pem),
        }}],
        "contexts": [{"name": user, "context": {"cluster": "kubernetes", "user": user}}],
        "current-context": user,
    }
    _write_secret(path, yaml.safe_dump(config).encode())


def _free_port() -> int:
    # The port is free when asked; a process that loses it to another before binding fails its start,
    # which the caller sees as ControlPlaneError with the process's log.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fake_node(name: str, *, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A Node that this control plane's kwok makes Ready and whose pods it makes Running."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: KWOK_NODE_ANNOTATION_VALUE},
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok",
                       **(labels or {})},
        },
        "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                   "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"}},
    }


@dataclass
class Apiserver:
    """One kube-apiserver of a control plane, on its own loopback port (clients reach it through the
    control plane's balancer; its own ``url`` is for checks that must reach exactly this one)."""

    name: str  # the member: the control-plane server it stands for
    version: str  # the release whose program it runs ("v1.37.2")
    port: int
    process: subprocess.Popen[bytes]
    log_name: str = "kube-apiserver"  # its log in ``work_dir/logs``, and its name in ``rss_bytes``

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass(frozen=True)
class _ApiserverSetup:
    """What every apiserver of one control plane shares: the cluster's etcd and authorities, the
    certificates towards the front proxy and the kubelets, the service range."""

    pki_dir: Path
    etcd_url: str
    etcd_client: tuple[str, ...]
    proxy_crt: Path
    proxy_key: Path
    kubelet_client_crt: Path
    kubelet_client_key: Path
    service_cidr: str


@dataclass
class RealControlPlane:
    """A running control plane. ``stop()`` (or leaving a ``with`` block) ends its processes.

    ``url`` is its balancer's (``nodesim.apiserver_balancer``), in front of ``apiservers``; ``processes``
    are the one etcd, controller manager, scheduler and kwok the apiservers share."""

    url: str
    admin_kubeconfig: Path
    ca_pem: bytes
    work_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    apiservers: dict[str, Apiserver] = field(default_factory=dict)
    balancer: ApiserverBalancer | None = None
    setup: _ApiserverSetup | None = field(default=None, repr=False)
    # the controller manager's and the scheduler's arguments, their program first: restarted on another
    # release's program when the apiservers' version changes (``run_components_at``)
    component_args: dict[str, list[str]] = field(default_factory=dict, repr=False)
    components_version: str = ""

    def stop(self) -> None:
        """SIGTERM to each process in turn, newest first, waiting for each (SIGKILL after
        ``STOP_GRACE_SECONDS``): the apiservers' clients go before them (kwok, scheduler, controller
        manager), the apiservers (all at once) before etcd, so none of them spends its shutdown retrying a
        peer that is already gone; the balancer last. Safe to call twice."""
        shared = list(self.processes.items())
        clients = [process for name, process in reversed(shared) if name != "etcd"]
        _stop_processes(clients, one_by_one=True)
        _stop_processes([apiserver.process for apiserver in self.apiservers.values()], one_by_one=False)
        _stop_processes([process for name, process in shared if name == "etcd"], one_by_one=True)
        if self.balancer is not None:
            self.balancer.close()

    def admin_ssl_context(self) -> ssl.SSLContext:
        """TLS to this apiserver as its admin (``system:masters``): its CA and the admin's client
        certificate."""
        context = ssl.create_default_context(cadata=self.ca_pem.decode())
        context.load_cert_chain(self.work_dir / "pki" / "admin.crt", self.work_dir / "pki" / "admin.key")
        return context

    def alive(self) -> bool:
        """Whether etcd, the controller manager, the scheduler and kwok run, and at least one apiserver (a
        member apiserver that died is ``RealControlPlane``'s owner's to start again)."""
        return all(process.poll() is None for process in self.processes.values()) and any(
            apiserver.alive() for apiserver in self.apiservers.values())

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each running process, from /proc (Linux)."""
        sizes: dict[str, int] = {}
        named = [*self.processes.items(),
                 *((apiserver.log_name, apiserver.process) for apiserver in self.apiservers.values())]
        for name, process in named:
            try:
                status = Path(f"/proc/{process.pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    sizes[name] = int(line.split()[1]) * 1024
        return sizes

    def add_apiserver(self, *, name: str, version: str, bin_dir: Path, serving_crt: Path, serving_key: Path,
                      timeout: float = 180.0) -> Apiserver:
        """Start one more kube-apiserver (``bin_dir``'s, on the shared etcd, serving ``serving_crt``) and
        put it into the balancer once its /readyz answers; ``ControlPlaneError`` when it does not."""
        if self.setup is None or self.balancer is None:
            raise ControlPlaneError("this control plane was not started by start_control_plane")
        if name in self.apiservers:
            raise ControlPlaneError(f"apiserver {name!r} runs already")
        program = _program(bin_dir, "kube-apiserver")
        port = _free_port()
        starter = _Starter(work_dir=self.work_dir, deadline=time.monotonic() + timeout)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        log_name = f"kube-apiserver-{safe}"
        try:
            starter.spawn(log_name, _apiserver_args(program, self.setup, port=port, serving_crt=serving_crt,
                                                    serving_key=serving_key))
            with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=self.admin_ssl_context(),
                              timeout=5.0) as api:
                starter.wait_until(f"kube-apiserver {name} /readyz",
                                   lambda: api.get("/readyz").status_code == 200)
        except BaseException:
            _stop_processes(list(starter.processes.values()), one_by_one=False)
            raise
        apiserver = Apiserver(name=name, version=version, port=port, process=starter.processes[log_name],
                              log_name=log_name)
        self.apiservers[name] = apiserver
        self.balancer.add(name, port, ready=True)
        return apiserver

    def remove_apiserver(self, name: str) -> None:
        """Take ``name`` out of the balancer (no new connection reaches it), then stop it gracefully: it
        answers what it is serving, within its ``--shutdown-delay-duration``, then closes its
        connections (a client retries an idle one that closed on a new one, which the balancer sends to
        another apiserver)."""
        apiserver = self.apiservers.get(name)
        if apiserver is None:
            return
        if self.balancer is not None:
            self.balancer.take_out(name)
        _stop_processes([apiserver.process], one_by_one=True)
        if self.balancer is not None:
            self.balancer.remove(name)
        del self.apiservers[name]

    def run_components_at(self, *, version: str, bin_dir: Path) -> None:
        """Restart the controller manager and the scheduler on ``bin_dir``'s programs (``version``), one
        after the other; leader election hands their leases over."""
        for component in ("kube-controller-manager", "kube-scheduler"):
            args = self.component_args.get(component)
            if args is None:
                continue
            program = _program(bin_dir, component)
            _stop_processes([self.processes[component]], one_by_one=True)
            starter = _Starter(work_dir=self.work_dir, deadline=time.monotonic() + 30.0)
            starter.spawn(component, [program, *args[1:]])
            self.processes[component] = starter.processes[component]
            self.component_args[component] = [program, *args[1:]]
        self.components_version = version

    def __enter__(self) -> RealControlPlane:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _stop_processes(processes: list[subprocess.Popen[bytes]], *, one_by_one: bool) -> None:
    """SIGTERM, then wait (SIGKILL after the grace); ``one_by_one`` waits for each before the next, else
    all are signalled first (apiservers sharing nothing but etcd end together)."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.terminate()
        if one_by_one:
            _reap(process)
    if not one_by_one:
        for process in running:
            _reap(process)


def _reap(process: subprocess.Popen[bytes]) -> None:
    try:
        process.wait(timeout=STOP_GRACE_SECONDS + APISERVER_SHUTDOWN_DELAY_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class _Starter:
    """The state of one start: the processes so far, and waits that fail fast when one of them exits."""

    def __init__(self, *, work_dir: Path, deadline: float) -> None:
        self.work_dir = work_dir
        self.deadline = deadline
        self.log_dir = work_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.args: dict[str, list[str]] = {}

    def spawn(self, name: str, args: list[str]) -> None:
        self.args[name] = args
        with (self.log_dir / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(  # noqa: S603 - fixed programs, arguments built here
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.work_dir,
            )

    def log_tail(self, name: str) -> str:
        data = (self.log_dir / f"{name}.log").read_bytes()
        return data[-LOG_TAIL_BYTES:].decode(errors="replace")

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            code = process.poll()
            if code is not None:
                raise ControlPlaneError(f"{name} exited with {code} while starting; its log ends:\n"
                                        f"{self.log_tail(name)}")

    def wait_until(self, what: str, ready: Callable[[], bool]) -> None:
        while True:
            self.check_alive()
            try:
                if ready():
                    return
            except (httpx.HTTPError, OSError, ValueError):
                pass  # not listening yet, or not answering in full yet
            if time.monotonic() > self.deadline:
                logs = "\n".join(f"--- {name}:\n{self.log_tail(name)}" for name in self.processes)
                raise ControlPlaneError(f"timed out waiting for {what}; logs:\n{logs}")
            time.sleep(0.2)


def _program(bin_dir: Path, name: str) -> str:
    path = bin_dir / name
    if not path.is_file() or not os.access(path, os.X_OK):
        raise ControlPlaneError(f"{path} is missing or not executable (bash scripts/kube-bin.sh builds it)")
    return str(path)


@dataclass(frozen=True)
class KubeletOptions:
    """What kwok's kubelet API answers for the pods of its nodes.

    ``pod_logs``: the file served as every container's log (``kubectl logs``); None serves
    ``DEFAULT_POD_LOG``. ``exec_on_host``: a working directory in which ``kubectl exec`` RUNS THE COMMAND
    ON THIS MACHINE, as this user (kwok has no other exec): for tests only, never for a control plane whose
    users are not this machine's owner; None refuses exec. ``port_forward_to``: the ``(host, port)`` every
    forwarded pod port connects to; None refuses port-forward."""

    pod_logs: Path | None = None
    exec_on_host: Path | None = None
    port_forward_to: tuple[str, int] | None = None


def _kwok_debugging_config(options: KubeletOptions, *, default_log: Path) -> list[dict[str, Any]]:
    """kwok's cluster-wide Logs, Exec and PortForward documents for ``options`` (one selector-less rule
    each: every pod of every managed node)."""
    def document(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": kind, "metadata": {"name": "kaas"},
                "spec": spec}

    logs = str(options.pod_logs or default_log)
    documents = [document("ClusterLogs", {"logs": [{"logsFile": logs, "follow": False}]})]
    if options.exec_on_host is not None:
        local = {"workDir": str(options.exec_on_host)}
        documents.append(document("ClusterExec", {"execs": [{"local": local}]}))
    if options.port_forward_to is not None:
        host, port = options.port_forward_to
        documents.append(document("ClusterPortForward", {"forwards": [
            {"target": {"address": host, "port": port}}]}))
    return documents


def cri_log_lines(lines: list[str], *, stream: str = "stdout") -> str:
    """``lines`` in the CRI log format that kubelets (and kwok) read container logs in: one
    ``<RFC 3339 time> <stream> F <line>`` per line."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return "".join(f"{now} {stream} F {line}\n" for line in lines)


def _load_ca(pki_dir: Path, stem: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((pki_dir / f"{stem}.crt").read_bytes())
    key = serialization.load_pem_private_key((pki_dir / f"{stem}.key").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ControlPlaneError(f"{pki_dir / stem}.key is not an ECDSA key (write_cluster_pki writes one)")
    return cert, key


@dataclass(frozen=True)
class KubeadmIssued:
    """What ``kubeadm init phase certs all`` and ``kubeadm init phase kubeconfig all`` wrote for a control
    plane (``nodesim.kubeadm_node``): the leaf certificates are then in the ``pki_dir`` passed with it, the
    components' kubeconfigs in ``kubeconfig_dir``; and what the ClusterConfiguration says the components
    run with."""

    kubeconfig_dir: Path
    service_cidr: str = SERVICE_CLUSTER_IP_RANGE
    pod_cidr: str | None = None
    cluster_name: str = "kubernetes"
    # ClusterConfiguration.controllerManager.extraArgs, as kubeadm passes them (``cloud-provider: external``)
    controller_manager_args: tuple[tuple[str, str], ...] = ()


def _kubeconfig_for(source: Path, target: Path, *, url: str) -> None:
    """A copy of one of kubeadm's kubeconfigs that reaches the apiserver where it listens here (kubeadm
    names the node's address or the endpoint; this machine serves it on a loopback port), 0600."""
    document = yaml.safe_load(source.read_text())
    for cluster in document.get("clusters") or []:
        cluster["cluster"]["server"] = url
    _write_secret(target, yaml.safe_dump(document).encode())


def _client_files_of(kubeconfig: Path, target_dir: Path, stem: str) -> None:
    """The client certificate and key embedded in a kubeconfig, as ``<stem>.crt`` and ``<stem>.key``."""
    user = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]
    (target_dir / f"{stem}.crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
    _write_secret(target_dir / f"{stem}.key", base64.b64decode(user["client-key-data"]))


def start_control_plane(*, bin_dir: Path, pki_dir: Path, work_dir: Path, timeout: float = 180.0,
                        server_names: tuple[str, ...] = (),
                        kubelet: KubeletOptions | None = None,
                        kubeadm: KubeadmIssued | None = None,
                        apiserver_name: str = "kube-apiserver",
                        version: str | None = None) -> RealControlPlane:
    """Start etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (see the module doc).
    ``server_names``: more names (host names or IP addresses) for the apiserver's serving certificate, such
    as the cluster's endpoint. With ``kubeadm``, the apiserver, etcd (over TLS) and the components run with
    the certificates and kubeconfigs kubeadm issued into ``pki_dir`` instead (``server_names`` is unused:
    the serving certificate names what kubeadm put in it, and nothing else). The apiserver is the first
    member of the control plane's balancer, named ``apiserver_name``, at ``version`` (``bin_dir``'s name
    unless given); every kubeconfig names the balancer."""
    programs = {name: _program(bin_dir, name) for name in
                ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")}
    kwok_stages = bin_dir / "kwok-stages.yaml"
    if not kwok_stages.is_file():
        raise ControlPlaneError(f"{kwok_stages} is missing (scripts/kube-bin.sh installs it beside kwok)")
    missing = [name for name in PKI_FILES if not (pki_dir / name).is_file()]
    if missing:
        raise ControlPlaneError(f"{pki_dir} lacks {', '.join(missing)} (ensure_cluster_pki writes them)")
    ca_cert, ca_key = _load_ca(pki_dir, "ca")
    proxy_ca_cert, proxy_ca_key = _load_ca(pki_dir, "front-proxy-ca")
    ca_pem = (pki_dir / "ca.crt").read_bytes()
    kubelet = kubelet or KubeletOptions()

    work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    issued_dir = work_dir / "pki"
    issued_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    etcd_port, etcd_peer_port, apiserver_port, kubelet_port = (_free_port() for _ in range(4))
    apiserver_url = f"https://127.0.0.1:{apiserver_port}"
    # every client dials the balancer (the cluster's VIP), never one apiserver: one may go during an upgrade
    balancer = ApiserverBalancer(ca_pem=ca_pem, name=f"apiserver-balancer-{work_dir.parent.name}")
    balancer.start()
    starter = _Starter(work_dir=work_dir, deadline=time.monotonic() + timeout)
    kubeconfigs: dict[str, Path] = {}
    url = balancer.url
    try:

        def issue_files(stem: str, issued: _Issued) -> tuple[Path, Path]:
            (issued_dir / f"{stem}.crt").write_bytes(issued.cert_pem)
            _write_secret(issued_dir / f"{stem}.key", issued.key_pem)
            return issued_dir / f"{stem}.crt", issued_dir / f"{stem}.key"

        kubelet_crt, kubelet_key = issue_files("kubelet", _issue(
            ca_cert=ca_cert, ca_key=ca_key, common_name="kwok-kubelet",
            server_names=("127.0.0.1", "localhost")))
        # kwok is nodesim's, not kubeadm's: it writes the status of every fake node and pod, and their leases
        # (kwokctl gives it admin too)
        clients: dict[str, tuple[str, tuple[str, ...]]] = {"kwok": ("kwok-controller", ("system:masters",))}
        if kubeadm is None:
            serving_crt, serving_key = issue_apiserver_certificate(pki_dir=pki_dir, target_dir=issued_dir,
                                                                   server_names=server_names)
            proxy_crt, proxy_key = issue_files("front-proxy-client", _issue(
                ca_cert=proxy_ca_cert, ca_key=proxy_ca_key, common_name=FRONT_PROXY_CLIENT))
            # kubeadm's names: the apiserver's identity towards kubelets
            kubelet_client_crt, kubelet_client_key = issue_files("apiserver-kubelet-client", _issue(
                ca_cert=ca_cert, ca_key=ca_key, common_name="kube-apiserver-kubelet-client",
                organizations=("kubeadm:cluster-admins",)))
            clients.update({
                # file name: (user, groups)
                "admin": ("kubernetes-admin", ("system:masters",)),
                "controller-manager": ("system:kube-controller-manager", ()),
                "scheduler": ("system:kube-scheduler", ()),
            })
            service_cidr = SERVICE_CLUSTER_IP_RANGE
        else:
            serving_crt, serving_key = pki_dir / "apiserver.crt", pki_dir / "apiserver.key"
            proxy_crt, proxy_key = pki_dir / "front-proxy-client.crt", pki_dir / "front-proxy-client.key"
            kubelet_client_crt = pki_dir / "apiserver-kubelet-client.crt"
            kubelet_client_key = pki_dir / "apiserver-kubelet-client.key"
            # kubeadm's super-admin.conf is system:masters (admin.conf's group needs a binding kubeadm init
            # makes later); nodesim administers the cluster with it
            for name, source in (("admin", "super-admin.conf"),
                                 ("controller-manager", "controller-manager.conf"),
                                 ("scheduler", "scheduler.conf")):
                kubeconfigs[name] = work_dir / f"{name}.conf"
                _kubeconfig_for(kubeadm.kubeconfig_dir / source, kubeconfigs[name], url=url)
            _client_files_of(kubeconfigs["admin"], issued_dir, "admin")
            service_cidr = kubeadm.service_cidr
        for file_name, (user, groups) in clients.items():
            issued = _issue(ca_cert=ca_cert, ca_key=ca_key, common_name=user, organizations=groups)
            kubeconfigs[file_name] = work_dir / f"{file_name}.conf"
            _write_kubeconfig(kubeconfigs[file_name], url=url, ca_pem=ca_pem, user=user, issued=issued)
            if file_name == "admin":  # also as files: this module's own readiness checks use them
                issue_files("admin", issued)

        kwok_dir = work_dir / "kwok"
        kwok_dir.mkdir(exist_ok=True)
        default_log = kwok_dir / "pod.log"
        default_log.write_text(cri_log_lines([DEFAULT_POD_LOG]))
        kwok_debugging = kwok_dir / "debugging.yaml"
        kwok_debugging.write_text(
            yaml.safe_dump_all(_kwok_debugging_config(kubelet, default_log=default_log)))

        scheme = "http" if kubeadm is None else "https"
        etcd_url = f"{scheme}://127.0.0.1:{etcd_port}"
        peer_url = f"{scheme}://127.0.0.1:{etcd_peer_port}"
        etcd_tls: list[str] = []
        etcd_client: list[str] = []
        health_verify: ssl.SSLContext | bool = True
        if kubeadm is not None:
            etcd_pki = pki_dir / "etcd"
            # as kubeadm's static pod runs it: TLS with client certificates on both sides
            etcd_tls = [
                f"--cert-file={etcd_pki / 'server.crt'}", f"--key-file={etcd_pki / 'server.key'}",
                "--client-cert-auth=true", f"--trusted-ca-file={etcd_pki / 'ca.crt'}",
                f"--peer-cert-file={etcd_pki / 'peer.crt'}", f"--peer-key-file={etcd_pki / 'peer.key'}",
                "--peer-client-cert-auth=true", f"--peer-trusted-ca-file={etcd_pki / 'ca.crt'}",
            ]
            etcd_client = [
                f"--etcd-cafile={etcd_pki / 'ca.crt'}",
                f"--etcd-certfile={pki_dir / 'apiserver-etcd-client.crt'}",
                f"--etcd-keyfile={pki_dir / 'apiserver-etcd-client.key'}",
            ]
            health_verify = ssl.create_default_context(cafile=str(etcd_pki / "ca.crt"))
            health_verify.load_cert_chain(etcd_pki / "healthcheck-client.crt",
                                          etcd_pki / "healthcheck-client.key")
        starter.spawn("etcd", [
            programs["etcd"], "--name=kaas", f"--data-dir={work_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=kaas={peer_url}", "--unsafe-no-fsync", "--log-level=warn", *etcd_tls,
        ])
        with httpx.Client(timeout=2.0, verify=health_verify) as plain:
            starter.wait_until("etcd /health",
                               lambda: plain.get(f"{etcd_url}/health").json().get("health") == "true")

        setup = _ApiserverSetup(
            pki_dir=pki_dir, etcd_url=etcd_url, etcd_client=tuple(etcd_client), proxy_crt=proxy_crt,
            proxy_key=proxy_key, kubelet_client_crt=kubelet_client_crt, kubelet_client_key=kubelet_client_key,
            service_cidr=service_cidr)
        starter.spawn("kube-apiserver", _apiserver_args(
            programs["kube-apiserver"], setup, port=apiserver_port, serving_crt=serving_crt,
            serving_key=serving_key))
        context = ssl.create_default_context(cadata=ca_pem.decode())
        context.load_cert_chain(issued_dir / "admin.crt", issued_dir / "admin.key")
        with httpx.Client(base_url=apiserver_url, verify=context, timeout=5.0) as direct:
            starter.wait_until("kube-apiserver /readyz", lambda: direct.get("/readyz").status_code == 200)
        balancer.add(apiserver_name, apiserver_port, ready=True)
        with httpx.Client(base_url=url, verify=context, timeout=5.0) as api:
            common = [f"--kubeconfig={kubeconfigs['controller-manager']}", "--bind-address=127.0.0.1",
                      "--secure-port=0"]
            starter.spawn("kube-controller-manager", [
                programs["kube-controller-manager"], *common,
                f"--authentication-kubeconfig={kubeconfigs['controller-manager']}",
                f"--authorization-kubeconfig={kubeconfigs['controller-manager']}",
                f"--requestheader-client-ca-file={pki_dir / 'front-proxy-ca.crt'}",
                f"--service-account-private-key-file={pki_dir / 'sa.key'}",
                f"--root-ca-file={pki_dir / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki_dir / 'ca.crt'}",
                f"--cluster-signing-key-file={pki_dir / 'ca.key'}",
                "--use-service-account-credentials=true",
                # as kubeadm runs it: the bootstrap signer signs kube-public/cluster-info with each
                # bootstrap token (what a joining node's discovery checks), the token cleaner deletes
                # expired tokens
                "--controllers=*,bootstrapsigner,tokencleaner",
                f"--service-cluster-ip-range={service_cidr}", "--profiling=false",
                *_controller_manager_extra(kubeadm),
            ])
            starter.spawn("kube-scheduler", [
                programs["kube-scheduler"], f"--kubeconfig={kubeconfigs['scheduler']}",
                "--bind-address=127.0.0.1", "--secure-port=0", "--profiling=false",
            ])
            starter.spawn("kwok", [
                programs["kwok"], f"--kubeconfig={kubeconfigs['kwok']}", f"--config={kwok_stages}",
                f"--config={kwok_debugging}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}={KWOK_NODE_ANNOTATION_VALUE}",
                "--node-ip=127.0.0.1", f"--node-lease-duration-seconds={KWOK_NODE_LEASE_SECONDS}",
                # the kubelet API of every fake node (logs, exec, port-forward), on loopback only
                f"--server-address=127.0.0.1:{kubelet_port}", f"--node-port={kubelet_port}",
                f"--tls-cert-file={kubelet_crt}", f"--tls-private-key-file={kubelet_key}",
            ])
            for holder in LEASE_HOLDERS:
                starter.wait_until(f"the {holder} leader lease", _lease_held(api, holder))
        # kwok's kubelet API answers once kwok watches the apiserver (it serves it after its informers start)
        kubelet_context = ssl.create_default_context(cadata=ca_pem.decode())
        with httpx.Client(base_url=f"https://127.0.0.1:{kubelet_port}", verify=kubelet_context,
                          timeout=5.0) as kubelet_api:
            starter.wait_until("kwok's kubelet API", lambda: kubelet_api.get("/healthz").status_code == 200)
    except BaseException:
        RealControlPlane(url=url, admin_kubeconfig=work_dir / "admin.conf", ca_pem=ca_pem, work_dir=work_dir,
                         processes=starter.processes, balancer=balancer).stop()
        raise
    processes = dict(starter.processes)
    apiserver = Apiserver(name=apiserver_name, version=version or bin_dir.name, port=apiserver_port,
                          process=processes.pop("kube-apiserver"))
    return RealControlPlane(
        url=url, admin_kubeconfig=kubeconfigs["admin"], ca_pem=ca_pem, work_dir=work_dir, processes=processes,
        apiservers={apiserver_name: apiserver}, balancer=balancer, setup=setup,
        component_args={name: list(starter.args[name])
                        for name in ("kube-controller-manager", "kube-scheduler")},
        components_version=version or bin_dir.name,
    )


def issue_apiserver_certificate(*, pki_dir: Path, target_dir: Path, server_names: tuple[str, ...],
                                stem: str = "apiserver") -> tuple[Path, Path]:
    """A serving certificate for an apiserver, from ``pki_dir``'s cluster CA: 127.0.0.1, the in-cluster
    names and ``server_names`` (the cluster's endpoint, the server's own address); ``<stem>.crt`` and
    ``<stem>.key`` (0600) in ``target_dir``."""
    ca_cert, ca_key = _load_ca(pki_dir, "ca")
    names = ("127.0.0.1", "localhost", KUBERNETES_SERVICE_IP, "kubernetes", "kubernetes.default",
             "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", *server_names)
    issued = _issue(ca_cert=ca_cert, ca_key=ca_key, common_name="kube-apiserver",
                    server_names=tuple(dict.fromkeys(names)))
    target_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (target_dir / f"{stem}.crt").write_bytes(issued.cert_pem)
    _write_secret(target_dir / f"{stem}.key", issued.key_pem)
    return target_dir / f"{stem}.crt", target_dir / f"{stem}.key"


def _apiserver_args(program: str, setup: _ApiserverSetup, *, port: int, serving_crt: Path,
                    serving_key: Path) -> list[str]:
    """kube-apiserver's command line, as kubeadm's static pod runs it, on ``port`` with its own serving
    certificate; the rest is what every apiserver of the control plane shares."""
    pki_dir = setup.pki_dir
    return [
        program, "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
        f"--secure-port={port}", f"--etcd-servers={setup.etcd_url}", *setup.etcd_client,
        f"--tls-cert-file={serving_crt}", f"--tls-private-key-file={serving_key}",
        f"--client-ca-file={pki_dir / 'ca.crt'}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki_dir / 'sa.pub'}",
        f"--service-account-signing-key-file={pki_dir / 'sa.key'}",
        "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
        "--enable-bootstrap-token-auth=true",
        # the aggregation layer's front proxy, as kubeadm sets it up
        f"--requestheader-client-ca-file={pki_dir / 'front-proxy-ca.crt'}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={setup.proxy_crt}", f"--proxy-client-key-file={setup.proxy_key}",
        # kubelets (kwok) are reached at their InternalIP and their serving certificate is verified
        f"--kubelet-client-certificate={setup.kubelet_client_crt}",
        f"--kubelet-client-key={setup.kubelet_client_key}",
        f"--kubelet-certificate-authority={pki_dir / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP",
        f"--service-cluster-ip-range={setup.service_cidr}", "--allow-privileged=true",
        # the "kubernetes" Service's endpoint would be 127.0.0.1, which Endpoints refuse (loopback)
        "--endpoint-reconciler-type=none", "--profiling=false",
        # once SIGTERM came it still serves this long (its /readyz failing) before it closes its listener and
        # its idle connections; the balancer took it out first, so this only lets requests in flight end
        f"--shutdown-delay-duration={APISERVER_SHUTDOWN_DELAY_SECONDS}s",
    ]


def _controller_manager_extra(kubeadm: KubeadmIssued | None) -> list[str]:
    """What kubeadm adds to the controller manager from its ClusterConfiguration."""
    if kubeadm is None:
        return []
    args = [f"--cluster-name={kubeadm.cluster_name}"]
    if kubeadm.pod_cidr:
        args += ["--allocate-node-cidrs=true", f"--cluster-cidr={kubeadm.pod_cidr}"]
    return args + [f"--{name}={value}" for name, value in kubeadm.controller_manager_args]


def _lease_held(api: httpx.Client, name: str) -> Callable[[], bool]:
    """Whether the leader-election Lease kube-system/<name> has a holder: the component is running its
    controllers (with leader election, nothing runs before it holds the lease)."""
    def held() -> bool:
        response = api.get(f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{name}")
        return response.status_code == 200 and bool(response.json().get("spec", {}).get("holderIdentity"))
    return held
