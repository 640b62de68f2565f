"""Which tunnel-server process holds the live agent session of which cluster.

Owned by the tunnel server (``kaas_tunnel``), which writes it: ``claim`` when an agent connects,
``refresh_many`` of all its sessions at once while they stay, ``release`` when one goes. Read by the API's
k8s proxy (``lookup``) so a request reaches the right process in one hop; it lives in ``kaas_core``
because the API and the tunnel server never import each other.

Two implementations of one ``TunnelRegistry`` contract (the same tests run against both):
- ``RedisTunnelRegistry``: shared by every process of a deployment. Every entry expires, so a crashed
  process's claims vanish by themselves; refresh and release are compare-and-set on the session id (Lua,
  atomic in Redis).
- ``InMemoryTunnelRegistry``: the embedded mode, where the API and the tunnel server share one process.

A newer session replaces an older one: ``claim`` always overwrites, and the older holder learns it lost the
cluster when its next ``refresh`` returns False, then closes its session.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import BlockingConnectionPool, Redis

KEY_PREFIX = "kaas:tunnel:cluster:"

_REFRESH_IF_OWNER = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if cjson.decode(current)['session_id'] ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

_DELETE_IF_OWNER = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if cjson.decode(current)['session_id'] ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


@dataclass(frozen=True)
class SessionLocation:
    """Where a cluster's agent session lives: the process's internal address and the session's id."""

    cluster_id: str
    session_id: str
    address: str  # the tunnel server's internal HTTP address, e.g. http://10.0.0.5:8001
    connected_at: float


class TunnelRegistry(Protocol):
    """The registry contract; every method is a coroutine, every claim expires after ``ttl_seconds``."""

    @property
    def ttl_seconds(self) -> float: ...

    async def claim(self, *, cluster_id: str, session_id: str, address: str) -> None:
        """Record this session as the cluster's live one, replacing any older session."""

    async def refresh(self, *, cluster_id: str, session_id: str) -> bool:
        """Extend the claim; False means another session took the cluster over (or the claim expired)."""

    async def refresh_many(self, claims: Sequence[tuple[str, str]]) -> list[bool]:
        """``refresh`` of every (cluster id, session id), in one round trip; the results in order."""

    async def reclaim(self, *, cluster_id: str, session_id: str, address: str) -> bool:
        """Claim the cluster only if nobody holds it (after our claim expired); False if another does."""

    async def release(self, *, cluster_id: str, session_id: str) -> bool:
        """Remove the claim if it is still ours (a newer session's claim is left alone)."""

    async def lookup(self, cluster_id: str) -> SessionLocation | None:
        """The cluster's live session, or None when no agent of it is connected anywhere."""

    async def connected_clusters(self) -> set[str]:
        """Every cluster with a live claim."""


