"""The handshake gate: a bounded number of agent handshakes at once, the rest refused at once with 503 and
a Retry-After that spreads them over the rate handshakes complete; a starved loop refuses too."""

from __future__ import annotations

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from kaas_tunnel.admission import HandshakeGate
from tests.kaas_tunnel.conftest import ServerFactory, wait_until
from tests.provider.factories import CreatedCluster


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_beyond_the_limit_a_dial_is_refused_and_a_released_ticket_makes_room() -> None:
    gate = HandshakeGate(max_in_progress=2, lag_limit=1.0, ticket_deadline=10.0)
    first, second = gate.try_enter(), gate.try_enter()
    assert first is not None
    assert second is not None
    assert gate.try_enter() is None
    first.release(completed=True)
    first.release(completed=True)  # idempotent
    assert gate.in_progress == 1
    assert gate.try_enter() is not None
    assert gate.refused_total == 1


def test_each_refused_dial_gets_its_own_turn_at_the_rate_handshakes_complete() -> None:
    clock = Clock()
    gate = HandshakeGate(max_in_progress=1, lag_limit=1.0, ticket_deadline=10.0, clock=clock)
    for _ in range(10):  # ten handshakes completed over the last 2.5 s: four a second
        ticket = gate.try_enter()
        assert ticket is not None
        ticket.release(completed=True)
        clock.now += 0.25
    holder = gate.try_enter()
    assert holder is not None
    turns = []
    for _ in range(20):
        assert gate.try_enter() is None
        turns.append(gate.retry_after())
    # twenty refused at once: turns a quarter of a second apart, the last one five seconds on (whole
    # seconds, rounded up so that no one comes before its turn)
    assert turns == [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4 + [5] * 4
    clock.now += 20.0  # the queue has drained and the window moved on: the next one is told one second
    assert gate.retry_after() == 1


def test_a_turn_is_never_beyond_the_longest_wait() -> None:
    clock = Clock()
    gate = HandshakeGate(max_in_progress=1, lag_limit=1.0, ticket_deadline=10.0, clock=clock)
    turns = [gate.retry_after() for _ in range(200)]  # no completion yet: two a second guessed
    assert max(turns) == 60
    assert turns[:4] == [1, 1, 2, 2]


def test_the_rate_is_never_taken_below_twice_the_handshakes_at_once_a_second() -> None:
    gate = HandshakeGate(max_in_progress=10, lag_limit=1.0, ticket_deadline=10.0, clock=Clock())
    tickets = [gate.try_enter() for _ in range(10)]
    assert all(tickets)
    turns = [gate.retry_after() for _ in range(95) if gate.try_enter() is None]
    assert len(turns) == 95
    assert turns[-1] == 5  # 95 waiting at twenty a second, not at one


def test_just_after_a_restart_the_rate_is_measured_over_the_time_since_the_first_completion() -> None:
    clock = Clock()
    gate = HandshakeGate(max_in_progress=5, lag_limit=1.0, ticket_deadline=10.0, clock=clock)
    for _ in range(100):  # a hundred handshakes in the first second after a restart
        ticket = gate.try_enter()
        assert ticket is not None
        ticket.release(completed=True)
        clock.now += 0.01
    turns = [gate.retry_after() for _ in range(300)]
    assert turns[-1] == 3  # three hundred at a hundred a second, not at twenty (100 over a 5 s window)


def test_a_starved_loop_refuses_dials_even_below_the_limit() -> None:
    lag = [0.0]
    gate = HandshakeGate(max_in_progress=10, lag_limit=2.0, ticket_deadline=10.0, loop_lag=lambda: lag[0])
    assert gate.try_enter() is not None
    lag[0] = 2.5
    assert gate.try_enter() is None


async def test_a_ticket_whose_handshake_never_reached_the_handler_runs_out() -> None:
    gate = HandshakeGate(max_in_progress=1, lag_limit=1.0, ticket_deadline=0.05)
    assert gate.try_enter() is not None
    assert gate.try_enter() is None
    await wait_until(lambda: gate.in_progress == 0, timeout=5, what="the ticket's deadline")
    assert gate.try_enter() is not None


async def test_a_dial_beyond_the_handshakes_under_way_gets_503_with_retry_after_and_then_gets_in(
    make_server: ServerFactory, cluster: CreatedCluster
) -> None:
    server = await make_server(max_handshakes_in_progress=1)
    under_way = server.handshakes.try_enter()  # another agent's handshake
    assert under_way is not None
    headers = {"Authorization": f"Bearer {cluster.agent_token}"}
    with pytest.raises(InvalidStatus) as refused:
        async with connect(server.tunnel_url, additional_headers=headers, proxy=None, open_timeout=5):
            pass
    assert refused.value.response.status_code == 503
    assert int(refused.value.response.headers["Retry-After"]) >= 1
    assert server.handshakes.refused_total == 1
    under_way.release()
    async with connect(server.tunnel_url, additional_headers=headers, proxy=None, open_timeout=5) as admitted:
        assert admitted.response is not None
        assert admitted.response.status_code == 101
    await wait_until(lambda: server.handshakes.in_progress == 0, what="the admitted handshake's ticket")
