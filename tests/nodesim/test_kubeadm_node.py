"""nodesim's kubeadm join checks that need no cluster: the CA pin and the token's format."""

from __future__ import annotations

import pytest

from nodesim.kubeadm_node import (
    STEP_DISCOVERY,
    BootstrapTokenDiscovery,
    NodeBootFailed,
    ca_cert_hash,
    discover,
)
from tests.provider.bootstrap.samples import sample_pki


def test_the_ca_pin_is_the_one_kaas_renders_into_a_join() -> None:
    pki = sample_pki()
    assert ca_cert_hash(pki.cluster_ca.public_pem.encode()) == pki.ca_cert_hash


@pytest.mark.parametrize("token", ["abcdef0123456789abcdef", "ABCDEF.0123456789abcdef", "abcdef.0123", ""])
def test_a_token_not_of_kubeadms_format_fails_discovery_before_dialing(token: str) -> None:
    discovery = BootstrapTokenDiscovery(endpoint="10.0.0.10:6443", host="10.0.0.10", token=token,
                                        ca_cert_hashes=(sample_pki().ca_cert_hash,))
    # port 9 (discard) on loopback: were it dialled, the failure would be a retryable "cannot reach"
    with pytest.raises(NodeBootFailed) as failed:
        discover(discovery, api_url="https://127.0.0.1:9", timeout=1.0)
    assert failed.value.step == STEP_DISCOVERY
    assert not failed.value.retryable
    assert "does not match" in failed.value.reason
