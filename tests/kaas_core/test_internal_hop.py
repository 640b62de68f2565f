"""The signed assertion of the k8s proxy's internal hop, and the tunnel server routing only by it."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.tunnel.paths import NonCanonicalPath, check_canonical_target
from kaas_core.internal_hop import (
    ASSERTION_TTL_SECONDS,
    InvalidAssertion,
    ProxyAssertion,
    assertion_key,
    internal_target_url,
    verify_assertion,
)
from kaas_tunnel.proxy import Refused, _target

KEY = assertion_key("an-internal-secret-of-at-least-32-characters")
CLUSTER_A = "0d9c3c56-6b8e-4f0e-9d55-3c8f7e6f2a11"
CLUSTER_B = "7a1e2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b"
NOW = 1_800_000_000.0


def issue(
    target: str = "/api/v1/namespaces", method: str = "GET", cluster: str = CLUSTER_A
) -> ProxyAssertion:
    return ProxyAssertion.issue(
        cluster_id=cluster,
        user="alice",
        groups=("kaas:authenticated", "kaas:owner"),
        method=method,
        target=target,
        now=NOW,
    )


def test_a_signed_assertion_verifies_for_exactly_its_request() -> None:
    assertion = issue()
    verified = verify_assertion(assertion.sign(KEY), KEY, method="get", target="/api/v1/namespaces", now=NOW)
    assert verified == assertion


@pytest.mark.parametrize(
    ("method", "target", "now", "key", "reason"),
    [
        ("POST", "/api/v1/namespaces", NOW, KEY, "another request"),
        ("GET", "/api/v1/namespaces?watch=1", NOW, KEY, "another request"),
        ("GET", "/api/v1/namespaces/", NOW, KEY, "another request"),
        ("GET", "/api/v1/namespaces", NOW + ASSERTION_TTL_SECONDS + 1, KEY, "expired"),
        ("GET", "/api/v1/namespaces", NOW, assertion_key("another-secret"), "signature"),
    ],
)
def test_an_assertion_used_for_another_request_later_or_with_another_key_is_refused(
    method: str, target: str, now: float, key: bytes, reason: str
) -> None:
    with pytest.raises(InvalidAssertion, match=reason):
        verify_assertion(issue().sign(KEY), key, method=method, target=target, now=now)


def tampered(value: str, **changes: object) -> str:
    version, payload, signature = value.split(".")
    document = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    document.update(changes)
    encoded = base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()
    return f"{version}.{encoded}.{signature}"


@pytest.mark.parametrize(
    "changes",
    [{"cluster": CLUSTER_B}, {"user": "mallory"}, {"groups": ["system:masters"]}, {"exp": NOW + 10**6}],
)
def test_changing_any_field_breaks_the_signature(changes: dict[str, object]) -> None:
    with pytest.raises(InvalidAssertion, match="signature"):
        verify_assertion(
            tampered(issue().sign(KEY), **changes), KEY, method="GET", target="/api/v1/namespaces", now=NOW
        )


@pytest.mark.parametrize("value", [None, "", "v2.a.b", "v1.a", "v1.!!!.???", "v1." + "a" * 20000 + ".b"])
def test_a_missing_or_malformed_assertion_is_refused(value: str | None) -> None:
    with pytest.raises(InvalidAssertion):
        verify_assertion(value, KEY, method="GET", target="/api", now=NOW)


@dataclass
class Sessions:
    """The part of the tunnel server ``_target`` asks: the key, and which clusters have a live session."""

    assertion_key: bytes

    def session_for(self, cluster_id: str) -> str:
        return f"session-of-{cluster_id}"


def scope_of(request: httpx.Request, headers: list[tuple[bytes, bytes]]) -> dict[str, object]:
    """The ASGI scope uvicorn gives the tunnel server for ``request`` as httpx sends it."""
    raw_path, _, query = request.url.raw_path.partition(b"?")
    return {
        "type": "http",
        "method": request.method,
        "path": raw_path.decode(),
        "raw_path": raw_path,
        "query_string": query,
        "headers": headers,
    }


TARGET_TEXT = st.lists(
    st.sampled_from(
        [
            *("..", ".", "%2e%2e", "%2e", "%2f", "%252e", "\\", ";", "api", "v1", "x", ""),
            *(CLUSTER_B, "%41", "?q=..", "#"),
        ]
    ),
    max_size=8,
).map(lambda parts: "/" + "/".join(parts))


@given(target=TARGET_TEXT, method=st.sampled_from(["GET", "POST", "DELETE"]))
def test_the_tunnel_server_reaches_the_signed_cluster_or_refuses(target: str, method: str) -> None:
    """The API's half (canonical target, internal URL built by httpx as the proxy does) and the tunnel
    server's half (``_target``) together: a request either reaches the cluster that was signed for, with
    the signed target, or is refused — never another cluster, never another path."""
    try:
        check_canonical_target(target)
    except NonCanonicalPath:
        return  # the API answers 400 itself
    signed = issue(target, method).sign(KEY)
    request = httpx.Request(method, internal_target_url("http://127.0.0.1:1", target))
    scope = scope_of(request, [(b"x-kaas-proxy-assertion", signed.encode())])
    try:
        routed = _target(Sessions(KEY), scope)  # type: ignore[arg-type]
    except Refused:
        return
    assert routed.cluster_id == CLUSTER_A
    assert routed.path == target
    assert routed.live == f"session-of-{CLUSTER_A}"


def test_a_path_with_dot_segments_is_refused_by_the_tunnel_server_even_with_a_valid_assertion() -> None:
    target = f"/../../{CLUSTER_B}/proxy/api"
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/internal/v1/proxy" + target,
        "raw_path": ("/internal/v1/proxy" + target).encode(),
        "query_string": b"",
        "headers": [(b"x-kaas-proxy-assertion", issue(target).sign(KEY).encode())],
    }
    with pytest.raises(Refused) as refused:
        _target(Sessions(KEY), scope)  # type: ignore[arg-type]
    assert refused.value.code == 400


def test_the_assertion_of_one_request_cannot_carry_another() -> None:
    signed = issue("/api/v1/namespaces").sign(KEY)
    request = httpx.Request("GET", internal_target_url("http://127.0.0.1:1", "/api/v1/secrets"))
    with pytest.raises(Refused) as refused:
        _target(Sessions(KEY), scope_of(request, [(b"x-kaas-proxy-assertion", signed.encode())]))  # type: ignore[arg-type]
    assert refused.value.code == 401


def test_a_fresh_assertion_expires_after_its_ttl() -> None:
    assertion = ProxyAssertion.issue(
        cluster_id=CLUSTER_A, user="a", groups=(), method="GET", target="/api", now=time.time()
    )
    assert 0 < assertion.expires_at - time.time() <= ASSERTION_TTL_SECONDS


def test_a_client_of_the_internal_endpoint_drops_idle_connections_before_the_endpoint_does() -> None:
    """At equal idle timeouts, a request can leave on a connection the endpoint is closing at that moment;
    one with a body (kubectl apply) cannot be sent again and was answered 503."""
    from kaas_core.internal_hop import INTERNAL_HOP_LIMITS
    from kaas_core.serving.limits import HttpLimits, server_config

    endpoint = server_config(lambda *_: None, limits=HttpLimits(), host="127.0.0.1", port=0)
    assert INTERNAL_HOP_LIMITS.keepalive_expiry is not None
    assert INTERNAL_HOP_LIMITS.keepalive_expiry <= endpoint.timeout_keep_alive / 2
