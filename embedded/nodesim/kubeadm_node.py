"""What a kaas node's boot does with the kubeadm configuration of its user-data, played for real.

Owned by ``nodesim``; called by ``nodesim.control_planes`` (the first control plane: ``kubeadm init``'s
phases) and by ``nodesim.booter`` (every other node: ``kubeadm join``'s discovery and TLS bootstrap). The
documents are ``/etc/kaas/kubeadm.yaml`` (``provider.bootstrap.kubeadm`` renders them), read back by
``nodesim.userdata``.

- **The first control plane** (its documents hold an InitConfiguration): the real ``kubeadm init phase
  certs all`` and ``kubeadm init phase kubeconfig all`` run on the documents as written, with only
  ``certificatesDir`` moved into the cluster's folder and, when the InitConfiguration names none, the
  ``advertiseAddress`` kubeadm would detect on the VM (the server's address in Nova). kubeadm finds kaas's
  authorities there (laid from the user-data) and issues every leaf certificate from them: the apiserver's
  serving certificate holds exactly the SANs kubeadm derives from kaas's configuration. Once the apiserver
  answers, ``kubeadm init phase bootstrap-token`` creates the join wave's token from ``bootstrapTokens``,
  ``kube-public/cluster-info`` and the RBAC of node bootstrap, as ``kubeadm init`` does.
- **Every other node** (a JoinConfiguration): ``discover`` does what ``kubeadm join``'s token discovery
  does: it reads ``cluster-info`` without trusting the server, checks its JWS signature with the bootstrap
  token (the controller manager's bootstrap signer signs it with every valid token, and with no expired
  one), pins the cluster CA by ``caCertHashes``, and reads it again over TLS verified against that CA and
  the endpoint's host name. ``tls_bootstrap`` then authenticates with the token (the apiserver checks the
  bootstrap-token Secret) and has the kubelet's client certificate issued through a CertificateSigningRequest,
  auto-approved by the RBAC the bootstrap-token phase made, as a kubelet's TLS bootstrap does.

A step that fails raises ``NodeBootFailed`` with the step kubeadm would name and its reason (never a token or
a key); ``retryable`` ones (the apiserver not answering yet, the signature not there yet) are tried again by
the caller until its deadline, as kubeadm retries discovery.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import ssl
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

KUBEADM_TIMEOUT_SECONDS = 60.0
OUTPUT_TAIL_CHARS = 600
CLUSTER_INFO = "/api/v1/namespaces/kube-public/configmaps/cluster-info"
CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
KUBELET_CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
NODE_LABELS_ARG = "node-labels"
# kubeadm's (and the bootstrap-token Secret's) format: <token-id>.<token-secret>
BOOTSTRAP_TOKEN_FORMAT = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")
# the steps a boot report names, as kubeadm's phases are called
STEP_INIT = "kubeadm init"
STEP_CERTS = "kubeadm init phase certs"
STEP_KUBECONFIG = "kubeadm init phase kubeconfig"
STEP_BOOTSTRAP_TOKEN = "kubeadm init phase bootstrap-token"  # noqa: S105 (a step name)
STEP_JOIN = "kubeadm join"
STEP_DISCOVERY = "kubeadm join discovery"
STEP_CONTROL_PLANE_PREPARE = "kubeadm join control-plane-prepare"
STEP_KUBELET_START = "kubeadm join kubelet-start"


class NodeBootFailed(Exception):
    """A boot step failed: ``step`` as kubeadm names it, ``reason`` what went wrong (never a secret)."""

    def __init__(self, step: str, reason: str, *, retryable: bool = False) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True)
class KubeadmDocuments:
    """The kubeadm documents of one node's user-data (they hold the bootstrap token: ``repr`` hides them)."""

    documents: tuple[dict[str, Any], ...] = field(repr=False)

    def of_kind(self, kind: str) -> dict[str, Any] | None:
        return next((d for d in self.documents if d.get("kind") == kind), None)

    @property
    def initializes(self) -> bool:
        return self.of_kind("InitConfiguration") is not None

    @property
    def registration(self) -> dict[str, Any]:
        document = self.of_kind("InitConfiguration") or self.of_kind("JoinConfiguration") or {}
        registration = document.get("nodeRegistration")
        return registration if isinstance(registration, dict) else {}

    @property
    def node_name(self) -> str | None:
        name = self.registration.get("name")
        return str(name) if name else None

    @property
    def node_labels(self) -> dict[str, str]:
        """``kubeletExtraArgs`` ``node-labels`` (``k=v,k2=v2``), as the kubelet registers them."""
        labels: dict[str, str] = {}
        for arg in self.registration.get("kubeletExtraArgs") or []:
            if isinstance(arg, dict) and arg.get("name") == NODE_LABELS_ARG:
                for pair in str(arg.get("value") or "").split(","):
                    key, _, value = pair.partition("=")
                    if key:
                        labels[key] = value
        return labels

    @property
    def taints(self) -> list[dict[str, str]] | None:
        """``nodeRegistration.taints``; None when unset (kubeadm's default for the role)."""
        taints = self.registration.get("taints")
        if taints is None:
            return None
        return [{str(k): str(v) for k, v in t.items()} for t in taints if isinstance(t, dict)]

    @property
    def joins_control_plane(self) -> bool:
        join = self.of_kind("JoinConfiguration") or {}
        return join.get("controlPlane") is not None

    def cluster_value(self, *path: str) -> Any:
        node: Any = self.of_kind("ClusterConfiguration") or {}
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return node

    @property
    def control_plane_endpoint_host(self) -> str | None:
        endpoint = self.cluster_value("controlPlaneEndpoint")
        return _host(str(endpoint)) if endpoint else None

    def discovery(self) -> BootstrapTokenDiscovery:
        join = self.of_kind("JoinConfiguration")
        token_discovery = ((join or {}).get("discovery") or {}).get("bootstrapToken")
        if not isinstance(token_discovery, dict):
            raise NodeBootFailed(STEP_JOIN, "the JoinConfiguration has no discovery.bootstrapToken")
        endpoint = str(token_discovery.get("apiServerEndpoint") or "")
        host = _host(endpoint)
        if not host:
            raise NodeBootFailed(STEP_JOIN, f"discovery names no API server endpoint ({endpoint!r})")
        hashes_ = [str(h) for h in token_discovery.get("caCertHashes") or []]
        return BootstrapTokenDiscovery(
            endpoint=endpoint, host=host, token=str(token_discovery.get("token") or ""),
            ca_cert_hashes=tuple(hashes_), unsafe_skip=bool(token_discovery.get("unsafeSkipCAVerification")))


