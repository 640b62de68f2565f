"""The user-data of a node: valid #cloud-config (checked by cloud-init itself), no YAML injection, and the
agent config readable back for the simulator's boot step."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from provider.bootstrap.cloud_init import (
    AGENT_CONFIG_PATH,
    AGENT_MANIFEST_PATH,
    BootstrapError,
    NodeBootstrap,
    parse_agent_config,
    parse_node_config,
    render_user_data,
)
from tests.provider.bootstrap.samples import AGENT_TOKEN, control_plane_node, worker_node

IN_CI = os.environ.get("CI") == "true" or os.environ.get("KAAS_REQUIRE_SERVICES") == "1"


ROLES = ("control-plane", "worker")


def node_of(role: str) -> NodeBootstrap:
    return control_plane_node() if role == "control-plane" else worker_node()


@pytest.mark.parametrize("role", ROLES)
def test_user_data_is_a_cloud_config_that_cloud_init_accepts(tmp_path: Path, role: str) -> None:
    binary = shutil.which("cloud-init")
    if binary is None:
        if IN_CI:
            pytest.fail("cloud-init is not installed; .ci/run installs it (apt-get install -y cloud-init)")
        pytest.skip("cloud-init is not installed (apt-get install -y cloud-init)")
    path = tmp_path / "user-data"
    path.write_text(render_user_data(node_of(role)))
    result = subprocess.run(
        [binary, "schema", "--config-file", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid" in result.stdout


def test_the_control_plane_gets_the_agent_config_readable_by_root_only() -> None:
    user_data = render_user_data(control_plane_node())
    assert user_data.startswith("#cloud-config\n")
    files = {f["path"]: f for f in yaml.safe_load(user_data)["write_files"]}
    assert files[AGENT_CONFIG_PATH]["owner"] == "root:root"
    assert files[AGENT_CONFIG_PATH]["permissions"] == "0600"
    assert int(files[AGENT_CONFIG_PATH]["permissions"], 8) & (stat.S_IRWXG | stat.S_IRWXO) == 0
    assert parse_agent_config(user_data) == {
        "tunnel_url": "wss://kaas.example.com/v1/tunnel",
        "token": AGENT_TOKEN,
        "cluster_id": "4f1c2d3e-0000-4000-8000-000000000001",
        "node_name": "kaas-4f1c2d3e-cp-1",
        "role": "control-plane",
    }


@pytest.mark.parametrize("role", ROLES)
def test_the_agent_token_is_in_the_user_data_of_the_control_plane_only(role: str) -> None:
    user_data = render_user_data(node_of(role))
    files = {f["path"]: f for f in yaml.safe_load(user_data)["write_files"]}
    if role == "control-plane":
        assert AGENT_TOKEN in files[AGENT_CONFIG_PATH]["content"]
        # besides its own file, only the first node's manifest of the agent's Secret carries it
        others = "".join(
            yaml.safe_dump(f)
            for path, f in files.items()
            if path not in (AGENT_CONFIG_PATH, AGENT_MANIFEST_PATH)
        )
        assert AGENT_TOKEN not in others
    else:
        assert AGENT_CONFIG_PATH not in files
        assert "kaasagent" not in user_data


def test_a_worker_is_never_rendered_with_the_agent_token() -> None:
    with pytest.raises(BootstrapError, match="only control-plane nodes carry the agent token"):
        render_user_data(worker_node(agent_token=AGENT_TOKEN))


def test_node_config_carries_the_cluster_spec() -> None:
    config = parse_node_config(render_user_data(worker_node()))
    assert config["role"] == "worker"
    assert config["kubernetes_version"] == "1.36.3"
    assert config["pod_cidr"] == "10.244.0.0/16"
    assert config["service_cidr"] == "10.96.0.0/12"
    assert config["api_endpoint"] == "https://10.0.0.10:6443"
    assert config["labels"] == {"example.com/team": "blue", "tier": "web"}
    assert config["taints"] == [{"key": "dedicated", "value": "web", "effect": "NoSchedule"}]


def test_a_hostile_value_cannot_inject_yaml() -> None:
    # Labels are validated; the endpoint and version are not label-shaped but are dumped, never templated.
    sneaky = "1.30\nruncmd: [[rm, -rf, /]]"
    user_data = render_user_data(worker_node(kubernetes_version=sneaky))
    document = yaml.safe_load(user_data)
    assert document["runcmd"][-1] == ["kubeadm", "join", "--config", "/etc/kaas/kubeadm.yaml"]
    assert all(command[0] in ("modprobe", "sysctl", "kubeadm") for command in document["runcmd"])
    assert parse_node_config(user_data)["kubernetes_version"] == sneaky


@pytest.mark.parametrize(
    ("labels", "taints"),
    [
        ({"bad key": "x"}, []),
        ({"tier": "has space"}, []),
        ({"UPPER.example.com/x": "y"}, []),
        ({"x" * 64: "y"}, []),
        ({}, [{"key": "k", "value": "v", "effect": "Sometimes"}]),
        ({}, [{"key": "k", "value": "v", "effect": "NoSchedule", "extra": "1"}]),
    ],
)
def test_invalid_labels_and_taints_are_refused(labels: dict[str, str], taints: list[dict[str, str]]) -> None:
    with pytest.raises(BootstrapError):
        render_user_data(worker_node(labels=labels, taints=taints))


def test_a_joining_control_plane_without_an_agent_token_gets_no_agent_config() -> None:
    user_data = render_user_data(control_plane_node(initializes=False, agent_token=None))
    with pytest.raises(BootstrapError, match="does not write"):
        parse_agent_config(user_data)


def test_parse_refuses_what_is_not_cloud_config() -> None:
    with pytest.raises(BootstrapError, match="not a #cloud-config"):
        parse_agent_config("#!/bin/sh\necho hi\n")
