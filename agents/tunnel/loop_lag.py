"""How late an asyncio event loop runs its callbacks: a probe both tunnel ends run, one per process.

Owned by ``agents.tunnel``, beside the driver whose timers it explains. Started by the agent's process
(``agents.main``), by kaas's tunnel server (``kaas_tunnel.server``, which exports it as a metric) and by
the tunnel benchmark's agent processes. A loop that is starved (CPU contention, a blocking call, the GIL
held by a thread) runs every timer late; the probe measures by how much: it asks for a wake-up every
``interval`` seconds and records how much later than asked it ran. That lateness is what the tunnel's
keep-alive deadlines tolerate (``agents.tunnel.protocol``: a tick that runs late credits its lateness to
the peer), and what an operator reads to tell "the peer is gone" from "this process is starved".

Cheap on purpose: one timer per loop (four wake-ups a second by default), however many sessions the loop
carries, and a bounded window of samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 0.25
DEFAULT_WINDOW_SECONDS = 60.0
DEFAULT_WARN_SECONDS = 1.0


@dataclass(frozen=True)
class LagSummary:
    """The lateness of the samples in the window: how many, their median, 99th percentile and maximum."""

    samples: int
    p50: float
    p99: float
    max: float

    def describe(self) -> str:
        return f"p50 {self.p50 * 1000:.0f} ms, p99 {self.p99 * 1000:.0f} ms, max {self.max * 1000:.0f} ms"


class LoopLagProbe:
    """A task that measures its own loop's lateness; ``start()`` inside the loop, ``await stop()`` after.

    ``on_sample`` is called with every sample (seconds late), e.g. to feed a histogram. A sample above
    ``warn_seconds`` is logged, at most once per window, with the window's summary.
    """

    def __init__(
        self,
        *,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        window: float = DEFAULT_WINDOW_SECONDS,
        warn_seconds: float = DEFAULT_WARN_SECONDS,
        on_sample: Callable[[float], None] | None = None,
        name: str = "event loop",
    ) -> None:
        if interval <= 0 or window < interval:
            raise ValueError("need 0 < interval <= window")
        self.interval = interval
        self.window = window
        self.warn_seconds = warn_seconds
        self.name = name
        self._on_sample = on_sample
        self._samples: deque[tuple[float, float]] = deque()  # (when, seconds late)
        self._max_ever = 0.0
        self._task: asyncio.Task[None] | None = None
        self._warned_at: float | None = None

    @property
    def latest(self) -> float:
        """The last sample (0 before the first): how late the loop ran a moment ago."""
        return self._samples[-1][1] if self._samples else 0.0

    @property
    def max_ever(self) -> float:
        """The worst lateness since the probe started."""
        return self._max_ever

    def start(self) -> None:
        """Start measuring this loop (the one running now). Idempotent."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"{self.name} lag probe")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def summary(self) -> LagSummary:
        """The window's samples; zeros before the first one."""
        lags = sorted(lag for _, lag in self._samples)
        if not lags:
            return LagSummary(samples=0, p50=0.0, p99=0.0, max=0.0)
        return LagSummary(
            samples=len(lags),
            p50=lags[len(lags) // 2],
            p99=lags[min(len(lags) - 1, round(0.99 * (len(lags) - 1)))],
            max=lags[-1],
        )

    def record(self, *, now: float, lag: float) -> None:
        """One sample (the probe's own task calls it; tests may too)."""
        self._samples.append((now, lag))
        while self._samples and self._samples[0][0] < now - self.window:
            self._samples.popleft()
        self._max_ever = max(self._max_ever, lag)
        if self._on_sample is not None:
            self._on_sample(lag)
        if lag >= self.warn_seconds and (self._warned_at is None or now - self._warned_at >= self.window):
            self._warned_at = now
            logger.warning(
                "%s ran a timer %.2f s late (starved: CPU contention or a blocking call); last %.0f s: %s",
                self.name,
                lag,
                self.window,
                self.summary().describe(),
            )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            now = loop.time()
            self.record(now=now, lag=max(0.0, now - asked))