class RedisTunnelRegistry:
    """The registry in Redis, shared by every tunnel server and API process of a deployment."""

    def __init__(self, redis: Redis, *, ttl_seconds: float = 30.0) -> None:
        self._redis = redis
        self._ttl_ms = int(ttl_seconds * 1000)

    @property
    def ttl_seconds(self) -> float:
        return self._ttl_ms / 1000

    async def claim(self, *, cluster_id: str, session_id: str, address: str) -> None:
        value = json.dumps({"session_id": session_id, "address": address, "connected_at": time.time()})
        await self._redis.set(KEY_PREFIX + cluster_id, value, px=self._ttl_ms)

    async def refresh(self, *, cluster_id: str, session_id: str) -> bool:
        key = KEY_PREFIX + cluster_id
        result = await self._redis.eval(_REFRESH_IF_OWNER, 1, key, session_id, self._ttl_ms)
        return bool(result)

    async def refresh_many(self, claims: Sequence[tuple[str, str]]) -> list[bool]:
        """One pipeline (no transaction: each refresh is atomic by itself) of the same script."""
        if not claims:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for cluster_id, session_id in claims:
                pipe.eval(_REFRESH_IF_OWNER, 1, KEY_PREFIX + cluster_id, session_id, self._ttl_ms)
            results = await pipe.execute()
        return [bool(result) for result in results]

    async def reclaim(self, *, cluster_id: str, session_id: str, address: str) -> bool:
        value = json.dumps({"session_id": session_id, "address": address, "connected_at": time.time()})
        return bool(await self._redis.set(KEY_PREFIX + cluster_id, value, px=self._ttl_ms, nx=True))

    async def release(self, *, cluster_id: str, session_id: str) -> bool:
        result = await self._redis.eval(_DELETE_IF_OWNER, 1, KEY_PREFIX + cluster_id, session_id)
        return bool(result)

    async def lookup(self, cluster_id: str) -> SessionLocation | None:
        raw = await self._redis.get(KEY_PREFIX + cluster_id)
        if raw is None:
            return None
        data = json.loads(raw)
        return SessionLocation(
            cluster_id=cluster_id,
            session_id=str(data["session_id"]),
            address=str(data["address"]),
            connected_at=float(data["connected_at"]),
        )

    async def connected_clusters(self) -> set[str]:
        """SCAN, never KEYS: the keyspace is shared."""
        found: set[str] = set()
        async for key in self._redis.scan_iter(match=KEY_PREFIX + "*", count=500):
            text = key.decode() if isinstance(key, bytes) else str(key)
            found.add(text.removeprefix(KEY_PREFIX))
        return found


class InMemoryTunnelRegistry:
    """The registry in this process's memory (embedded mode: one process, no Redis); same contract.

    ``clock`` is the monotonic clock expiry is measured with (``time.monotonic`` unless a test passes one).
    """

    def __init__(self, *, ttl_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[str, tuple[SessionLocation, float]] = {}  # cluster id -> (location, expires at)

    @property
    def ttl_seconds(self) -> float:
        return self._ttl

    def _live(self, cluster_id: str) -> SessionLocation | None:
        entry = self._entries.get(cluster_id)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            self._entries.pop(cluster_id, None)  # another thread may have expired it first
            return None
        return entry[0]

    async def claim(self, *, cluster_id: str, session_id: str, address: str) -> None:
        location = SessionLocation(
            cluster_id=cluster_id, session_id=session_id, address=address, connected_at=time.time()
        )
        self._entries[cluster_id] = (location, self._clock() + self._ttl)

    async def refresh(self, *, cluster_id: str, session_id: str) -> bool:
        location = self._live(cluster_id)
        if location is None or location.session_id != session_id:
            return False
        self._entries[cluster_id] = (location, self._clock() + self._ttl)
        return True

    async def refresh_many(self, claims: Sequence[tuple[str, str]]) -> list[bool]:
        return [await self.refresh(cluster_id=c, session_id=s) for c, s in claims]

    async def reclaim(self, *, cluster_id: str, session_id: str, address: str) -> bool:
        if self._live(cluster_id) is not None:
            return False
        await self.claim(cluster_id=cluster_id, session_id=session_id, address=address)
        return True

    async def release(self, *, cluster_id: str, session_id: str) -> bool:
        location = self._live(cluster_id)
        if location is None or location.session_id != session_id:
            return False
        del self._entries[cluster_id]
        return True

    async def lookup(self, cluster_id: str) -> SessionLocation | None:
        return self._live(cluster_id)

    async def connected_clusters(self) -> set[str]:
        return {cluster_id for cluster_id in list(self._entries) if self._live(cluster_id) is not None}


def bounded_redis(url: str, *, max_connections: int = 50, wait_seconds: float = 20.0) -> Redis:
    """A Redis client for the registry whose pool makes callers beyond ``max_connections`` wait for a free
    connection (up to ``wait_seconds``) instead of failing.

    redis-py's default pool refuses a caller beyond its 100 connections at once (``MaxConnectionsError``):
    a thousand agents connecting together made the tunnel server's claims fail and their sessions end, and
    200 watches opened through the API's k8s proxy at once answered part of them 500.
    """
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=wait_seconds)
    return Redis(connection_pool=pool)

