"""Reading kaas's rendered user-data back (the renderer is kaas's own: ``provider.bootstrap.cloud_init``)."""

from __future__ import annotations

import base64

import pytest

from nodesim.userdata import UserDataError, decode_user_data, parse_user_data
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
