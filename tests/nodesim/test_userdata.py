"""Reading kaas's rendered user-data back (the renderer is kaas's own: ``provider.bootstrap.cloud_init``)."""

from __future__ import annotations

import base64

import pytest
import yaml

from nodesim.userdata import AUTHORITY_FILES, UserDataError, decode_user_data, parse_user_data
from tests.nodesim.conftest import kaas_user_data

TOKEN = "kaas-agent-token-do-not-log-0123456789"


def test_kaas_user_data_round_trips_through_base64() -> None:
    text = kaas_user_data(cluster_id="c1", node_name="n1", role="control-plane", labels={"tier": "web"})
    parsed = parse_user_data(decode_user_data(base64.b64encode(text.encode()).decode()))
    assert parsed.agent is not None
    assert parsed.agent["token"] == TOKEN
    assert parsed.agent["cluster_id"] == "c1"
    assert parsed.node_name == "n1"
    assert parsed.role == "control-plane"
    assert parsed.kubernetes_version == "v1.29.4"
    assert parsed.labels == {"tier": "web"}


def test_a_worker_has_no_agent_config() -> None:
    parsed = parse_user_data(kaas_user_data(cluster_id="c1", node_name="n1", role="worker"))
    assert parsed.agent is None
    assert parsed.role == "worker"
    assert parsed.node["cluster_id"] == "c1"


@pytest.mark.parametrize(
    "document",
    [
        "#!/bin/sh\necho " + TOKEN,
        "#cloud-config\nwrite_files: [{path: /etc/kaas/agent.yaml, content: '" + TOKEN + ": ['}]\n",
        "#cloud-config\n" + TOKEN + ": [unclosed\n",
        "#cloud-config\nwrite_files: []\n",
        "#cloud-config\n- " + TOKEN + "\n",
    ],
)
def test_bad_user_data_is_refused_without_quoting_it(document: str) -> None:
    with pytest.raises(UserDataError) as caught:
        parse_user_data(document)
    assert TOKEN not in str(caught.value)


def test_missing_or_undecodable_user_data_is_refused() -> None:
    with pytest.raises(UserDataError):
        decode_user_data(None)
    with pytest.raises(UserDataError):
        decode_user_data("not base64 at all!")


def with_files(text: str, *entries: dict[str, str]) -> str:
    document = yaml.safe_load(text)
    document["write_files"].extend(entries)
    return "#cloud-config\n" + yaml.safe_dump(document)


CA_KEY = "-----BEGIN PRIVATE KEY-----\nnot-a-real-key-do-not-log\n-----END PRIVATE KEY-----\n"


def test_the_cluster_pki_is_read_from_kubeadms_paths_text_or_base64() -> None:
    text = with_files(
        kaas_user_data(cluster_id="c1", node_name="n1", role="control-plane"),
        {"path": "/etc/kubernetes/pki/ca.crt", "content": "CERT"},
        {"path": "/etc/kubernetes/pki/ca.key", "encoding": "b64",
         "content": base64.b64encode(CA_KEY.encode()).decode()},
        {"path": "/etc/kubernetes/admin.conf", "content": "not a PKI file: ignored"},
        {"path": "/etc/kubernetes/pki/../../evil", "content": "not one of the names: ignored"},
    )
    parsed = parse_user_data(text)
    # the later entries win over the renderer's own authorities, and every authority kubeadm keeps is read
    assert (parsed.pki["ca.crt"], parsed.pki["ca.key"]) == (b"CERT", CA_KEY.encode())
    assert sorted(parsed.pki) == sorted(AUTHORITY_FILES)
    assert "not-a-real-key" not in repr(parsed)
    assert TOKEN not in repr(parsed)


def test_a_pki_file_in_an_unknown_encoding_is_refused() -> None:
    text = with_files(
        kaas_user_data(cluster_id="c1", node_name="n1", role="control-plane"),
        {"path": "/etc/kubernetes/pki/sa.key", "encoding": "gzip", "content": CA_KEY},
    )
    with pytest.raises(UserDataError, match=r"sa\.key") as caught:
        parse_user_data(text)
    assert "not-a-real-key" not in str(caught.value)


def test_the_api_endpoint_comes_from_the_node_config() -> None:
    parsed = parse_user_data(kaas_user_data(cluster_id="c1", node_name="n1", role="control-plane",
                                            api_endpoint=None))
    assert parsed.api_endpoint is None  # kaas renders none for a control plane without load balancer