@dataclass(frozen=True)
class BootstrapTokenDiscovery:
    endpoint: str  # host:port
    host: str
    token: str = field(repr=False)
    ca_cert_hashes: tuple[str, ...]
    unsafe_skip: bool = False

    @property
    def token_id(self) -> str:
        return self.token.split(".", 1)[0]


def _host(endpoint: str) -> str | None:
    return urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}").hostname


def parse_documents(text: str) -> KubeadmDocuments:
    """The documents of ``/etc/kaas/kubeadm.yaml``; ``ValueError`` (no snippet: it holds the token)."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError:
        raise ValueError("/etc/kaas/kubeadm.yaml is not valid YAML") from None
    if not all(isinstance(d, dict) for d in documents):
        raise ValueError("/etc/kaas/kubeadm.yaml holds a document that is not a mapping")
    return KubeadmDocuments(tuple(documents))


# --- the first control plane: kubeadm init's phases ---


def _run_kubeadm(kubeadm: Path, step: str, args: Sequence[str | Path]) -> None:
    try:
        result = subprocess.run(  # noqa: S603 - the release's kubeadm, arguments built here
            [str(kubeadm), *(str(a) for a in args)], capture_output=True, text=True,
            timeout=KUBEADM_TIMEOUT_SECONDS, check=False, stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NodeBootFailed(step, f"{type(exc).__name__}: {exc}") from exc
    if result.returncode != 0:
        # kubeadm's own words (it prints errors, never keys; a token only with --dry-run or token print)
        output = (result.stderr or result.stdout).strip()
        raise NodeBootFailed(step, output[-OUTPUT_TAIL_CHARS:] or f"exit status {result.returncode}")


def write_init_config(documents: KubeadmDocuments, *, path: Path, pki_dir: Path,
                      advertise_address: str | None) -> None:
    """The node's kubeadm.yaml as written, but with ``certificatesDir`` here and, when it names none, the
    address kubeadm would detect on the VM (0600: it holds the bootstrap token)."""
    rewritten: list[dict[str, Any]] = []
    for document in documents.documents:
        copy = json.loads(json.dumps(document))
        if copy.get("kind") == "ClusterConfiguration":
            copy["certificatesDir"] = str(pki_dir)
        if copy.get("kind") == "InitConfiguration" and advertise_address:
            endpoint = copy.setdefault("localAPIEndpoint", {})
            endpoint.setdefault("advertiseAddress", advertise_address)
        rewritten.append(copy)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(yaml.safe_dump_all(rewritten))


def init_certificates(*, kubeadm: Path, config: Path, kubeconfig_dir: Path) -> None:
    """``kubeadm init phase certs all`` (kaas's CAs are already in ``certificatesDir``: kubeadm issues from
    them, and reuses a leaf it issued before) and ``kubeadm init phase kubeconfig all``."""
    _run_kubeadm(kubeadm, STEP_CERTS, ["init", "phase", "certs", "all", "--config", config])
    kubeconfig_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _run_kubeadm(kubeadm, STEP_KUBECONFIG,
                 ["init", "phase", "kubeconfig", "all", "--config", config,
                  "--kubeconfig-dir", kubeconfig_dir])


def join_apiserver_certificate(*, kubeadm: Path, init_config: Path, pki_dir: Path, node_name: str,
                               advertise_address: str | None, version: str) -> None:
    """A joining control plane's apiserver serving certificate, issued as ``kubeadm join phase
    control-plane-prepare certs`` issues it: from the cluster's ClusterConfiguration (the one ``kubeadm init``
    ran with, as the ``kubeadm-config`` ConfigMap holds it: its certSANs and endpoint), with this node's name
    and address, by ``version``'s kubeadm, into ``pki_dir`` (which holds the cluster CA's ``ca.crt`` and
    ``ca.key``). ``NodeBootFailed`` (step ``control-plane-prepare``) when kubeadm refuses."""
    rewritten: list[dict[str, Any]] = []
    for document in yaml.safe_load_all(init_config.read_text()):
        if not isinstance(document, dict):
            continue
        copy = json.loads(json.dumps(document))
        if copy.get("kind") == "ClusterConfiguration":
            copy["certificatesDir"] = str(pki_dir)
            # the ClusterConfiguration an immutable upgrade leaves in kubeadm-config names the new version
            copy["kubernetesVersion"] = version
        if copy.get("kind") == "InitConfiguration":
            copy.pop("bootstrapTokens", None)
            copy.setdefault("nodeRegistration", {})["name"] = node_name
            endpoint = copy.setdefault("localAPIEndpoint", {})
            endpoint.pop("advertiseAddress", None)  # the first node's; kubeadm detects this node's otherwise
            if advertise_address:
                endpoint["advertiseAddress"] = advertise_address
        rewritten.append(copy)
    config = pki_dir.parent / "kubeadm-join.yaml"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(yaml.safe_dump_all(rewritten))
    _run_kubeadm(kubeadm, STEP_CONTROL_PLANE_PREPARE,
                 ["init", "phase", "certs", "apiserver", "--config", config])


def create_bootstrap_token(*, kubeadm: Path, config: Path, admin_kubeconfig: Path) -> None:
    """``kubeadm init phase bootstrap-token``: the token of ``bootstrapTokens``, ``kube-public/cluster-info``
    and the RBAC that lets the token's group join (node bootstrap, CSR auto-approval)."""
    _run_kubeadm(kubeadm, STEP_BOOTSTRAP_TOKEN,
                 ["init", "phase", "bootstrap-token", "--config", config, "--kubeconfig", admin_kubeconfig,
                  "--skip-token-print"])


