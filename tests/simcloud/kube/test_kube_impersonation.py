"""The agent's ServiceAccount impersonating kaas users through real kubectl (``--as`` / ``--as-group``)."""

from __future__ import annotations

from .conftest import AGENT_TOKEN, PLAIN_TOKEN, Kubectl


def test_viewer_may_list_namespaces(kubectl: Kubectl) -> None:
    result = kubectl("get", "ns", "-o", "name", "--as", "alice", "--as-group", "kaas:viewer",
                     "--as-group", "kaas:authenticated", token=AGENT_TOKEN)
    assert result.returncode == 0, result.stderr
    assert "namespace/default" in result.stdout.split()


def test_viewer_may_not_create(kubectl: Kubectl) -> None:
    namespace = kubectl("create", "ns", "x", "--as", "alice", "--as-group", "kaas:viewer", token=AGENT_TOKEN)
    assert namespace.returncode != 0
    assert (
        'Error from server (Forbidden): namespaces is forbidden: User "alice" cannot create resource '
        '"namespaces" in API group "" at the cluster scope'
    ) in namespace.stderr
    configmap = kubectl("-n", "default", "create", "configmap", "c", "--as", "alice", "--as-group",
                        "kaas:viewer", token=AGENT_TOKEN)
    assert (
        'configmaps is forbidden: User "alice" cannot create resource "configmaps" in API group "" '
        'in the namespace "default"'
    ) in configmap.stderr


def test_viewer_may_not_read_secrets(kubectl: Kubectl) -> None:
    result = kubectl("-n", "default", "get", "secrets", "--as", "alice", "--as-group", "kaas:viewer",
                     token=AGENT_TOKEN)
    assert 'cannot list resource "secrets"' in result.stderr


def test_member_may_create_configmaps_but_not_namespaces(kubectl: Kubectl) -> None:
    created = kubectl("-n", "default", "create", "configmap", "c", "--from-literal=a=b", "--as", "bob",
                      "--as-group", "kaas:member", token=AGENT_TOKEN)
    assert created.returncode == 0, created.stderr
    namespace = kubectl("create", "ns", "y", "--as", "bob", "--as-group", "kaas:member", token=AGENT_TOKEN)
    assert 'User "bob" cannot create resource "namespaces"' in namespace.stderr


def test_owner_may_create_namespaces(kubectl: Kubectl) -> None:
    result = kubectl("create", "ns", "z", "--as", "carol", "--as-group", "kaas:owner", token=AGENT_TOKEN)
    assert result.returncode == 0, result.stderr


def test_agent_may_not_impersonate_groups_outside_kaas(kubectl: Kubectl) -> None:
    # kubectl's discovery prints a forbidden discovery answer as "unknown"; the message is checked over HTTP
    # in test_kube_http.py.
    result = kubectl("get", "ns", "--as", "alice", "--as-group", "system:masters", token=AGENT_TOKEN)
    assert result.returncode != 0
    assert "Error from server (Forbidden)" in result.stderr


def test_agent_without_impersonation_has_no_rights_of_its_own(kubectl: Kubectl) -> None:
    result = kubectl("get", "ns", token=AGENT_TOKEN)
    expected = 'User "system:serviceaccount:kaas-system:kaas-agent" cannot list resource "namespaces"'
    assert expected in result.stderr


def test_token_without_impersonate_permission_is_forbidden(kubectl: Kubectl) -> None:
    result = kubectl("get", "ns", "--as", "alice", "--as-group", "kaas:owner", token=PLAIN_TOKEN)
    assert result.returncode != 0
    assert "Error from server (Forbidden)" in result.stderr


def test_auth_can_i_and_whoami_see_the_impersonated_user(kubectl: Kubectl) -> None:
    as_member = ("--as", "bob", "--as-group", "kaas:member", "--as-group", "kaas:authenticated")
    can_create_configmaps = kubectl("auth", "can-i", "create", "configmaps", *as_member, token=AGENT_TOKEN)
    assert can_create_configmaps.stdout.strip() == "yes"
    can_create_namespaces = kubectl("auth", "can-i", "create", "namespaces", *as_member, token=AGENT_TOKEN)
    assert can_create_namespaces.stdout.strip() == "no"
    whoami = kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
                     *as_member, token=AGENT_TOKEN)
    assert whoami.returncode == 0, whoami.stderr
    assert whoami.stdout.startswith("bob ")
    assert '"kaas:member"' in whoami.stdout
    assert '"system:authenticated"' in whoami.stdout
