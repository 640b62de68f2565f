"""Input-limits benchmark: the memory of an API process while unauthenticated clients send oversize request
heads and bodies and 200 slow clients trickle, against its idle memory measured in the same run; and what
a 422 of a body of unknown keys costs it.

    .venv/bin/python benchmarks/input_limits.py                  # 30 s of attack on this checkout's API
    .venv/bin/python benchmarks/input_limits.py --source DIR     # the same on another checkout's code, e.g.
                                                                 # `git archive <commit> | tar -x -C DIR`

The API runs as ``kaas api`` (``python -m kaas_cli.main api``, with ``--source`` on that code) in its own
process on 127.0.0.1 with the production defaults of its limits (``KAAS_HTTP_*``, ``kaas_core.serving``), on
SQLite in a temporary directory and the in-memory broker: nothing the attack reaches needs more. This
process seeds the database (one admin and their token) and drives every client from one event loop.

1. Idle: VmRSS (``/proc/PID/status``) after a warm-up of a few requests.
2. The attack, for ``--seconds``, every client unauthenticated, each reconnecting as soon as it is done:
   - 4 connections sending a request whose one header is 32 MB;
   - 2 connections POSTing 100 MB of JSON (``{"name": "aaa..."}``) with Content-Length, 2 chunked;
   - 200 slow clients, 100 trickling a request head and 100 a request body, one byte every 2 s.
   VmRSS is sampled every 100 ms. Reported: the peak and its ratio to idle, how each kind of client was
   answered (status, or closed without one) and how long the slow clients lasted before they were cut off.
3. The 422: one authenticated ``POST /v1/projects`` of a 1 MiB JSON object of unknown keys, then one of
   9,999 unknown keys besides its name (the most ``KAAS_HTTP_MAX_JSON_VALUES`` lets through to
   validation): status, seconds, size of the answer, VmRSS growth while it ran.

Target: the peak VmRSS under attack is at most idle + 64 MiB, every oversize head answered 431, every
oversize body 413, every slow client cut off (408). Not a timed test: the figures depend on the machine.
Everything started here is stopped and its temporary directory removed, also on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kaas_api.users.service import create_user  # noqa: E402
from kaas_core.db.migrate import upgrade_database  # noqa: E402
from kaas_core.db.session import make_engine, make_session_factory  # noqa: E402

MIB = 1024 * 1024
PIECE = 64 * 1024
HEADER_BYTES = 32 * 1000 * 1000
BODY_BYTES = 100 * 1000 * 1000
TRICKLE_SECONDS = 2.0
BOUND_MIB = 64  # the target: peak VmRSS under attack at most idle + this
CUT_OFF_EXPECTED_SECONDS = 15.0  # the defaults cut a slow client off after 10 s (head) or 10 s + (body)

Request = Callable[[], tuple[bytes, Iterator[bytes]]]


def say(text: str) -> None:
    print(text, flush=True)


def vm_kib(pid: int, field_name: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field_name} for pid {pid}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def api_process(
    source: Path, workdir: Path, env: dict[str, str], port: int
) -> Iterator[subprocess.Popen[bytes]]:
    log = (workdir / "api.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "kaas_cli.main", "api", "--port", str(port)],
        cwd=source,
        env={**env, "PYTHONPATH": str(source)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the API exited with {process.returncode}; see {workdir / 'api.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if (
                    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1, trust_env=False).status_code
                    == 200
                ):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not answer within 60 s")
            time.sleep(0.2)
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


# --- the clients -------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """How one kind of client fared."""

    answers: Counter[str] = field(default_factory=Counter)
    lasted: list[float] = field(default_factory=list)  # seconds from connecting to the answer or the close

    def line(self) -> str:
        parts = ", ".join(f"{outcome} x {count}" for outcome, count in sorted(self.answers.items()))
        return f"{sum(self.answers.values())} done: {parts or 'none'}"


async def one_exchange(
    port: int, head: bytes, body: Iterator[bytes], *, pause: float, deadline: float
) -> tuple[str, float]:
    """Send ``head`` then ``body`` (``pause`` s between pieces) while reading: the answer's status (or how the
    connection ended without one) and the seconds from connecting to that."""
    started = time.monotonic()
    ended = deadline
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = bytearray()

    async def read() -> None:
        nonlocal ended
        try:
            while chunk := await reader.read(65536):
                received.extend(chunk)
                if b"\r\n" in received:
                    return
        except ConnectionError:
            pass
        finally:
            ended = time.monotonic()

    reading = asyncio.create_task(read())
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(head)
            await writer.drain()
            for piece in body:
                if reading.done() or time.monotonic() > deadline:
                    break
                if pause:
                    await asyncio.sleep(pause)
                writer.write(piece)
                await writer.drain()
        remaining = deadline - time.monotonic()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reading), remaining)
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    if received.startswith(b"HTTP/1.1 "):
        return received.split(b" ", 2)[1].decode(), ended - started
    return ("not cut" if ended >= deadline else "closed"), ended - started


def repeated(total: int, piece: bytes) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        chunk = piece[: total - sent]
        sent += len(chunk)
        yield chunk


def json_body(total: int) -> Iterator[bytes]:
    yield b'{"name": "'
    yield from repeated(total - 12, b"a" * PIECE)
    yield b'"}'


def chunked(pieces: Iterator[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
    yield b"0\r\n\r\n"


def oversize_header() -> tuple[bytes, Iterator[bytes]]:
    head = b"GET /v1/projects HTTP/1.1\r\nHost: kaas\r\nX-Filler: "
    return head, iter([*repeated(HEADER_BYTES, b"a" * PIECE), b"\r\n\r\n"])


def oversize_body(*, chunked_body: bool) -> tuple[bytes, Iterator[bytes]]:
    framing = b"Transfer-Encoding: chunked" if chunked_body else b"Content-Length: %d" % BODY_BYTES
    head = (
        b"POST /v1/projects HTTP/1.1\r\nHost: kaas\r\nContent-Type: application/json\r\n%s\r\n\r\n" % framing
    )
    return head, chunked(json_body(BODY_BYTES)) if chunked_body else json_body(BODY_BYTES)


def record(tally: Tally, outcome: str, lasted: float) -> None:
    if outcome == "not cut" and lasted < CUT_OFF_EXPECTED_SECONDS:
        return  # begun too late to tell
    tally.answers[outcome] += 1
    if outcome != "not cut":
        tally.lasted.append(lasted)


async def attacker(port: int, make: Request, tally: Tally, deadline: float) -> None:
    while time.monotonic() < deadline:
        head, body = make()
        try:
            outcome, lasted = await one_exchange(port, head, body, pause=0, deadline=deadline)
        except OSError as exc:
            outcome, lasted = type(exc).__name__, 0.0
        record(tally, outcome, lasted)


async def slow_client(port: int, *, body: bool, tally: Tally, deadline: float) -> None:
    await asyncio.sleep(random.uniform(0, TRICKLE_SECONDS))  # not all in step
    first = True
    while first or deadline - time.monotonic() > CUT_OFF_EXPECTED_SECONDS:  # again while it can be cut off
        first = False
        if body:
            head = b"POST /v1/projects HTTP/1.1\r\nHost: kaas\r\nContent-Type: application/json\r\n"
            head += b"Content-Length: 1000\r\n\r\n"
            pieces: Iterator[bytes] = iter([b"{"] + [b" "] * 998 + [b"}"])
        else:
            head = b"G"
            pieces = (bytes([byte]) for byte in b"ET /v1/projects HTTP/1.1\r\nHost: kaas\r\n\r\n")
        try:
            outcome, lasted = await one_exchange(port, head, pieces, pause=TRICKLE_SECONDS, deadline=deadline)
        except OSError as exc:
            outcome, lasted = type(exc).__name__, 0.0
        record(tally, outcome, lasted)


async def attack(port: int, pid: int, seconds: float) -> tuple[int, dict[str, Tally]]:
    deadline = time.monotonic() + seconds
    tallies = {name: Tally() for name in ("header", "body-length", "body-chunked", "slow-head", "slow-body")}
    peak = vm_kib(pid)

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, vm_kib(pid))
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    clients = [
        *(attacker(port, oversize_header, tallies["header"], deadline) for _ in range(4)),
        *(
            attacker(port, lambda: oversize_body(chunked_body=False), tallies["body-length"], deadline)
            for _ in range(2)
        ),
        *(
            attacker(port, lambda: oversize_body(chunked_body=True), tallies["body-chunked"], deadline)
            for _ in range(2)
        ),
        *(slow_client(port, body=False, tally=tallies["slow-head"], deadline=deadline) for _ in range(100)),
        *(slow_client(port, body=True, tally=tallies["slow-body"], deadline=deadline) for _ in range(100)),
    ]
    await asyncio.gather(*clients)
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    return max(peak, vm_kib(pid)), tallies


# --- the 422 -----------------------------------------------------------------------------------------------


@dataclass
class Cost:
    status: int
    seconds: float
    answer_bytes: int
    growth_kib: int


def cost_of(port: int, pid: int, token: str, body: bytes) -> Cost:
    before = vm_kib(pid)
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, vm_kib(pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    response = httpx.post(
        f"http://127.0.0.1:{port}/v1/projects",
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=300,
        trust_env=False,
    )
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    return Cost(response.status_code, seconds, len(response.content), max(peak, vm_kib(pid)) - before)


def unknown_keys(count: int) -> bytes:
    return json.dumps({"name": "bench", **{f"unknown{i}": 0 for i in range(count)}}).encode()


def unknown_keys_of_size(size: int) -> tuple[bytes, int]:
    count = size // len(b'"unknown100000": 0, ')
    body = unknown_keys(count)
    while len(body) > size:
        count -= 1000
        body = unknown_keys(count)
    return body, count


# --- the run -----------------------------------------------------------------------------------------------


def run(source: Path, seconds: float, workdir: Path) -> bool:
    database_url = f"sqlite:///{workdir / 'kaas.db'}"
    upgrade_database(database_url)
    engine = make_engine(database_url)
    with make_session_factory(engine)() as session:
        _user, token = create_user(session, name="bench", is_admin=True)
        session.commit()
    engine.dispose()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("KAAS_")  # the production defaults of every limit, whatever this shell set
    }
    env |= {
        "KAAS_DATABASE_URL": database_url,
        "KAAS_BROKER_URL": "memory://",
        "KAAS_SECRET_KEY": "bench-secret-key-" + "z" * 32,
        "KAAS_LOG_LEVEL": "WARNING",  # a line per refused client would be the loudest cost here
        "PYTHONUNBUFFERED": "1",
    }
    port = free_port()
    with api_process(source, workdir, env, port) as process:
        pid = process.pid
        for _ in range(20):
            httpx.get(f"http://127.0.0.1:{port}/healthz", trust_env=False)
            httpx.get(
                f"http://127.0.0.1:{port}/v1/projects",
                headers={"Authorization": f"Bearer {token}"},
                trust_env=False,
            )
        time.sleep(1.0)
        idle = vm_kib(pid)
        say(f"kaas api (pid {pid}) from {source} on 127.0.0.1:{port}")
        say(f"  idle                     VmRSS {idle / 1024:7.1f} MiB")
        say(
            f"attack for {seconds:g} s: 4 x 32 MB header, 2 x 100 MB body (Content-Length), 2 x 100 MB body"
            f" (chunked), 200 slow clients (100 heads, 100 bodies, a byte every {TRICKLE_SECONDS:g} s) ..."
        )
        peak, tallies = asyncio.run(attack(port, pid, seconds))
        growth_mib = (peak - idle) / 1024
        within = growth_mib <= BOUND_MIB
        say(
            f"  peak VmRSS               {peak / 1024:7.1f} MiB   {peak / idle:5.2f}x idle"
            f"   (+{growth_mib:.1f} MiB)   target ≤ idle + {BOUND_MIB} MiB   {'OK' if within else 'MISSED'}"
        )
        say(
            f"  VmHWM after the attack   {vm_kib(pid, 'VmHWM') / 1024:7.1f} MiB"
            " (the process's peak since it started)"
        )
        for name, label in (
            ("header", "32 MB headers"),
            ("body-length", "100 MB bodies, Content-Length"),
            ("body-chunked", "100 MB bodies, chunked"),
            ("slow-head", "slow heads"),
            ("slow-body", "slow bodies"),
        ):
            tally = tallies[name]
            line = f"  {label:<31} {tally.line()}"
            if tally.lasted:
                line += (
                    f"; answered or cut off after {statistics.median(tally.lasted):.1f} s median,"
                    f" {max(tally.lasted):.1f} s at most"
                )
            say(line)
        answered_as_expected = (
            set(tallies["header"].answers) <= {"431"}
            and set(tallies["body-length"].answers) <= {"413"}
            and set(tallies["body-chunked"].answers) <= {"413"}
            and set(tallies["slow-head"].answers) == {"408"}
            and set(tallies["slow-body"].answers) == {"408"}
        )
        say(
            "  every attacker refused as it should (431, 413, 408): "
            + ("OK" if answered_as_expected else "MISSED")
        )

        say("the 422 of unknown keys (authenticated POST /v1/projects):")
        for label, (body, keys) in (
            ("1 MiB", unknown_keys_of_size(MIB)),
            ("9,999 keys", (unknown_keys(9_999), 9_999)),
        ):
            cost = cost_of(port, pid, token, body)
            say(
                f"  {label:<12} ({keys:,} keys, {len(body) / 1024:,.0f} KiB): {cost.status}"
                f" in {cost.seconds:.2f} s,"
                f" answer {cost.answer_bytes:,} bytes ({cost.answer_bytes / len(body):.3f}x the body),"
                f" VmRSS +{cost.growth_kib / 1024:.1f} MiB while it ran"
            )
    return within and answered_as_expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="how long the attack lasts (default 30, at least 20)"
    )
    parser.add_argument(
        "--source", type=Path, default=ROOT, help="the checkout whose API to run (default: this one)"
    )
    args = parser.parse_args()
    if args.seconds < 20:
        parser.error("--seconds must be at least 20: the slow clients are cut off after 10 s or more")
    # SIGTERM unwinds like Ctrl-C, so the API process and the temporary directory are cleaned up
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    workdir = Path(tempfile.mkdtemp(prefix="kaas-bench-limits-"))
    try:
        ok = run(args.source.resolve(), args.seconds, workdir)
    except KeyboardInterrupt:
        print("interrupted; everything stopped and cleaned up", file=sys.stderr)
        sys.exit(130)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
