"""``QuietServer``: uvicorn's server, waking once a second instead of ten times a second.

Owned by ``simcloud``; the simulated cloud and every stand-in apiserver run on it (``simcloud.testing``,
``simcloud.kube.testing``). ``kaas up`` runs one stand-in per cluster: with uvicorn's own ten wake-ups a
second each, a fleet at rest spent a visible share of a core doing nothing. Once a second is what the
``Date`` header needs (it has one-second resolution). Setting ``should_exit`` (from any thread) wakes the
loop at once, so stopping is as quick as with uvicorn's own loop.
"""

from __future__ import annotations

import asyncio
import contextlib

import uvicorn

TICK_SECONDS = 1.0
# uvicorn's on_tick refreshes the Date header when its counter is a multiple of ten (meant: once a second)
_TICKS_PER_SECOND = 10


class QuietServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._exit = False
        super().__init__(config)

    @property
    def should_exit(self) -> bool:
        return self._exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._exit = value
        loop, wake = self._loop, self._wake
        if value and loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(wake.set)

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + _TICKS_PER_SECOND) % 864_000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_SECONDS)
