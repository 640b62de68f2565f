"""Which beat may send: a leader lease in Redis, so that exactly one scheduler is active at a time.

A deployment runs beat with several replicas for availability (deploy/, issue 14); each replica asks for the
lease before every tick (``RegionalScheduler.tick``) and only the holder sends anything. The lease is a Redis
key set with NX and a TTL (``redis.lock.Lock``: its token is the holder's, extend and release check it), held
for ``KAAS_BEAT_LEASE_SECONDS`` (10) and renewed at every tick (beat ticks at least every second), so:

- a holder that died or lost Redis stops being the leader after at most the lease, and another replica
  takes over on its next tick;
- a holder that comes back after its lease ran out (a paused process, a network partition) finds another
  token on the key when it tries to renew and sends nothing more (never two sweeps at once);
- with the in-memory broker of ``kaas up`` there is one beat in one process and no lease to take.

Called by ``provider.beat.RegionalScheduler``; the key lives in the broker's Redis.
"""

from __future__ import annotations

import logging
import os
import socket

import redis
from redis.exceptions import LockError, RedisError
from redis.lock import Lock

logger = logging.getLogger(__name__)

LEADER_KEY = "kaas:beat:leader"


class BeatLeadership:
    """This beat's hold on the leader lease; ``is_leader()`` asks (and renews) before each tick."""

    def __init__(self, redis_url: str | None, *, lease_seconds: float, key: str = LEADER_KEY) -> None:
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self._client = redis.Redis.from_url(redis_url) if redis_url else None
        self._lock: Lock | None = (
            Lock(self._client, key, timeout=lease_seconds, thread_local=False) if self._client else None
        )
        self._leading = self._client is None  # no Redis: the only beat there is

    def is_leader(self) -> bool:
        """Renew the lease when held, else try to take it; False when another beat holds it or Redis is
        away."""
        lock = self._lock
        if lock is None:
            return True
        try:
            if self._leading:
                lock.reacquire()  # raises when our token is no longer the key's: someone else leads
                return True
            self._leading = lock.acquire(blocking=False, token=f"{self.identity}:{os.urandom(8).hex()}")
        except LockError:
            logger.warning("beat %s lost the leader lease; another beat sends now", self.identity)
            self._leading = False
        except RedisError:
            logger.warning("beat %s cannot reach Redis; it sends nothing until it can", self.identity)
            self._leading = False
        else:
            if self._leading:
                logger.info("beat %s holds the leader lease and sends the periodic tasks", self.identity)
        return self._leading

    def release(self) -> None:
        if self._lock is not None and self._leading:
            try:
                self._lock.release()
            except (LockError, RedisError):
                pass  # it runs out by itself
        self._leading = self._client is None
        if self._client is not None:
            self._client.close()


def redis_url_of(broker_url: str) -> str | None:
    """The broker's URL when it is Redis; None for the in-memory broker (one process, no lease)."""
    return broker_url if broker_url.startswith(("redis://", "rediss://")) else None
