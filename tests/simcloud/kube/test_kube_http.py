"""The stand-in over plain HTTP requests: RBAC edge cases, impersonation rules, list/watch/delete details."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from simcloud.kube import Identity
from simcloud.kube.rbac import Attributes, rule_allows
from simcloud.kube.testing import KubeStandinHandle, run_kube_standin

from .conftest import ADMIN_TOKEN, AGENT_TOKEN, PLAIN_TOKEN, TOKENS, bearer

ADMIN = bearer(ADMIN_TOKEN)
MALLORY = bearer(PLAIN_TOKEN)
CM_PATH = "/api/v1/namespaces/{ns}/configmaps"


def _configmap(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels or {}},
            "data": {"k": "v"}}


def _grant(standin: KubeStandinHandle, yaml_text: str) -> None:
    standin.standin.apply(yaml_text)


ROLE_ONE_CONFIGMAP = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: one-cm, namespace: default}
rules:
- {apiGroups: [""], resources: [configmaps], verbs: [get, update], resourceNames: [allowed]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: mallory-one-cm, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: one-cm}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: mallory}
"""


def test_unauthenticated_request_answers_401_status(http: httpx.Client) -> None:
    response = http.get("/api/v1/namespaces")
    assert response.status_code == 401
    assert response.json()["reason"] == "Unauthorized"
    assert http.get("/api/v1/namespaces", headers=bearer("wrong")).status_code == 401


def test_version_needs_no_token(http: httpx.Client) -> None:
    response = http.get("/version")
    assert response.status_code == 200
    assert response.json()["gitVersion"] == "v1.30.2"
    assert response.json()["minor"] == "30"


def test_discovery_documents(http: httpx.Client) -> None:
    aggregated = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    accept = {"Accept": aggregated}
    assert http.get("/api", headers={**ADMIN, **accept}).json()["versions"] == ["v1"]
    core = http.get("/api/v1", headers=ADMIN).json()
    assert core["groupVersion"] == "v1"
    namespaces = next(r for r in core["resources"] if r["name"] == "namespaces")
    assert namespaces["namespaced"] is False
    assert namespaces["shortNames"] == ["ns"]
    groups = http.get("/apis", headers=ADMIN).json()
    assert "rbac.authorization.k8s.io" in [g["name"] for g in groups["groups"]]
    rbac = http.get("/apis/rbac.authorization.k8s.io/v1", headers=ADMIN).json()
    assert {r["name"]: r["namespaced"] for r in rbac["resources"]}["rolebindings"] is True
    assert http.get("/openapi/v2", headers=ADMIN).status_code == 404


def test_any_authenticated_user_may_discover(http: httpx.Client) -> None:
    assert http.get("/api/v1", headers=MALLORY).status_code == 200


def test_resource_names_limit_a_rule_to_named_objects(http: httpx.Client, standin: KubeStandinHandle) -> None:
    for name in ("allowed", "other"):
        created = http.post(CM_PATH.format(ns="default"), json=_configmap(name), headers=ADMIN)
        assert created.status_code == 201
    _grant(standin, ROLE_ONE_CONFIGMAP)
    assert http.get(CM_PATH.format(ns="default") + "/allowed", headers=MALLORY).status_code == 200
    other = http.get(CM_PATH.format(ns="default") + "/other", headers=MALLORY)
    assert other.status_code == 403
    assert other.json()["message"] == (
        'configmaps "other" is forbidden: User "mallory" cannot get resource "configmaps" in API group "" '
        'in the namespace "default"'
    )
    # a list has no name, so a rule limited by resourceNames never allows it
    assert http.get(CM_PATH.format(ns="default"), headers=MALLORY).status_code == 403


def test_role_binding_grants_only_in_its_namespace(http: httpx.Client, standin: KubeStandinHandle) -> None:
    _grant(standin, """
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: mallory-view, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects:
- {kind: User, name: mallory}
""")
    assert http.get(CM_PATH.format(ns="default"), headers=MALLORY).status_code == 200
    elsewhere = http.get(CM_PATH.format(ns="kube-system"), headers=MALLORY)
    assert elsewhere.status_code == 403
    assert 'in the namespace "kube-system"' in elsewhere.json()["message"]
    # the ClusterRole is bound in one namespace only: no cluster-wide list
    assert http.get("/api/v1/configmaps", headers=MALLORY).status_code == 403


