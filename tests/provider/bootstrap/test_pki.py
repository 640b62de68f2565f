"""A cluster's PKI as kaas generates it: real CAs with kubeadm's names, a key that matches, the discovery hash
of the cluster CA, and no key in a repr."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from cryptography import x509

from provider.bootstrap.pki import (
    CLUSTER_CA,
    ETCD_CA,
    FRONT_PROXY_CA,
    PkiError,
    ca_cert_hash,
    check_pair,
    generate_authority,
)
from tests.provider.bootstrap.samples import sample_pki


def test_each_authority_is_a_self_signed_ca_named_as_kubeadm_names_it() -> None:
    pki = sample_pki()
    for pair, common_name in (
        (pki.cluster_ca, "kubernetes"),
        (pki.etcd_ca, "etcd-ca"),
        (pki.front_proxy_ca, "front-proxy-ca"),
    ):
        certificate = x509.load_pem_x509_certificate(pair.public_pem.encode())
        assert certificate.subject == certificate.issuer
        assert certificate.subject.rfc4514_string() == f"CN={common_name}"
        assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        check_pair(pair)
    assert "BEGIN PUBLIC KEY" in pki.service_account.public_pem
    check_pair(pki.service_account)


def test_the_three_authorities_are_distinct() -> None:
    pki = sample_pki()
    assert len({ca_cert_hash(p.public_pem) for p in (pki.cluster_ca, pki.etcd_ca, pki.front_proxy_ca)}) == 3


def test_a_ca_is_valid_from_a_little_before_now_for_ten_years() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    pair = generate_authority(CLUSTER_CA, now=now)
    certificate = x509.load_pem_x509_certificate(pair.public_pem.encode())
    assert certificate.not_valid_before_utc < now
    assert (certificate.not_valid_after_utc - now).days == 3650
    assert pair.not_after == certificate.not_valid_after_utc


def test_a_key_that_is_not_the_certificates_own_is_refused() -> None:
    pki = sample_pki()
    with pytest.raises(PkiError, match="does not match"):
        check_pair(replace(pki.cluster_ca, key_pem=pki.etcd_ca.key_pem))


def test_garbage_instead_of_a_certificate_is_refused() -> None:
    with pytest.raises(PkiError):
        check_pair(replace(sample_pki().front_proxy_ca, public_pem="not a certificate"))
    with pytest.raises(PkiError):
        ca_cert_hash("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def test_the_ca_hash_is_sha256_of_the_public_key_info() -> None:
    value = sample_pki().ca_cert_hash
    assert value.startswith("sha256:")
    assert len(value.removeprefix("sha256:")) == 64
    assert value == ca_cert_hash(sample_pki().cluster_ca.public_pem)


def test_no_key_reaches_a_repr() -> None:
    pki = sample_pki()
    text = repr(pki)
    for pair in pki.pairs():
        assert pair.key_pem.splitlines()[1] not in text
    assert {ETCD_CA.name, FRONT_PROXY_CA.name} <= {p.kind.name for p in pki.pairs()}
