"""The session registry contract, run against real Redis and the in-memory registry alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from kaas_core.tunnel_registry import InMemoryTunnelRegistry, RedisTunnelRegistry, TunnelRegistry


@pytest.fixture(params=["redis", "memory"])
async def registry(request: pytest.FixtureRequest) -> AsyncIterator[TunnelRegistry]:
    if request.param == "memory":
        yield InMemoryTunnelRegistry(ttl_seconds=0.5)
        return
    redis_url = request.getfixturevalue("redis_url")
    client = Redis.from_url(redis_url)
    yield RedisTunnelRegistry(client, ttl_seconds=0.5)
    await client.aclose()


async def test_a_claimed_cluster_is_found_at_its_process(registry: TunnelRegistry) -> None:
    await registry.claim(cluster_id="c1", session_id="s1", address="http://127.0.0.1:9001")
    location = await registry.lookup("c1")
    assert location is not None
    assert (location.session_id, location.address) == ("s1", "http://127.0.0.1:9001")


async def test_an_unknown_cluster_has_no_location(registry: TunnelRegistry) -> None:
    assert await registry.lookup("nobody") is None


async def test_a_newer_session_replaces_the_older_which_fails_to_refresh(registry: TunnelRegistry) -> None:
    await registry.claim(cluster_id="c1", session_id="old", address="http://127.0.0.1:9001")
    await registry.claim(cluster_id="c1", session_id="new", address="http://127.0.0.1:9002")
    assert await registry.refresh(cluster_id="c1", session_id="old") is False
    assert await registry.refresh(cluster_id="c1", session_id="new") is True
    location = await registry.lookup("c1")
    assert location is not None
    assert location.address == "http://127.0.0.1:9002"


async def test_the_older_session_cannot_release_the_newer_claim(registry: TunnelRegistry) -> None:
    await registry.claim(cluster_id="c1", session_id="old", address="a")
    await registry.claim(cluster_id="c1", session_id="new", address="b")
    assert await registry.release(cluster_id="c1", session_id="old") is False
    assert await registry.lookup("c1") is not None
    assert await registry.release(cluster_id="c1", session_id="new") is True
    assert await registry.lookup("c1") is None


async def test_a_claim_expires_when_its_process_stops_refreshing(registry: TunnelRegistry) -> None:
    await registry.claim(cluster_id="c1", session_id="s1", address="a")
    await asyncio.sleep(0.3)
    assert await registry.refresh(cluster_id="c1", session_id="s1") is True
    await asyncio.sleep(0.3)
    assert await registry.lookup("c1") is not None  # the refresh extended it past the first TTL
    await asyncio.sleep(0.7)
    assert await registry.lookup("c1") is None
    assert await registry.refresh(cluster_id="c1", session_id="s1") is False


async def test_connected_clusters_lists_every_live_claim(registry: TunnelRegistry) -> None:
    for i in range(3):
        await registry.claim(cluster_id=f"c{i}", session_id=f"s{i}", address="a")
    await registry.release(cluster_id="c1", session_id="s1")
    assert await registry.connected_clusters() == {"c0", "c2"}


async def test_reclaim_takes_an_expired_claim_back_but_never_a_held_one(registry: TunnelRegistry) -> None:
    await registry.claim(cluster_id="c1", session_id="new", address="b")
    assert await registry.reclaim(cluster_id="c1", session_id="old", address="a") is False
    location = await registry.lookup("c1")
    assert location is not None
    assert location.session_id == "new"
    await registry.release(cluster_id="c1", session_id="new")
    assert await registry.reclaim(cluster_id="c1", session_id="old", address="a") is True
    assert await registry.refresh(cluster_id="c1", session_id="old") is True


async def test_many_claims_are_refreshed_at_once_and_each_answer_is_its_own(registry: TunnelRegistry) -> None:
    await registry.claim(cluster_id="c1", session_id="s1", address="a")
    await registry.claim(cluster_id="c2", session_id="newer", address="b")
    claims = [("c1", "s1"), ("c2", "s2"), ("c3", "s3")]
    await asyncio.sleep(0.3)
    assert await registry.refresh_many(claims) == [True, False, False]
    await asyncio.sleep(0.3)
    assert await registry.lookup("c1") is not None  # extended past its first TTL
    assert await registry.refresh_many([]) == []