def test_rules_match_api_group_and_subresource_exactly() -> None:
    identity = Identity("u")
    core_everything = {"apiGroups": [""], "resources": ["*"], "verbs": ["*"]}
    assert rule_allows(core_everything, Attributes(identity=identity, verb="delete", resource="pods"))
    assert not rule_allows(core_everything, Attributes(
        identity=identity, verb="get", api_group="rbac.authorization.k8s.io", resource="roles"))
    logs_only = {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}
    assert rule_allows(logs_only, Attributes(identity=identity, verb="get", resource="pods",
                                             subresource="log"))
    assert not rule_allows(logs_only, Attributes(identity=identity, verb="get", resource="pods"))
    any_status = {"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["update"]}
    assert rule_allows(any_status, Attributes(identity=identity, verb="update", resource="pods",
                                              subresource="status"))
    assert not rule_allows(any_status, Attributes(identity=identity, verb="update", resource="pods"))
    discovery = {"nonResourceURLs": ["/apis/*"], "verbs": ["get"]}
    assert rule_allows(discovery, Attributes(identity=identity, verb="get", resource_request=False,
                                             path="/apis/rbac.authorization.k8s.io"))
    assert not rule_allows(discovery, Attributes(identity=identity, verb="get", resource_request=False,
                                                 path="/api"))


def test_service_account_subject_matches_only_its_namespace(
    http: httpx.Client, standin: KubeStandinHandle
) -> None:
    standin.standin.tokens["sa-token"] = Identity.service_account("kube-system", "kaas-agent")
    response = http.get("/api/v1/namespaces", headers={
        **bearer("sa-token"), "Impersonate-User": "alice", "Impersonate-Group": "kaas:owner"})
    assert response.status_code == 403
    message = response.json()["message"]
    assert 'User "system:serviceaccount:kube-system:kaas-agent" cannot impersonate' in message


def test_impersonating_without_the_impersonate_verb_is_forbidden(http: httpx.Client) -> None:
    response = http.get("/api/v1/namespaces", headers={
        **MALLORY, "Impersonate-User": "alice", "Impersonate-Group": "kaas:owner"})
    assert response.status_code == 403
    assert response.json()["message"] == (
        'users "alice" is forbidden: User "mallory" cannot impersonate resource "users" in API group "" '
        "at the cluster scope"
    )
    assert response.json()["details"] == {"kind": "users", "name": "alice"}


def test_impersonating_a_group_outside_kaas_is_forbidden(http: httpx.Client) -> None:
    response = http.get("/api/v1/namespaces", headers={
        **bearer(AGENT_TOKEN), "Impersonate-User": "alice", "Impersonate-Group": "system:masters"})
    assert response.status_code == 403
    assert response.json()["message"] == (
        'groups "system:masters" is forbidden: User "system:serviceaccount:kaas-system:kaas-agent" cannot '
        'impersonate resource "groups" in API group "" at the cluster scope'
    )


def test_impersonating_repeated_groups_checks_and_grants_each(http: httpx.Client) -> None:
    headers = httpx.Headers([
        ("Authorization", f"Bearer {AGENT_TOKEN}"), ("Impersonate-User", "alice"),
        ("Impersonate-Group", "kaas:authenticated"), ("Impersonate-Group", "kaas:owner"),
    ])
    response = http.post("/api/v1/namespaces", json={"metadata": {"name": "by-owner"}}, headers=headers)
    assert response.status_code == 201, response.text


def test_impersonating_extra_needs_its_own_permission(http: httpx.Client) -> None:
    response = http.get("/api/v1/namespaces", headers={
        **bearer(AGENT_TOKEN), "Impersonate-User": "alice", "Impersonate-Group": "kaas:viewer",
        "Impersonate-Extra-Scopes": "view"})
    assert response.status_code == 403
    assert 'cannot impersonate resource "userextras/scopes" in API group "authentication.k8s.io"' in (
        response.json()["message"])


def test_impersonating_groups_without_a_user_is_rejected(http: httpx.Client) -> None:
    response = http.get("/api/v1/namespaces", headers={**ADMIN, "Impersonate-Group": "kaas:owner"})
    assert response.status_code == 500
    assert "without impersonating a user" in response.json()["message"]


def test_masters_bypass_rbac_even_without_bindings(http: httpx.Client) -> None:
    response = http.request("DELETE", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/kaas:owner",
                            headers=ADMIN, content=b'{"kind":"DeleteOptions","apiVersion":"v1"}')
    assert response.status_code == 200
    assert response.json()["metadata"]["name"] == "kaas:owner"


def test_view_role_has_no_write_verbs_and_no_secrets(http: httpx.Client) -> None:
    view = http.get("/apis/rbac.authorization.k8s.io/v1/clusterroles/view", headers=ADMIN).json()
    verbs = {verb for rule in view["rules"] for verb in rule["verbs"]}
    assert verbs == {"get", "list", "watch"}
    assert not any("secrets" in rule.get("resources", []) for rule in view["rules"])


def test_delete_missing_answers_not_found_status(http: httpx.Client) -> None:
    response = http.request("DELETE", CM_PATH.format(ns="default") + "/ghost", headers=ADMIN,
                            content=b'{"propagationPolicy":"Background"}')
    assert response.status_code == 404
    body = response.json()
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "NotFound", 404)
    assert body["details"] == {"kind": "configmaps", "name": "ghost"}