# --- every other node: kubeadm join's discovery and the kubelet's TLS bootstrap ---


def ca_cert_hash(cert_pem: bytes) -> str:
    """kubeadm's pin of a CA: ``sha256:`` of its DER SubjectPublicKeyInfo."""
    certificate = x509.load_pem_x509_certificate(cert_pem)
    spki = certificate.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jws_valid(detached: str, *, payload: str, token_id: str, secret: str) -> bool:
    """A detached compact JWS (``header..signature``) over ``payload``, HS256 with the token's secret, as
    the bootstrap signer makes it (``k8s.io/cluster-bootstrap/token/jws``)."""
    parts = detached.split(".")
    if len(parts) != 3 or parts[1]:
        return False
    header_b64, _, signature = parts
    try:
        header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
    except (ValueError, TypeError):
        return False
    if header.get("alg") != "HS256" or header.get("kid") not in (None, token_id):
        return False
    expected = hmac.new(secret.encode(), f"{header_b64}.{_b64url(payload.encode())}".encode(),
                        hashlib.sha256).digest()
    return hmac.compare_digest(_b64url(expected), signature)


def _verify_for(ca_pem: bytes) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca_pem.decode())


def discover(discovery: BootstrapTokenDiscovery, *, api_url: str, timeout: float = 10.0) -> bytes:
    """The cluster CA (PEM), found as ``kubeadm join`` finds it through ``discovery``'s endpoint, which this
    machine serves at ``api_url``; ``NodeBootFailed`` (step ``discovery``) when it cannot be trusted."""
    if not BOOTSTRAP_TOKEN_FORMAT.match(discovery.token):
        # kubeadm refuses such a token before it dials anything (and would refuse it forever)
        raise NodeBootFailed(STEP_DISCOVERY, "the bootstrap token does not match [a-z0-9]{6}.[a-z0-9]{16}")
    token_id, _, secret = discovery.token.partition(".")
    # first without trusting the server (kubeadm does the same: the signature and the pin decide)
    try:
        with httpx.Client(base_url=api_url, verify=False, timeout=timeout, trust_env=False) as insecure:  # noqa: S501
            response = insecure.get(CLUSTER_INFO)
    except httpx.HTTPError as exc:
        raise NodeBootFailed(STEP_DISCOVERY, f"cannot reach {discovery.endpoint}: {type(exc).__name__}",
                             retryable=True) from exc
    if response.status_code != 200:
        raise NodeBootFailed(STEP_DISCOVERY, f"cluster-info from {discovery.endpoint}: HTTP "
                             f"{response.status_code}", retryable=True)
    data = response.json().get("data") or {}
    kubeconfig_text = str(data.get("kubeconfig") or "")
    signature = data.get(f"jws-kubeconfig-{token_id}")
    if not signature:
        raise NodeBootFailed(
            STEP_DISCOVERY,
            f"there is no JWS signed token in the cluster-info ConfigMap: token id {token_id!r} is invalid "
            "for this cluster, or it has expired", retryable=True)
    if not _jws_valid(str(signature), payload=kubeconfig_text, token_id=token_id, secret=secret):
        raise NodeBootFailed(STEP_DISCOVERY, "failed to verify the JWS signature of cluster-info with the "
                             "bootstrap token: the token's secret is wrong; cannot trust this API server")
    try:
        cluster = yaml.safe_load(kubeconfig_text)["clusters"][0]["cluster"]
        ca_pem = base64.b64decode(cluster["certificate-authority-data"])
        found = ca_cert_hash(ca_pem)
    except (KeyError, IndexError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise NodeBootFailed(STEP_DISCOVERY, "cluster-info holds no usable cluster CA") from exc
    if not discovery.unsafe_skip and found not in discovery.ca_cert_hashes:
        raise NodeBootFailed(
            STEP_DISCOVERY,
            f"cluster CA found in cluster-info ConfigMap is invalid: none of the public keys {found!r} are "
            f"pinned (caCertHashes: {', '.join(discovery.ca_cert_hashes) or 'none'})")
    # again, trusting only the pinned CA, for the endpoint's host name (kubeadm: "validate TLS against the
    # pinned public key"): a serving certificate that does not name the endpoint fails here
    try:
        with httpx.Client(base_url=api_url, verify=_verify_for(ca_pem), timeout=timeout,
                          trust_env=False) as secure:
            again = secure.get(CLUSTER_INFO, extensions={"sni_hostname": discovery.host})
    except httpx.ConnectError as exc:
        cause = _verification_error(exc)
        if cause is not None:
            raise NodeBootFailed(
                STEP_DISCOVERY,
                f"TLS to {discovery.endpoint} with the pinned CA failed: {cause.verify_message}") from exc
        raise NodeBootFailed(STEP_DISCOVERY, f"cannot reach {discovery.endpoint}: {exc}",
                             retryable=True) from exc
    except httpx.HTTPError as exc:
        raise NodeBootFailed(STEP_DISCOVERY, f"cannot reach {discovery.endpoint}: {type(exc).__name__}",
                             retryable=True) from exc
    if again.status_code != 200:
        raise NodeBootFailed(STEP_DISCOVERY, f"cluster-info over TLS: HTTP {again.status_code}",
                             retryable=True)
    return ca_pem


def _verification_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure under an ``httpx.ConnectError`` (httpx raises its own error from
    httpcore's, which httpcore raised from the ``ssl`` one), or None when the connection failed otherwise."""
    seen: BaseException | None = exc
    for _ in range(8):  # a bounded walk: a cause chain is short, and never trusted to end
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@dataclass(frozen=True)
class KubeletCredentials:
    """The client certificate a node's TLS bootstrap got (``system:node:<name>``). ``repr`` hides the key."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)


def tls_bootstrap(discovery: BootstrapTokenDiscovery, *, api_url: str, ca_pem: bytes, node_name: str,
                  timeout: float = 30.0) -> KubeletCredentials:
    """A kubelet's TLS bootstrap with the bootstrap token: a CSR for ``system:node:<node_name>``, approved
    and signed by the controller manager; ``NodeBootFailed`` (step ``kubelet-start``) when the token is
    refused or no certificate comes."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node_name}")])
    request = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    request_pem = request.public_bytes(serialization.Encoding.PEM)
    name = f"node-csr-{hashlib.sha256(request_pem).hexdigest()[:20]}"
    csr = {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
           "metadata": {"name": name},
           "spec": {"request": base64.b64encode(request_pem).decode(), "signerName": KUBELET_CLIENT_SIGNER,
                    "usages": ["digital signature", "client auth"]}}
    headers = {"Authorization": f"Bearer {discovery.token}"}
    step = STEP_KUBELET_START
    with httpx.Client(base_url=api_url, verify=_verify_for(ca_pem), timeout=10.0, trust_env=False,
                      headers=headers) as client:
        try:
            created = client.post(CSR_PATH, json=csr)
        except httpx.HTTPError as exc:
            raise NodeBootFailed(step, f"cannot reach the API server: {type(exc).__name__}",
                                 retryable=True) from exc
        if created.status_code == 401:
            raise NodeBootFailed(step, "the API server refused the bootstrap token (Unauthorized): it does "
                                 "not exist, or it has expired", retryable=True)
        if created.status_code not in (201, 409):
            raise NodeBootFailed(step, f"creating the kubelet's CertificateSigningRequest: HTTP "
                                 f"{created.status_code} {_status_message(created)}")
        deadline = time.monotonic() + timeout
        while True:
            status = client.get(f"{CSR_PATH}/{name}")
            if status.status_code == 200:
                body = status.json().get("status") or {}
                for condition in body.get("conditions") or []:
                    if condition.get("type") in ("Denied", "Failed") and condition.get("status") == "True":
                        raise NodeBootFailed(step, f"the kubelet's CSR was {condition['type'].lower()}: "
                                             f"{condition.get('message', '')}")
                if body.get("certificate"):
                    return KubeletCredentials(cert_pem=base64.b64decode(body["certificate"]),
                                              key_pem=key.private_bytes(serialization.Encoding.PEM,
                                                                        serialization.PrivateFormat.PKCS8,
                                                                        serialization.NoEncryption()))
            if time.monotonic() > deadline:
                raise NodeBootFailed(step, "the kubelet's CSR was not approved and signed in "
                                     f"{timeout:.0f} s", retryable=True)
            time.sleep(0.2)


