"""The tunnel server's internal endpoint bounds its input like the API (``kaas_core.serving``), before the
internal secret is even looked at: oversize heads 431, bodies over the k8s proxy's cap 413 as a ``Status``."""

from __future__ import annotations

from urllib.parse import urlsplit

from tests.kaas_core.serving.conftest import exchange
from tests.kaas_tunnel.conftest import ServerFactory


def internal_port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


async def test_an_oversize_request_head_is_refused_with_431(make_server: ServerFactory) -> None:
    server = await make_server(http_max_head_bytes=4096)
    head = b"GET /internal/v1/healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 8192 + b"\r\n\r\n"
    answer = await exchange(internal_port(server.internal_url), [head])
    assert answer.status == 431


async def test_a_body_over_the_k8s_proxy_cap_is_refused_with_a_status_before_authentication(
    make_server: ServerFactory,
) -> None:
    server = await make_server(k8s_proxy_max_body_bytes=1000)
    head = (
        b"POST /internal/v1/clusters/c1/proxy/api/v1/namespaces/default/configmaps HTTP/1.1\r\n"
        b"Host: t\r\nContent-Length: 100000000\r\n\r\n"
    )
    answer = await exchange(internal_port(server.internal_url), [head])
    assert answer.status == 413
    assert answer.json["kind"] == "Status"
    assert answer.json["reason"] == "RequestEntityTooLarge"
