"""The canonical-path rule every hop of the k8s proxy applies (``agents.tunnel.paths``)."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.tunnel.paths import NonCanonicalPath, check_canonical_path, check_canonical_target

KUBECTL_PATHS = [
    "/",
    "/api",
    "/api/v1/namespaces",
    "/api/v1/namespaces/default/pods/web-0/exec",
    "/apis/apps/v1/namespaces/kube-system/deployments/coredns/scale",
    "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:aggregate-to-admin",
    "/apis/rbac.authorization.k8s.io/v1/clusterroles/system%3Aaggregate-to-admin",
    "/api/v1/namespaces/default/services/https:web:8443/proxy/",
    "/openapi/v3/apis/apps/v1",
    "/apis/metrics.k8s.io/v1beta1/nodes/node-1.example.com",
    "/api/v1/namespaces/caf%C3%A9",
]


@pytest.mark.parametrize("path", KUBECTL_PATHS)
def test_the_paths_kubectl_sends_are_canonical(path: str) -> None:
    assert check_canonical_path(path) == path


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("/api/../secrets", "'..'"),
        ("/api/./v1", "'..'"),
        ("/api/v1/..", "'..'"),
        ("/api/%2e%2e/x", "%2e"),
        ("/api/%2E%2E/x", "%2E"),
        ("/api/.%2e/x", "%2e"),
        ("/api/%252e%252e/x", "%25"),
        ("/api/..%2fx", "%2f"),
        ("/api/x%2Fy", "%2F"),
        ("/api/x%5cy", "%5c"),
        ("/api/..\\x", "no ';', '\\'"),
        ("/api/..;/x", "no ';'"),
        ("/api;x=1/v1", "no ';'"),
        ("//evil.example/api", "empty segments"),
        ("/api//v1", "empty segments"),
        ("/api/x%00y", "%00"),
        ("/api/x%0ay", "%0a"),
        ("/api/x%7fy", "%7f"),
        ("/api/x y", "no ';'"),
        ("/api/caf\u00e9", "non-ASCII"),
        ("/api/%zz", "malformed"),
        ("/api/%4", "malformed"),
        ("/api/%", "malformed"),
        ("api/v1", "start with '/'"),
        ("/api/x?y", "no ';'"),
        ("/api/x#y", "no ';'"),
        ("/" + "a" * 8192, "longer than"),
    ],
)
def test_a_path_some_parser_could_read_differently_is_refused_naming_the_rule(path: str, rule: str) -> None:
    with pytest.raises(NonCanonicalPath) as refused:
        check_canonical_path(path)
    assert rule in str(refused.value)


def test_a_trailing_slash_is_not_an_empty_segment() -> None:
    assert check_canonical_path("/api/v1/") == "/api/v1/"


def test_a_targets_query_may_hold_escapes_and_slashes_but_not_spaces_or_fragments() -> None:
    target = "/api/v1/pods?labelSelector=app%3Dweb%2Ctier%21%3Ddb&fieldSelector=spec.nodeName=n/1&watch=1"
    assert check_canonical_target(target) == target
    for bad in ("/api/v1/pods?x=a b", "/api/v1/pods?x=1#frag", "/api/v1/pods?x=\\"):
        with pytest.raises(NonCanonicalPath):
            check_canonical_target(bad)
    with pytest.raises(NonCanonicalPath, match=r"'\.\.'"):
        check_canonical_target("/api/../x?watch=1")


@given(st.text(alphabet="/.%2eEfF5cC;\\ax", max_size=24))
def test_an_accepted_path_has_one_reading(path: str) -> None:
    """Whatever is accepted splits the same way however often it is decoded: no escape turns into a
    separator, and no segment of any decoding is a dot segment."""
    try:
        check_canonical_path(path)
    except NonCanonicalPath:
        return
    for reading in (path, unquote(path), unquote(unquote(path))):
        assert len(reading.split("/")) == len(path.split("/"))
        assert not any(segment in (".", "..") for segment in reading.split("/"))
        assert "\\" not in reading
        assert ";" not in reading
