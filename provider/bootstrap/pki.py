"""A cluster's PKI, owned by kaas: the three certificate authorities and the service-account key pair that
kubeadm would otherwise generate on the first control-plane node.

kaas generates them (with ``cryptography``) so that every control-plane node of a cluster gets the same
authorities from its user-data (kubeadm's "external CA material": ``kubeadm join --control-plane`` with the
files already in place), workers can pin the cluster CA by its hash, and kaas itself can verify the cluster
it talks to. Called by the reconciler (``provider.reconciler.pki_store`` stores them encrypted with the
secret box) and by the user-data renderer. Pure: no I/O, no logging (keys must never reach a log).

File names and common names are kubeadm's own (``kubeadm init phase certs`` reuses a CA it finds under
these names and issues the leaf certificates from it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# ECDSA P-256 (kubeadm's ClusterConfiguration.encryptionAlgorithm ECDSA-P256, which the renderer sets so
# that kubeadm issues the leaf certificates alike): every component accepts it, a key costs microseconds
# where RSA-2048 costs tens of milliseconds, and a key and certificate take a third of the user-data's bytes
ENCRYPTION_ALGORITHM = "ECDSA-P256"
# kubeadm's default CA validity (caCertificateValidityPeriod 87600h); rotation is a later issue
CA_VALIDITY = timedelta(days=3650)
# a CA's notBefore lies a little in the past, so that a node whose clock lags a few minutes accepts it
CLOCK_SKEW = timedelta(minutes=5)


class PkiError(ValueError):
    """Stored PKI material that cannot be used (not PEM, not a CA, a key that does not match)."""


@dataclass(frozen=True)
class AuthorityKind:
    """One kind of authority: what kaas calls it, kubeadm's common name and its file names."""

    name: str
    common_name: str
    cert_file: str  # relative to kubeadm's certificatesDir (/etc/kubernetes/pki)
    key_file: str


CLUSTER_CA = AuthorityKind("cluster-ca", "kubernetes", "ca.crt", "ca.key")
ETCD_CA = AuthorityKind("etcd-ca", "etcd-ca", "etcd/ca.crt", "etcd/ca.key")
FRONT_PROXY_CA = AuthorityKind("front-proxy-ca", "front-proxy-ca", "front-proxy-ca.crt", "front-proxy-ca.key")
# not an authority but a key pair the apiserver signs service-account tokens with; stored alike
SERVICE_ACCOUNT = AuthorityKind("service-account", "", "sa.pub", "sa.key")
AUTHORITY_KINDS = (CLUSTER_CA, ETCD_CA, FRONT_PROXY_CA)
ALL_KINDS = (*AUTHORITY_KINDS, SERVICE_ACCOUNT)
KIND_BY_NAME = {kind.name: kind for kind in ALL_KINDS}


@dataclass(frozen=True)
class KeyPair:
    """A certificate (or, for the service-account kind, a public key) and its private key, both PEM."""

    kind: AuthorityKind
    public_pem: str  # the CA certificate, or the service-account public key
    key_pem: str
    not_after: datetime | None  # None for the service-account key pair

    def __repr__(self) -> str:  # never let a key reach a log through a repr
        return f"KeyPair(kind={self.kind.name!r}, not_after={self.not_after!r})"


@dataclass(frozen=True)
class ClusterPki:
    """The authorities one cluster's nodes are built from."""

    cluster_ca: KeyPair
    etcd_ca: KeyPair
    front_proxy_ca: KeyPair
    service_account: KeyPair

    def pairs(self) -> tuple[KeyPair, ...]:
        return (self.cluster_ca, self.etcd_ca, self.front_proxy_ca, self.service_account)

    @property
    def ca_cert_hash(self) -> str:
        """What a worker pins the cluster CA by (kubeadm's ``caCertHashes``)."""
        return ca_cert_hash(self.cluster_ca.public_pem)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _private_pem(key: ec.EllipticCurvePrivateKey) -> str:
    # SEC 1 "EC PRIVATE KEY", as kubeadm writes its own ECDSA keys
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def generate_authority(kind: AuthorityKind, *, now: datetime, validity: timedelta = CA_VALIDITY) -> KeyPair:
    """A self-signed CA of ``kind`` valid from (about) ``now`` for ``validity``."""
    if kind is SERVICE_ACCOUNT:
        return generate_service_account_key()
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, kind.common_name)])
    public = key.public_key()
    not_after = now + validity
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(
        kind=kind,
        public_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
        key_pem=_private_pem(key),
        not_after=not_after,
    )


def generate_service_account_key() -> KeyPair:
    key = _new_key()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(
        kind=SERVICE_ACCOUNT, public_pem=public_pem.decode(), key_pem=_private_pem(key), not_after=None
    )


def generate_cluster_pki(*, now: datetime) -> ClusterPki:
    """Fresh authorities for a new cluster (a few milliseconds)."""
    return ClusterPki(
        cluster_ca=generate_authority(CLUSTER_CA, now=now),
        etcd_ca=generate_authority(ETCD_CA, now=now),
        front_proxy_ca=generate_authority(FRONT_PROXY_CA, now=now),
        service_account=generate_service_account_key(),
    )


def ca_cert_hash(cert_pem: str) -> str:
    """``sha256:<hex>`` of the certificate's DER SubjectPublicKeyInfo: kubeadm's discovery pin."""
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate: {exc}") from exc
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def check_pair(pair: KeyPair) -> None:
    """Raise ``PkiError`` unless the stored pair is usable: the key matches and a CA is a CA."""
    try:
        key = serialization.load_pem_private_key(pair.key_pem.encode(), password=None)
        if pair.kind is SERVICE_ACCOUNT:
            public = serialization.load_pem_public_key(pair.public_pem.encode())
        else:
            certificate = x509.load_pem_x509_certificate(pair.public_pem.encode())
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
            if not constraints.ca:
                raise PkiError(f"the {pair.kind.name} certificate is not a CA")
            public = certificate.public_key()
    except (ValueError, TypeError, x509.ExtensionNotFound) as exc:
        raise PkiError(f"the stored {pair.kind.name} is not usable: {exc}") from exc
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(der, spki) != public.public_bytes(der, spki):
        raise PkiError(f"the stored {pair.kind.name} key does not match its certificate")
