"""The tunnel server's composition root: its registry's Redis pool makes callers wait, never fail."""

from __future__ import annotations

import asyncio

import pytest

from kaas_core.tunnel_registry import RedisTunnelRegistry
from kaas_tunnel.config import TunnelSettings
from kaas_tunnel.main import registry_redis

pytestmark = pytest.mark.redis


async def test_callers_beyond_the_redis_pool_wait_for_a_connection_instead_of_failing(redis_url: str) -> None:
    client = registry_redis(TunnelSettings(redis_max_connections=3, redis_wait_seconds=30), redis_url)
    registry = RedisTunnelRegistry(client, ttl_seconds=30)
    try:
        await asyncio.gather(
            *(registry.claim(cluster_id=f"c-{n}", session_id="s", address="http://a") for n in range(300))
        )
        assert len(await registry.connected_clusters()) == 300
        assert client.connection_pool.max_connections == 3
    finally:
        await client.aclose()
