"""The loop-lag probe: how late a loop runs its timers, summarised over a window, and said once."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from agents.tunnel.loop_lag import LoopLagProbe


async def test_the_probe_measures_a_blocked_loop() -> None:
    seen: list[float] = []
    probe = LoopLagProbe(interval=0.05, window=10.0, on_sample=seen.append)
    probe.start()
    try:
        await asyncio.sleep(0.2)
        time.sleep(0.4)
        await asyncio.sleep(0.2)
    finally:
        await probe.stop()
    summary = probe.summary()
    assert summary.samples == len(seen) >= 3
    assert summary.max >= 0.3
    assert probe.max_ever == summary.max
    assert summary.p50 < 0.1  # most samples were on time


def test_samples_older_than_the_window_are_forgotten() -> None:
    probe = LoopLagProbe(interval=1.0, window=10.0, warn_seconds=100.0)
    probe.record(now=0.0, lag=5.0)
    probe.record(now=5.0, lag=0.1)
    assert probe.summary().max == 5.0
    probe.record(now=11.0, lag=0.2)
    assert probe.summary().max == 0.2
    assert probe.summary().samples == 2
    assert probe.max_ever == 5.0


def test_a_late_loop_is_logged_once_per_window(caplog: pytest.LogCaptureFixture) -> None:
    probe = LoopLagProbe(interval=1.0, window=10.0, warn_seconds=1.0, name="tunnel server loop")
    with caplog.at_level(logging.WARNING, logger="agents.tunnel.loop_lag"):
        probe.record(now=0.0, lag=2.0)
        probe.record(now=1.0, lag=3.0)
        probe.record(now=11.0, lag=1.5)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert warnings[0].startswith("tunnel server loop ran a timer 2.00 s late")
