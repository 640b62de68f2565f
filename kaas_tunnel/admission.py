"""How many agent handshakes the tunnel server works on at once, and what it tells the others.

Owned by ``kaas_tunnel``; ``kaas_tunnel.server`` asks ``HandshakeGate.try_enter`` before it touches the
database for a dialling agent. Why: after a tunnel server restarts, every agent it held dials again within
seconds. Taken all at once, each handshake waits behind the others for the database and the event loop,
the agents' handshake timeouts expire, they dial again, and the server spends itself on handshakes nobody
waits for any more: with 5,000 agents on a loaded machine, a few hundred got through in minutes. So a
dial beyond ``max_in_progress`` handshakes (or while the loop runs late: the server is starved) is refused
at once, before any database work, with 503 and a ``Retry-After`` that spreads the herd: the refusals of
the last few seconds divided by the rate handshakes complete, i.e. when the caller's turn may come. The
agent waits about that long, with jitter (``agents.runtime``). Admitted handshakes finish quickly, and what
reaches the database at once stays bounded.

A ticket is released when the session is recorded or the handshake fails; a ticket whose handshake never
reached the server's handler (the agent went away after the upgrade was accepted) is released by its
deadline.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 5.0
MAX_RETRY_AFTER_SECONDS = 30


class HandshakeTicket:
    """One admitted handshake; ``release`` is idempotent."""

    def __init__(self, gate: HandshakeGate) -> None:
        self._gate = gate
        self._released = False
        self._deadline: asyncio.TimerHandle | None = None

    def release(self, *, completed: bool = False) -> None:
        if self._released:
            return
        self._released = True
        if self._deadline is not None:
            self._deadline.cancel()
        self._gate._left(completed=completed)


class HandshakeGate:
    """At most ``max_in_progress`` handshakes at once, none while the loop is ``lag_limit`` seconds late."""

    def __init__(
        self,
        *,
        max_in_progress: int,
        lag_limit: float,
        ticket_deadline: float,
        loop_lag: Callable[[], float] = lambda: 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_in_progress = max_in_progress
        self.lag_limit = lag_limit
        self.ticket_deadline = ticket_deadline
        self._loop_lag = loop_lag
        self._clock = clock
        self.in_progress = 0
        self.refused_total = 0
        self._completed: deque[float] = deque()
        self._refused: deque[float] = deque()

    def try_enter(self) -> HandshakeTicket | None:
        """A ticket, or None: refuse the dial now (503 with ``retry_after()``)."""
        now = self._clock()
        self._forget_before(now - WINDOW_SECONDS)
        if self.in_progress >= self.max_in_progress or self._loop_lag() >= self.lag_limit:
            self.refused_total += 1
            self._refused.append(now)
            return None
        self.in_progress += 1
        ticket = HandshakeTicket(self)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return ticket
        ticket._deadline = loop.call_later(self.ticket_deadline, ticket.release)
        return ticket

    def retry_after(self) -> int:
        """Seconds a refused caller should wait: the recent refusals over the recent completion rate.

        Before any handshake completed (a restart), the rate is assumed to be ``max_in_progress`` a
        second: a guess on the fast side, since a wait too short costs a cheap refusal and a wait too long
        keeps an agent away for nothing.
        """
        now = self._clock()
        self._forget_before(now - WINDOW_SECONDS)
        rate = max(len(self._completed) / WINDOW_SECONDS, float(self.max_in_progress))
        return max(1, min(MAX_RETRY_AFTER_SECONDS, math.ceil(len(self._refused) / rate)))

    def _left(self, *, completed: bool) -> None:
        self.in_progress -= 1
        if completed:
            self._completed.append(self._clock())

    def _forget_before(self, cutoff: float) -> None:
        for samples in (self._completed, self._refused):
            while samples and samples[0] < cutoff:
                samples.popleft()
