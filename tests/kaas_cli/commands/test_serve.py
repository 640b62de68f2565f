"""``kaas api``'s app (``kaas_cli.commands.serve.api_app``): what a deployment's separate processes share."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from kaas_api.config import ApiSettings
from kaas_cli.commands.serve import api_app
from kaas_core.tunnel_registry import RedisTunnelRegistry

pytestmark = pytest.mark.redis


async def test_the_k8s_proxy_of_kaas_api_finds_an_agent_session_a_tunnel_process_recorded(
    redis_url: str,
) -> None:
    tunnel_side = Redis.from_url(redis_url)
    try:
        await RedisTunnelRegistry(tunnel_side).claim(
            cluster_id="c-1", session_id="s-1", address="http://10.0.0.7:8011"
        )
        app = api_app(ApiSettings(redis_url=redis_url, database_url="sqlite://", broker_url="memory://"))
        found = await app.state.kaas_k8s.registry.lookup("c-1")
    finally:
        await tunnel_side.aclose()
    assert found is not None
    assert (found.session_id, found.address) == ("s-1", "http://10.0.0.7:8011")


async def test_hundreds_of_k8s_proxy_lookups_at_once_wait_for_a_redis_connection_instead_of_failing(
    redis_url: str,
) -> None:
    """200 watches opened together each look their cluster up: beyond the pool, callers wait (redis-py's
    default pool raised "Too many connections", and the proxy answered 500)."""
    tunnel_side = Redis.from_url(redis_url)
    try:
        await RedisTunnelRegistry(tunnel_side).claim(
            cluster_id="c-1", session_id="s-1", address="http://10.0.0.7:8011"
        )
        app = api_app(ApiSettings(redis_url=redis_url, database_url="sqlite://", broker_url="memory://"))
        registry = app.state.kaas_k8s.registry
        found = await asyncio.gather(*(registry.lookup("c-1") for _ in range(300)))
    finally:
        await tunnel_side.aclose()
    assert [location.session_id if location else None for location in found] == ["s-1"] * 300