def test_list_filters_by_label_and_field_selectors(http: httpx.Client) -> None:
    path = CM_PATH.format(ns="default")
    for name, tier in (("a", "web"), ("b", "db"), ("c", "web")):
        assert http.post(path, json=_configmap(name, {"tier": tier}), headers=ADMIN).status_code == 201
    table_accept = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}
    listed = http.get(path, params={"labelSelector": "tier=web"}, headers={**ADMIN, **table_accept}).json()
    assert listed["kind"] == "ConfigMapList"
    assert int(listed["metadata"]["resourceVersion"]) > 0
    assert [o["metadata"]["name"] for o in listed["items"]] == ["a", "c"]
    assert [o["metadata"]["name"] for o in http.get(
        path, params={"labelSelector": "tier in (db,cache)"}, headers=ADMIN).json()["items"]] == ["b"]
    assert [o["metadata"]["name"] for o in http.get(
        path, params={"fieldSelector": "metadata.name=c"}, headers=ADMIN).json()["items"]] == ["c"]
    assert [o["metadata"]["name"] for o in http.get(
        path, params={"labelSelector": "tier!=web", "fieldSelector": "metadata.name!=a"}, headers=ADMIN
    ).json()["items"]] == ["b"]


def test_update_with_a_stale_resource_version_conflicts(http: httpx.Client) -> None:
    path = CM_PATH.format(ns="default")
    created = http.post(path, json=_configmap("versioned"), headers=ADMIN).json()
    fresh = {**created, "data": {"k": "2"}}
    assert http.put(f"{path}/versioned", json=fresh, headers=ADMIN).status_code == 200
    stale = http.put(f"{path}/versioned", json={**created, "data": {"k": "3"}}, headers=ADMIN)
    assert stale.status_code == 409
    assert stale.json()["reason"] == "Conflict"


def test_watch_replays_changes_after_a_resource_version_then_times_out(http: httpx.Client) -> None:
    path = CM_PATH.format(ns="default")
    start = http.get(path, headers=ADMIN).json()["metadata"]["resourceVersion"]
    http.post(path, json=_configmap("w1"), headers=ADMIN)
    http.patch(f"{path}/w1", content=json.dumps({"data": {"k": "changed"}}),
               headers={**ADMIN, "Content-Type": "application/merge-patch+json"})
    http.request("DELETE", f"{path}/w1", headers=ADMIN)
    events = []
    with http.stream("GET", path, params={"watch": "1", "resourceVersion": start, "timeoutSeconds": "1"},
                     headers=ADMIN) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line:
                events.append(json.loads(line))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]
    assert events[1]["object"]["data"] == {"k": "changed"}


@pytest.mark.parametrize("watch_param", ["true", "1"])
def test_watch_without_resource_version_starts_with_current_objects(
    http: httpx.Client, watch_param: str
) -> None:
    with http.stream("GET", "/api/v1/namespaces", params={"watch": watch_param, "timeoutSeconds": "1"},
                     headers=ADMIN) as response:
        names = [json.loads(line)["object"]["metadata"]["name"] for line in response.iter_lines() if line]
    assert "default" in names
    assert "kaas-system" in names


def test_watch_requires_the_watch_verb(http: httpx.Client, standin: KubeStandinHandle) -> None:
    _grant(standin, ROLE_ONE_CONFIGMAP)
    response = http.get(CM_PATH.format(ns="default"), params={"watch": "true"}, headers=MALLORY)
    assert response.status_code == 403
    assert 'cannot watch resource "configmaps"' in response.json()["message"]


def test_creating_in_a_missing_namespace_is_not_found(http: httpx.Client) -> None:
    response = http.post(CM_PATH.format(ns="nowhere"), json=_configmap("x"), headers=ADMIN)
    assert response.status_code == 404
    assert response.json()["message"] == 'namespaces "nowhere" not found'


def test_secret_string_data_is_stored_base64(http: httpx.Client) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
              "stringData": {"pw": "hunter2"}}
    created = http.post("/api/v1/namespaces/default/secrets", json=secret, headers=ADMIN).json()
    assert created["data"] == {"pw": "aHVudGVyMg=="}
    assert "stringData" not in created


def test_plain_http_mode_serves_clients_that_send_the_token_themselves() -> None:
    with run_kube_standin(tokens=TOKENS, tls=False) as plain:
        assert plain.url.startswith("http://127.0.0.1:")
        assert plain.ca is None
        response = httpx.get(f"{plain.url}/api/v1/namespaces/default", headers=ADMIN, timeout=10)
        assert response.status_code == 200
        assert response.json()["metadata"]["name"] == "default"
