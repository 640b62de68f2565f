"""The one header policy of the k8s proxy's hops: what a client's request may carry on, and what not.

Owned by the tunnel package (pure), because all three hops apply it: the API's k8s proxy
(``kaas_api.k8s.proxy``), the tunnel server's internal endpoint (``kaas_tunnel.proxy``) and the agent
(``agents.forward``). Each drops, from a request: hop-by-hop headers (RFC 9110 7.6.1, plus ``Host``, which
each hop sets for its own peer), credentials (``Authorization``, ``Cookie``: every hop adds its own), and
every identity header a client must never choose (``Impersonate-*``, ``X-Kaas-*``, ``X-Remote-*``,
``Proxy-*``): the agent alone says whom the cluster sees. From a response, only the hop-by-hop headers go.
A hop that re-streams the body drops ``Content-Length`` too (``RESTREAMED``).
"""

from __future__ import annotations

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "te", "trailer", "trailers", "transfer-encoding", "upgrade", "host"}
)
CREDENTIALS = frozenset({"authorization", "cookie"})
IDENTITY_PREFIXES = ("impersonate-", "x-kaas-", "x-remote-", "proxy-")
RESPONSE_HOP_BY_HOP = HOP_BY_HOP - {"host"}
# a hop that sends the body on as a stream of its own (chunked) must not repeat the client's length
RESTREAMED = frozenset({"content-length"})


def dropped_from_request(name: str) -> bool:
    """Whether a request header (lower-case name) stops at this hop."""
    return name in HOP_BY_HOP or name in CREDENTIALS or name.startswith(IDENTITY_PREFIXES)
