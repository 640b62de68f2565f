"""``kaas_core.serving.heap``: what exists when a server starts is no longer walked by full collections."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from kaas_core.serving.heap import freeze_startup_heap


@pytest.fixture
def thawed() -> Iterator[None]:
    yield
    gc.unfreeze()  # the test process goes on collecting as before


def test_objects_alive_at_start_up_leave_every_generation_and_later_ones_do_not(thawed: None) -> None:
    startup = [[index] for index in range(1000)]  # lists: always tracked by the collector
    frozen_before = gc.get_freeze_count()
    freeze_startup_heap()
    later = [[index] for index in range(10)]
    assert all(gc.is_tracked(obj) for obj in (*startup, *later))
    gc.collect()
    assert gc.get_freeze_count() >= frozen_before + len(startup)
    scanned = {id(obj) for obj in gc.get_objects()}
    assert not any(id(obj) in scanned for obj in startup)
    assert all(id(obj) in scanned for obj in later)