def _status_message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message") or "")
    except ValueError:
        return response.reason_phrase


def node_client(*, api_url: str, ca_pem: bytes, cert_file: Path, key_file: Path) -> httpx.Client:
    """An HTTP client of the apiserver as the node itself (its TLS-bootstrapped certificate's files)."""
    context = _verify_for(ca_pem)
    context.load_cert_chain(cert_file, key_file)
    return httpx.Client(base_url=api_url, verify=context, timeout=10.0, trust_env=False)


def kubelet_credentials(kubeconfig: Path) -> KubeletCredentials:
    """The identity in a kubeconfig kubeadm wrote (``kubelet.conf``: ``system:node:<name>``)."""
    user = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]
    return KubeletCredentials(cert_pem=base64.b64decode(user["client-certificate-data"]),
                              key_pem=base64.b64decode(user["client-key-data"]))


# the labels of the kubernetes.io and k8s.io namespaces a kubelet may set on its own Node (NodeRestriction
# refuses any other there, such as node-role.kubernetes.io/*, which kubeadm sets as the admin)
_KUBELET_PREFIXES = ("kubelet.kubernetes.io", "node.kubernetes.io", "kubelet.k8s.io", "node.k8s.io")
_KUBELET_KEYS = ("kubernetes.io/hostname", "kubernetes.io/os", "kubernetes.io/arch",
                 "beta.kubernetes.io/os", "beta.kubernetes.io/arch", "beta.kubernetes.io/instance-type",
                 "topology.kubernetes.io/region", "topology.kubernetes.io/zone",
                 "failure-domain.beta.kubernetes.io/region", "failure-domain.beta.kubernetes.io/zone")


def kubelet_may_set(key: str) -> bool:
    prefix, _, _ = key.rpartition("/")
    restricted = prefix.endswith(("kubernetes.io", "k8s.io"))
    return not restricted or key in _KUBELET_KEYS or prefix.endswith(_KUBELET_PREFIXES)


UNINITIALIZED_TAINT = "node.cloudprovider.kubernetes.io/uninitialized"
