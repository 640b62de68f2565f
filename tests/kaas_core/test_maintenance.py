"""The weekly maintenance window: validation, the next window, and "inside now?", across midnight and DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kaas_core.maintenance import (
    MaintenanceWindow,
    MaintenanceWindowError,
    check_time_zone,
    inside,
    next_window,
)


def window(
    day: str = "sun", start: str = "02:00", minutes: int = 240, zone: str = "UTC"
) -> MaintenanceWindow:
    return MaintenanceWindow.parse(
        {"day": day, "start": start, "duration_minutes": minutes, "time_zone": zone}
    )


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_the_next_window_opens_on_its_day_at_its_local_time() -> None:
    tokyo = window(zone="Asia/Tokyo")  # UTC+9: Sunday 02:00 in Tokyo is Saturday 17:00 UTC
    assert next_window(tokyo, at("2026-12-02T12:00:00")) == (
        at("2026-12-05T17:00:00"),
        at("2026-12-05T21:00:00"),
    )


def test_a_window_open_now_is_the_one_returned_and_inside_is_true() -> None:
    tokyo = window(zone="Asia/Tokyo")
    now = at("2026-12-05T18:30:00")
    assert next_window(tokyo, now) == (at("2026-12-05T17:00:00"), at("2026-12-05T21:00:00"))
    assert inside(tokyo, now)
    assert not inside(tokyo, at("2026-12-05T21:00:00"))  # the end is excluded
    assert inside(tokyo, at("2026-12-05T17:00:00"))  # the start included


def test_after_a_window_closed_the_next_is_a_week_later() -> None:
    plain = window()
    assert next_window(plain, at("2026-12-06T06:00:00"))[0] == at("2026-12-13T02:00:00")


def test_a_window_crossing_midnight_is_open_on_the_next_day_until_it_ends() -> None:
    late = window(day="sat", start="22:00", minutes=300)  # Saturday 22:00 to Sunday 03:00
    assert inside(late, at("2026-12-06T01:30:00"))  # a Sunday
    assert next_window(late, at("2026-12-06T01:30:00")) == (
        at("2026-12-05T22:00:00"),
        at("2026-12-06T03:00:00"),
    )
    assert not inside(late, at("2026-12-06T03:00:00"))


def test_a_window_follows_the_zones_daylight_saving_change() -> None:
    paris = window(start="02:00", minutes=60, zone="Europe/Paris")
    # summer (CEST, UTC+2) and winter (CET, UTC+1): the same wall-clock time, a different UTC time
    assert next_window(paris, at("2026-07-01T00:00:00"))[0] == at("2026-07-05T00:00:00")
    assert next_window(paris, at("2026-12-01T00:00:00"))[0] == at("2026-12-06T01:00:00")


def test_a_window_spanning_the_dst_change_lasts_its_duration_in_real_time() -> None:
    # 2026-10-25 is the Sunday Paris goes from CEST to CET at 03:00 local (01:00 UTC)
    paris = window(start="00:00", minutes=240, zone="Europe/Paris")
    opens, closes = next_window(paris, at("2026-10-24T12:00:00"))
    assert opens == at("2026-10-24T22:00:00")  # midnight CEST
    assert closes - opens == timedelta(minutes=240)
    assert inside(paris, at("2026-10-25T01:30:00"))  # the repeated hour is inside


def test_a_start_time_the_spring_jump_skips_opens_by_the_offset_before_the_jump() -> None:
    # 2026-03-08, New York: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist that night
    new_york = window(start="02:30", minutes=60, zone="America/New_York")
    opens, _ = next_window(new_york, at("2026-03-07T12:00:00"))
    assert opens == at("2026-03-08T07:30:00")  # 02:30 EST, i.e. 03:30 EDT
    assert next_window(new_york, at("2026-03-14T12:00:00"))[0] == at("2026-03-15T06:30:00")  # 02:30 EDT


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"day": "sunday"}, "day"),
        ({"start": "24:00"}, "start"),
        ({"start": "2:00"}, "start"),
        ({"duration_minutes": 59}, "duration_minutes"),
        ({"duration_minutes": 1441}, "duration_minutes"),
        ({"duration_minutes": True}, "duration_minutes"),
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        ({"time_zone": "../../etc/passwd"}, "time_zone"),
    ],
)
def test_a_window_that_cannot_be_used_is_refused_naming_the_field(
    changes: dict[str, object], field: str
) -> None:
    data: dict[str, object] = {"day": "sun", "start": "02:00", "duration_minutes": 240, "time_zone": "UTC"}
    with pytest.raises(MaintenanceWindowError) as refused:
        MaintenanceWindow.parse({**data, **changes})
    assert refused.value.field == field


def test_iana_names_are_accepted() -> None:
    assert check_time_zone("Asia/Tokyo") == "Asia/Tokyo"
    assert window(zone="UTC").as_dict()["time_zone"] == "UTC"
