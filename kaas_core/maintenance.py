"""A cluster's weekly maintenance window: its validation, the next window, and whether one is open now.

Shared by the API (``kaas_api.clusters``: validates ``maintenance_window`` and shows the next window) and the
provider's region sweep (automatic patch upgrades start only inside a window). Pure, no I/O but the time
zone database ``zoneinfo`` reads.

A window is stored on ``clusters.maintenance_window`` as ``{"day": "sun", "start": "02:00",
"duration_minutes": 240, "time_zone": "Asia/Tokyo"}``: it opens every week on that day at that wall-clock
time in that zone and lasts that many real minutes (so a window may cross midnight, and one that spans a DST
change is an hour longer or shorter on the wall clock, never in elapsed time). A start time a DST jump skips
(02:30 on the night clocks go from 02:00 to 03:00) opens at the same offset as before the jump (PEP 495,
``fold=0``), which is 03:30 on the new wall clock; a repeated one opens at its first occurrence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = date.weekday()
START_PATTERN = r"([01][0-9]|2[0-3]):[0-5][0-9]"
MIN_DURATION_MINUTES = 60
MAX_DURATION_MINUTES = 1440
TIME_ZONE_MAX = 64
_START = re.compile(START_PATTERN)


class MaintenanceWindowError(ValueError):
    """A window that cannot be used; ``field`` names the key at fault (``""``: the window as a whole)."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@lru_cache(maxsize=1)
def _known_time_zones() -> frozenset[str]:
    # read once: it walks the time zone database's directory
    return frozenset(available_timezones())


def check_time_zone(name: str) -> str:
    """An IANA time zone name zoneinfo knows (``Europe/Paris``, ``UTC``); raise ``MaintenanceWindowError``.

    Checked against the database's list rather than by opening it, so a name given by a user never reaches
    the file system as a path."""
    if len(name) > TIME_ZONE_MAX or name not in _known_time_zones():
        raise MaintenanceWindowError(
            f"{name[:TIME_ZONE_MAX]!r} is not an IANA time zone name, e.g. 'Europe/Paris' or 'UTC'",
            field="time_zone",
        )
    return name


@dataclass(frozen=True)
class MaintenanceWindow:
    day: str
    start: str
    duration_minutes: int
    time_zone: str

    @classmethod
    def parse(cls, data: dict[str, Any]) -> MaintenanceWindow:
        """The window a stored or requested dict describes; ``MaintenanceWindowError`` if it is none."""
        day, start = data.get("day"), data.get("start")
        duration, zone = data.get("duration_minutes"), data.get("time_zone")
        if not isinstance(day, str) or day not in DAYS:
            raise MaintenanceWindowError(f"day must be one of {', '.join(DAYS)}", field="day")
        if not isinstance(start, str) or not _START.fullmatch(start):
            raise MaintenanceWindowError("start must be a 24-hour time HH:MM, e.g. '02:00'", field="start")
        if (
            isinstance(duration, bool)
            or not isinstance(duration, int)
            or not MIN_DURATION_MINUTES <= duration <= MAX_DURATION_MINUTES
        ):
            raise MaintenanceWindowError(
                f"duration_minutes must be an integer from {MIN_DURATION_MINUTES} to {MAX_DURATION_MINUTES}",
                field="duration_minutes",
            )
        if not isinstance(zone, str):
            raise MaintenanceWindowError("time_zone must be an IANA time zone name", field="time_zone")
        check_time_zone(zone)
        return cls(day=day, start=start, duration_minutes=duration, time_zone=zone)

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "start": self.start,
            "duration_minutes": self.duration_minutes,
            "time_zone": self.time_zone,
        }

    def opening_on(self, day: date) -> tuple[datetime, datetime]:
        hours, minutes = (int(part) for part in self.start.split(":"))
        local = datetime.combine(day, time(hours, minutes), tzinfo=ZoneInfo(self.time_zone))
        opens = local.astimezone(UTC)  # a skipped wall time maps by the offset before the jump (fold=0)
        return opens, opens + timedelta(minutes=self.duration_minutes)


def next_window(window: MaintenanceWindow, now: datetime) -> tuple[datetime, datetime]:
    """(start, end) in UTC of the window open at ``now`` (an aware datetime), else of the next one to open."""
    local_today = now.astimezone(ZoneInfo(window.time_zone)).date()
    weekday = DAYS.index(window.day)
    # a window lasts at most a day, so the one open now opened at most a week and a day ago
    for offset in range(-8, 9):
        day = local_today + timedelta(days=offset)
        if day.weekday() != weekday:
            continue
        opens, closes = window.opening_on(day)
        if closes > now:
            return opens, closes
    raise AssertionError("unreachable: a weekly window opens within any eight days")  # pragma: no cover


def inside(window: MaintenanceWindow, now: datetime) -> bool:
    """Whether the window is open at ``now`` (start included, end excluded)."""
    opens, closes = next_window(window, now)
    return opens <= now < closes
