"""Which tunnel-server process holds the live agent session of which cluster, kept in Redis.

Written by the tunnel servers (claim when an agent connects, refresh while it stays, release when it
goes), read by the k8s proxy so a request reaches the right process in one hop. Every entry expires, so a
crashed process's claims vanish by themselves. A newer session replaces an older one: ``claim`` always
overwrites, and the older holder learns it lost the cluster when its next ``refresh`` fails, then closes
its session. Refresh and release are compare-and-set on the session id (Lua, atomic in Redis).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from redis.asyncio import Redis

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


class TunnelRegistry:
    def __init__(self, redis: Redis, *, ttl_seconds: float = 30.0) -> None:
        self._redis = redis
        self._ttl_ms = int(ttl_seconds * 1000)

    @property
    def ttl_seconds(self) -> float:
        return self._ttl_ms / 1000

    async def claim(self, *, cluster_id: str, session_id: str, address: str) -> None:
        """Record this session as the cluster's live one, replacing any older session."""
        value = json.dumps({"session_id": session_id, "address": address, "connected_at": time.time()})
        await self._redis.set(KEY_PREFIX + cluster_id, value, px=self._ttl_ms)

    async def refresh(self, *, cluster_id: str, session_id: str) -> bool:
        """Extend the claim; False means another session took the cluster over (or the claim expired)."""
        key = KEY_PREFIX + cluster_id
        result = await self._redis.eval(_REFRESH_IF_OWNER, 1, key, session_id, self._ttl_ms)
        return bool(result)

    async def release(self, *, cluster_id: str, session_id: str) -> bool:
        """Remove the claim if it is still ours (a newer session's claim is left alone)."""
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
        """Every cluster with a live claim (for status and metrics; SCAN, never KEYS)."""
        found: set[str] = set()
        async for key in self._redis.scan_iter(match=KEY_PREFIX + "*", count=500):
            text = key.decode() if isinstance(key, bytes) else str(key)
            found.add(text.removeprefix(KEY_PREFIX))
        return found
