"""Running the tunnel server as its own process: ``run_tunnel_server`` (what ``kaas tunnel`` calls).

Owned by ``kaas_tunnel``. The composition root: reads ``TunnelSettings`` from the environment unless
given, builds the database session factory, the registry and the credential revocation feed (Redis when
``KAAS_REDIS_URL`` is set, in-memory otherwise), runs ``TunnelServer`` until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from redis.asyncio import Redis

from kaas_core.credential_cache import RedisRevocationFeed, RevocationFeed
from kaas_core.db.session import make_engine, make_session_factory
from kaas_core.serving.heap import freeze_startup_heap
from kaas_core.tunnel_registry import (
    InMemoryTunnelRegistry,
    RedisTunnelRegistry,
    TunnelRegistry,
    bounded_redis,
)
from kaas_tunnel.config import TunnelSettings
from kaas_tunnel.server import serve_tunnel


def registry_redis(settings: TunnelSettings, url: str) -> Redis:
    """The registry's Redis client: a bounded pool whose callers wait for a free connection
    (``kaas_core.tunnel_registry.bounded_redis``)."""
    return bounded_redis(
        url, max_connections=settings.redis_max_connections, wait_seconds=settings.redis_wait_seconds
    )


async def run_tunnel_server_async(settings: TunnelSettings, *, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set, with the deployment's database and registry."""
    settings.validate_for_production()
    engine = make_engine(settings.database_url)
    redis: Redis | None = None
    registry: TunnelRegistry
    feed: RevocationFeed | None = None
    if settings.redis_url:
        redis = registry_redis(settings, settings.redis_url)
        registry = RedisTunnelRegistry(redis, ttl_seconds=settings.registry_ttl_seconds)
        feed = RedisRevocationFeed(settings.redis_url)  # revocations from the API's replicas
    else:
        registry = InMemoryTunnelRegistry(ttl_seconds=settings.registry_ttl_seconds)
    try:
        await serve_tunnel(
            settings,
            session_factory=make_session_factory(engine),
            registry=registry,
            stop=stop,
            revocation_feed=feed,
        )
    finally:
        if redis is not None:
            await redis.aclose()
        engine.dispose()


def run_tunnel_server(settings: TunnelSettings | None = None) -> None:
    """Blocking: run the tunnel server in this process until SIGINT or SIGTERM."""
    resolved = settings or TunnelSettings()
    freeze_startup_heap()  # every module is imported: no full collection need walk them again

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        await run_tunnel_server_async(resolved, stop=stop)

    asyncio.run(main())
