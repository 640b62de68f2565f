"""How many agent handshakes the tunnel server works on at once, and what it tells the others.

Owned by ``kaas_tunnel``; ``kaas_tunnel.server`` asks ``HandshakeGate.try_enter`` before it touches the
database for a dialling agent. Why: after a tunnel server restarts, every agent it held dials again within
seconds. Taken all at once, each handshake waits behind the others for the database and the event loop,
the agents' handshake timeouts expire, they dial again, and the server spends itself on handshakes nobody
waits for any more: with 5,000 agents on a loaded machine, a few hundred got through in minutes. So a
dial beyond ``max_in_progress`` handshakes (or while the loop runs late: the server is starved) is refused
at once, before any database work, with 503 and a ``Retry-After`` that is an appointment: each refused
dial gets the next free turn, turns spaced by the rate handshakes complete (measured over the last few
seconds), so the herd comes back as fast as the server takes it and no faster. The agent waits that long
plus up to a second (``agents.runtime``: ``Retry-After`` counts whole seconds). Admitted handshakes finish
quickly, and what reaches the database at once stays bounded. (Spreading each refused dial over "the
refusals of the last seconds over the rate, give or take half" left a tail: with 1,000 agents after a
kill -9 the last came back 35 s later, where the server could take them all in about 10.)

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
MAX_RETRY_AFTER_SECONDS = 60
# The rate is never taken below this many handshakes a second per handshake allowed at once: an unstarved
# handshake takes well under half a second. With 5,000 agents after a kill -9 (benchmarks/tunnel.py), a
# floor of 1 spread the herd over 33 s, 2 brought them all back in 24.5 s (denser arrivals also batch the
# handshakes' commits better: 3,261 commits instead of 8,340), 4 in 30 s with 2.6 times the refusals.
MIN_RATE_PER_HANDSHAKE_AT_ONCE = 2.0


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
        self._next_turn = 0.0  # the clock time of the last appointment given

    def try_enter(self) -> HandshakeTicket | None:
        """A ticket, or None: refuse the dial now (503 with ``retry_after()``)."""
        now = self._clock()
        self._forget_before(now - WINDOW_SECONDS)
        if self.in_progress >= self.max_in_progress or self._loop_lag() >= self.lag_limit:
            self.refused_total += 1
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
        """Seconds a refused caller should wait: its appointment, the next free turn (call it once per
        refusal: each call takes a turn). Turns are ``1 / rate`` apart, the rate handshakes completed over
        the recent window; at most ``MAX_RETRY_AFTER_SECONDS`` (a caller beyond comes back then and is
        given a turn again)."""
        now = self._clock()
        self._forget_before(now - WINDOW_SECONDS)
        appointment = max(self._next_turn, now) + 1.0 / self._completion_rate(now)
        self._next_turn = appointment
        return max(1, min(MAX_RETRY_AFTER_SECONDS, math.ceil(appointment - now)))

    def _completion_rate(self, now: float) -> float:
        """Handshakes completed a second, over the window (or since the first completion in it, when that
        is more recent: just after a restart, a whole window's denominator would understate it), and never
        below ``MIN_RATE_PER_HANDSHAKE_AT_ONCE`` times ``max_in_progress`` a second: nearly every turn is
        given in the first seconds after a restart, when the completions say little, and a rate guessed low
        sends the herd far away (turns are given, not taken back), where one guessed high costs a cheap
        refusal and a turn later on."""
        measured = len(self._completed) / max(now - self._completed[0], 1.0) if self._completed else 0.0
        return max(measured, MIN_RATE_PER_HANDSHAKE_AT_ONCE * self.max_in_progress)

    def _left(self, *, completed: bool) -> None:
        self.in_progress -= 1
        if completed:
            self._completed.append(self._clock())

    def _forget_before(self, cutoff: float) -> None:
        while self._completed and self._completed[0] < cutoff:
            self._completed.popleft()
