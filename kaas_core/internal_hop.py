"""The k8s proxy's internal hop, API → tunnel server: the request's target and a signed assertion of whom
it is for.

Owned by ``kaas_api.k8s``. ``kaas_api.k8s.proxy`` builds the hop with ``internal_target_url`` and
``ProxyAssertion.sign``; the tunnel server's internal endpoint (``kaas_tunnel.proxy``) reads it back with
``verify_assertion`` and routes by what it verified. The contract::

    {METHOD} {tunnel server}/internal/v1/proxy{k8s path}?{query}
    X-Kaas-Proxy-Assertion: v1.<base64url(JSON payload)>.<base64url(HMAC-SHA256)>

    payload: {"cluster": id, "user": kaas user name, "groups": [...], "method": "GET",
              "target": "/api/v1/namespaces?limit=500", "exp": unix seconds}

Why an assertion and not a path segment. The cluster the API authorized must be the cluster the request
reaches, by construction. When the cluster id travelled as a path segment, anything that re-read the path on
the way (an HTTP client removing dot segments, a proxy decoding an escape) could change which cluster the
tunnel server routed to, after the API had authorized another one. Now the id, the caller and the exact
method and target are signed together; the tunnel server routes only by the signed id and refuses a request
whose method or target differs from what was signed by even one byte, so nothing on the way can re-aim it.

The key is derived from the internal secret both sides share (HMAC, domain-separated), so the secret itself
never travels. ``exp`` bounds the replay of a captured header to a few minutes; the internal network is
already a trust boundary (the provider cluster's NetworkPolicies keep the internal port to the API).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

import httpx

ASSERTION_HEADER = "X-Kaas-Proxy-Assertion"
INTERNAL_PROXY_PREFIX = "/internal/v1/proxy"
ASSERTION_VERSION = "v1"
ASSERTION_TTL_SECONDS = 300
MAX_ASSERTION_BYTES = 16 * 1024
# How long a client of the internal endpoint keeps an idle connection: well below the endpoint's own idle
# timeout (uvicorn's keep-alive, 5 s). At equal timeouts a request can go out on a connection the server is
# closing at that instant, and a request with a body cannot be sent again: kubectl apply got a 503 ("the
# tunnel server cannot be reached") once in CI.
INTERNAL_HOP_KEEPALIVE_SECONDS = 2.0
# The pool of every client of the internal endpoint (the API's k8s proxy, the tunnel servers' peers): no
# bound on connections (each watch holds one), and idle ones dropped before the endpoint drops them.
INTERNAL_HOP_LIMITS = httpx.Limits(
    max_connections=None, max_keepalive_connections=64, keepalive_expiry=INTERNAL_HOP_KEEPALIVE_SECONDS
)
_KEY_CONTEXT = b"kaas k8s-proxy assertion v1"


class InvalidAssertion(ValueError):
    """The hop's assertion is missing, malformed, forged, expired or for another request."""


def assertion_key(internal_secret: str) -> bytes:
    """The signing key, derived from the shared internal secret (never the secret itself on the wire)."""
    return hmac.new(internal_secret.encode(), _KEY_CONTEXT, hashlib.sha256).digest()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class ProxyAssertion:
    """Who a proxied request is for: the authorized cluster and caller, bound to one method and target."""

    cluster_id: str
    user: str
    groups: tuple[str, ...]
    method: str
    target: str  # the Kubernetes path with its query, exactly as forwarded
    expires_at: int

    @classmethod
    def issue(
        cls, *, cluster_id: str, user: str, groups: tuple[str, ...], method: str, target: str, now: float
    ) -> ProxyAssertion:
        return cls(
            cluster_id=cluster_id,
            user=user,
            groups=groups,
            method=method.upper(),
            target=target,
            expires_at=int(now) + ASSERTION_TTL_SECONDS,
        )

    def sign(self, key: bytes) -> str:
        """The header value: version, payload and signature, each URL-safe base64 without padding."""
        payload = json.dumps(
            {
                "cluster": self.cluster_id,
                "user": self.user,
                "groups": list(self.groups),
                "method": self.method,
                "target": self.target,
                "exp": self.expires_at,
            },
            separators=(",", ":"),
            sort_keys=True,
        ).encode()
        signed = f"{ASSERTION_VERSION}.{_b64encode(payload)}"
        signature = hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()
        return f"{signed}.{_b64encode(signature)}"


def verify_assertion(
    value: str | None, key: bytes, *, method: str, target: str, now: float | None = None
) -> ProxyAssertion:
    """The assertion in ``value`` if it is signed with ``key``, unexpired, and for exactly this request.

    ``method`` and ``target`` are what the verifier received (the request's method, and its path with the
    query, as sent). Raises ``InvalidAssertion`` with a reason fit for a log line (never the value).
    """
    if not value:
        raise InvalidAssertion(f"the {ASSERTION_HEADER} header is missing")
    if len(value) > MAX_ASSERTION_BYTES:
        raise InvalidAssertion("the assertion is too large")
    parts = value.split(".")
    if len(parts) != 3 or parts[0] != ASSERTION_VERSION:
        raise InvalidAssertion("the assertion is not of a known version")
    signed = f"{parts[0]}.{parts[1]}"
    try:
        signature = _b64decode(parts[2])
        payload = json.loads(_b64decode(parts[1]))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidAssertion("the assertion is malformed") from exc
    expected = hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise InvalidAssertion("the assertion's signature does not match")
    try:
        assertion = ProxyAssertion(
            cluster_id=_string(payload, "cluster"),
            user=_string(payload, "user"),
            groups=tuple(_strings(payload, "groups")),
            method=_string(payload, "method"),
            target=_string(payload, "target"),
            expires_at=int(payload["exp"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidAssertion("the assertion's payload is malformed") from exc
    if assertion.expires_at < (time.time() if now is None else now):
        raise InvalidAssertion("the assertion has expired")
    if assertion.method != method.upper() or assertion.target != target:
        raise InvalidAssertion("the assertion was issued for another request")
    return assertion


def _string(payload: dict[str, object], key: str) -> str:
    value = payload[key]
    if not isinstance(value, str) or not value:
        raise ValueError(key)
    return value


def _strings(payload: dict[str, object], key: str) -> list[str]:
    values = payload[key]
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise ValueError(key)
    return list(values)


def internal_target_url(address: str, target: str, *, websocket: bool = False) -> str:
    """The tunnel server's internal URL for a Kubernetes ``target`` (path with query) at ``address``."""
    base = address.rstrip("/")
    if websocket:
        base = "ws" + base.removeprefix("http")
    return f"{base}{INTERNAL_PROXY_PREFIX}{target}"
