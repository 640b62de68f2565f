"""What beat sends, and to which queue: the global sweep, and one due-scan, one leak sweep and one bulk
observation per region.

Each region's periodic tasks go straight to that region's queue, one schedule entry each, so every region is
scanned and swept every interval whatever the other regions' workers are doing (a shared queue let the
worker that took the one sweep serve its own regions only). The regions are read from the database
(``regions``), re-read every ``REGION_REFRESH_SECONDS``: a region created through the API gets its entries
without a restart of beat. Every entry expires after its own interval, so a queue nobody consumed for a
while holds at most one of each that still runs (the later ones replace the earlier).

``RegionalScheduler`` is the ``beat_scheduler`` of ``provider.celery_app.make_celery`` (``kaas beat``) and
the scheduler of the embedded beat thread (``kaas up``). Several beats may run (replicas for availability):
only the holder of the leader lease in Redis sends (``provider.beat_leader``); the others tick idle and one of
them takes over within ``KAAS_BEAT_LEASE_SECONDS`` of the leader's death. Even two senders would only double
the scans, which claim their clusters (``provider.reconciler.due``), so nothing is queued twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from celery.beat import Scheduler
from sqlalchemy import select

from kaas_core.db.models import Region
from kaas_core.tasks import (
    DUE_SCAN_TASK,
    OBSERVE_REGION_TASK,
    SWEEP_LEAKS_TASK,
    SWEEP_TASK,
    WEBHOOK_QUEUE,
    region_queue,
)
from provider.beat_leader import BeatLeadership, redis_url_of
from provider.config import ProviderSettings

logger = logging.getLogger(__name__)

REGION_REFRESH_SECONDS = 30.0
IDLE_TICK_SECONDS = 1.0  # how often a beat that is not the leader asks for the lease again
REGIONAL_PREFIXES = ("due-scan:", "sweep-leaks:", "observe:")


def global_entries(settings: ProviderSettings) -> dict[str, dict[str, Any]]:
    """The entries that need no region: the safety-net sweep (database only) on the shared queue."""
    every = settings.sweep_interval_seconds
    return {
        "provider-sweep": {
            "task": SWEEP_TASK,
            "schedule": every,
            "options": {"queue": WEBHOOK_QUEUE, "expires": every},
        },
    }


def regional_entries(settings: ProviderSettings, regions: Iterable[str]) -> dict[str, dict[str, Any]]:
    """One due-scan, one leak sweep and one bulk observation per region, on the region's own queue."""
    entries: dict[str, dict[str, Any]] = {}
    for name in regions:
        queue = region_queue(name)
        entries[f"{REGIONAL_PREFIXES[0]}{name}"] = {
            "task": DUE_SCAN_TASK,
            "schedule": settings.due_scan_interval_seconds,
            "args": (name,),
            "options": {"queue": queue, "expires": settings.due_scan_interval_seconds},
        }
        entries[f"{REGIONAL_PREFIXES[1]}{name}"] = {
            "task": SWEEP_LEAKS_TASK,
            "schedule": settings.sweep_interval_seconds,
            "args": (name,),
            "options": {"queue": queue, "expires": settings.sweep_interval_seconds},
        }
        entries[f"{REGIONAL_PREFIXES[2]}{name}"] = {
            "task": OBSERVE_REGION_TASK,
            "schedule": settings.sweep_interval_seconds,
            "args": (name,),
            "options": {"queue": queue, "expires": settings.sweep_interval_seconds},
        }
    return entries


class RegionalScheduler(Scheduler):  # type: ignore[misc]
    """Celery's in-memory scheduler plus the per-region entries of the regions in the database.

    In memory: a restarted beat only sends each entry one interval after its start, which the due times in
    the database make harmless.
    """

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        self._regions: tuple[str, ...] | None = None
        self._regions_read_at: float | None = None
        settings: ProviderSettings = app.provider_settings
        self.leadership = BeatLeadership(
            redis_url_of(settings.broker_url), lease_seconds=settings.beat_lease_seconds
        )
        super().__init__(app, *args, **kwargs)

    def setup_schedule(self) -> None:
        super().setup_schedule()
        self._refresh_regions(force=True)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self.leadership.is_leader():
            return IDLE_TICK_SECONDS
        self._refresh_regions()
        interval: float = super().tick(*args, **kwargs)
        # never sleep past a renewal: the lease must be renewed well within its time
        return min(interval, IDLE_TICK_SECONDS)

    def close(self) -> None:
        super().close()
        self.leadership.release()

    def _refresh_regions(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and self._regions_read_at is not None:
            if now - self._regions_read_at < REGION_REFRESH_SECONDS:
                return
        self._regions_read_at = now
        try:
            regions = tuple(self._read_regions())
        except Exception:  # the database is away: keep the entries we have, read again next time
            logger.warning("beat could not read the regions; keeping %s", self._regions, exc_info=True)
            return
        if regions == self._regions:
            return
        self._regions = regions
        settings: ProviderSettings = self.app.provider_settings
        wanted = regional_entries(settings, regions)
        for name in [n for n in self.schedule if n.startswith(REGIONAL_PREFIXES) and n not in wanted]:
            del self.schedule[name]  # the region is gone
        self.update_from_dict({n: e for n, e in wanted.items() if n not in self.schedule})
        logger.info("beat schedules the due-scans and leak sweeps of regions %s", ", ".join(regions) or "-")

    def _read_regions(self) -> list[str]:
        factory = self.app.provider_context().session_factory
        with factory() as session:
            return list(session.scalars(select(Region.name).order_by(Region.name)).all())
