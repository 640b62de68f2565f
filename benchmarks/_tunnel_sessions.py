"""The idle-session phases of ``benchmarks/tunnel.py``, and the process helpers both share.

Owned by the tunnel benchmark; nothing else imports it. One phase of N sessions, on a FRESH tunnel-server
process (``kaas tunnel`` as shipped, fixed loopback ports so it can be restarted where the agents dial):

1. Memory: VmRSS idle, with a tenth of the agents live, with all of them live (live = both
   ``cluster_agents.connected`` and the Redis registry say so); KiB per session overall and marginal.
2. Hold: every session must stay live, under its first session id, for ``hold`` seconds (longer than the
   tunnel's dead-peer timeout, so keep-alives are what keeps them). Sampled every second; a session that
   was live and then was not, or came back under another session id, is a drop. Target: 0 drops.
3. Loop lag: how late the tunnel server's loop (its ``kaas_tunnel_event_loop_lag_seconds`` histogram,
   during the hold) and each agents process's loop (``agents.tunnel.loop_lag``, written by the rig) ran.
4. Reconnect: SIGKILL the tunnel server, start a new one on the same ports at once (as a supervisor
   would), and time each agent from the kill to its new session (``cluster_agents.connected_at`` of a new
   session id, and in the registry). Reports p50/p95/max (target: all within ``RECONNECT_BOUND_SECONDS``),
   the busiest second of arrivals and the database's commits meanwhile: jittered backoff spreads the
   herd, the server's thread pool bounds what reaches the database at once.

The agents run with the agent's default reconnect backoff (full jitter, 1 s doubling to 60 s), in several
processes of ``per_process`` agents each (``_tunnel_rig.py agents``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from benchmarks._rows import Row, record
from kaas_core.db.models import ClusterAgent
from kaas_core.tunnel_registry import KEY_PREFIX

ROOT = Path(__file__).resolve().parent.parent
RIG = [sys.executable, str(ROOT / "benchmarks" / "_tunnel_rig.py")]
TUNNEL_STARTED = re.compile(r"agents at (?P<tunnel>ws://\S+), internal endpoint at (?P<internal>http://\S+)")
METRICS_TOKEN = "bench-metrics-token-" + "0123456789abcdef" * 2
KIB_PER_SESSION_TARGET = 40.0  # issue 13: 5,000 sessions at ≤ 40 KiB each
RECONNECT_BOUND_SECONDS = 30.0
LAG_METRIC = "kaas_tunnel_event_loop_lag_seconds"

Say = Callable[[str], None]


# --- processes, ports, readiness ---------------------------------------------------------------------


@contextmanager
def child(args: list[str], *, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process in its own session (Ctrl-C reaches only us); SIGTERM, then SIGKILL, at the end."""
    with log.open("ab") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM) -> bool:
    """``sig``, then SIGKILL after 30 s; True when it stopped by itself."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return False
    return True


def wait_until(
    what: str, check: Callable[[], Any], *, proc: subprocess.Popen[bytes] | None, timeout: float
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode} (see its log)")
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not within {timeout:.0f}s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TunnelProcess:
    proc: subprocess.Popen[bytes]
    tunnel_url: str
    internal_url: str


def start_tunnel_server(
    env: dict[str, str], log: Path, *, internal_secret: str, tunnel_port: int = 0, internal_port: int = 0
) -> TunnelProcess:
    """``kaas tunnel`` in its own process; ports 0 are picked by the OS and read back from its startup
    line. The caller stops it (``stop_process``)."""
    child_env = {
        **env,
        "KAAS_TUNNEL_HOST": "127.0.0.1",
        "KAAS_TUNNEL_PORT": str(tunnel_port),
        "KAAS_INTERNAL_HOST": "127.0.0.1",
        "KAAS_INTERNAL_PORT": str(internal_port),
        "KAAS_TUNNEL_INTERNAL_SECRET": internal_secret,
        "KAAS_METRICS_TOKEN": METRICS_TOKEN,
    }
    with log.open("ab") as out:
        start = out.tell()
        proc = subprocess.Popen(
            [*RIG, "tunnel"], env=child_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def started() -> re.Match[str] | None:
        with log.open("rb") as handle:
            handle.seek(start)
            return TUNNEL_STARTED.search(handle.read().decode(errors="replace"))

    try:
        found = wait_until("the tunnel server", started, proc=proc, timeout=60)
    except BaseException:
        stop_process(proc)
        raise
    return TunnelProcess(proc=proc, tunnel_url=found["tunnel"], internal_url=found["internal"])


@contextmanager
def tunnel_server(env: dict[str, str], log: Path, *, internal_secret: str) -> Iterator[TunnelProcess]:
    """``kaas tunnel`` on OS-picked ports until the block ends."""
    log.unlink(missing_ok=True)
    server = start_tunnel_server(env, log, internal_secret=internal_secret)
    try:
        yield server
    finally:
        stop_process(server.proc)


# --- what is live --------------------------------------------------------------------------------------


def connected_in_db(engine: sa.Engine, cluster_ids: list[str]) -> int:
    with engine.connect() as conn:
        count = conn.scalar(
            sa.select(sa.func.count())
            .select_from(ClusterAgent)
            .where(ClusterAgent.connected.is_(True), ClusterAgent.cluster_id.in_(cluster_ids))
        )
    return int(count or 0)


def reported_in_db(engine: sa.Engine, cluster_ids: list[str]) -> int:
    """Sessions whose first status report arrived (the agent's one burst of work after connecting)."""
    with engine.connect() as conn:
        count = conn.scalar(
            sa.select(sa.func.count())
            .select_from(ClusterAgent)
            .where(ClusterAgent.kubernetes_version.is_not(None), ClusterAgent.cluster_id.in_(cluster_ids))
        )
    return int(count or 0)


def registry_ids(client: redis.Redis) -> set[str]:
    return {
        (key.decode() if isinstance(key, bytes) else str(key)).removeprefix(KEY_PREFIX)
        for key in client.scan_iter(match=KEY_PREFIX + "*", count=1000)
    }


def in_registry(client: redis.Redis, cluster_ids: list[str]) -> int:
    return len(set(cluster_ids) & registry_ids(client))


@dataclass(frozen=True)
class AgentRow:
    session_id: str | None
    connected: bool
    connected_at: datetime | None


def agent_rows(engine: sa.Engine, cluster_ids: list[str]) -> dict[str, AgentRow]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                ClusterAgent.cluster_id,
                ClusterAgent.session_id,
                ClusterAgent.connected,
                ClusterAgent.connected_at,
            ).where(ClusterAgent.cluster_id.in_(cluster_ids))
        ).all()
    return {cid: AgentRow(session_id=sid, connected=bool(up), connected_at=at) for cid, sid, up, at in rows}


def database_commits(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        value = conn.scalar(
            sa.text("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        )
    return int(value or 0)


# --- process measurements ----------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return f"{soft} (hard {hard})"
    return "?"


def scrape(server: TunnelProcess) -> list[Any]:
    response = httpx.get(
        server.internal_url + "/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        timeout=30,
        trust_env=False,
    )
    response.raise_for_status()
    return [sample for family in text_string_to_metric_families(response.text) for sample in family.samples]


def lag_buckets(server: TunnelProcess) -> dict[float, float]:
    """The tunnel server's loop-lag histogram: upper bound -> cumulative count."""
    return {
        float(sample.labels["le"]): sample.value
        for sample in scrape(server)
        if sample.name == LAG_METRIC + "_bucket"
    }


def refused_busy(server: TunnelProcess) -> int:
    return int(sum(s.value for s in scrape(server) if s.name == "kaas_tunnel_dials_refused_busy_total"))


def describe_lag_delta(before: dict[float, float], after: dict[float, float]) -> str:
    """p50, p99 and max of the samples between two scrapes, each as the histogram bucket it falls in."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return "no samples"

    def quantile(fraction: float) -> str:
        for bound, cumulative in zip(bounds, counts, strict=True):
            if cumulative >= fraction * total:
                return "≤ " + ("∞" if math.isinf(bound) else f"{bound * 1000:g} ms")
        return "?"

    highest = next(b for b, c in zip(bounds, counts, strict=True) if c >= total)
    top = "∞" if math.isinf(highest) else f"{highest * 1000:g} ms"
    return f"{int(total)} samples: p50 {quantile(0.5)}, p99 {quantile(0.99)}, max ≤ {top}"


def read_agent_lag(files: list[Path]) -> str:
    parts = []
    for path in files:
        if not path.exists():
            parts.append("(none yet)")
            continue
        lag = json.loads(path.read_text())
        parts.append(
            f"p50 {lag['p50'] * 1000:.0f} ms p99 {lag['p99'] * 1000:.0f} ms max {lag['max'] * 1000:.0f} ms"
        )
    return "; ".join(parts)


# --- one phase -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fleet:
    """What every phase shares: the database, Redis, the children's environment, the stand-in."""

    engine: sa.Engine
    redis_client: redis.Redis
    env: dict[str, str]
    kubeconfig: Path
    workdir: Path
    internal_secret: str
    say: Say


def start_agents(
    fleet: Fleet, *, label: str, tunnel_url: str, agents: list[tuple[str, str]], per_process: int
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    """``agents`` spread over processes of at most ``per_process``; returns each with its lag file."""
    started = []
    for index in range(0, len(agents), per_process):
        name = f"{label}-{index // per_process}"
        spec = fleet.workdir / f"agents-{name}.json"
        lag_file = fleet.workdir / f"agents-{name}.lag.json"
        spec.write_text(
            json.dumps(
                {
                    "tunnel_url": tunnel_url,
                    "kubeconfig": str(fleet.kubeconfig),
                    "agents": agents[index : index + per_process],
                    "lag_file": str(lag_file),
                }
            )
        )
        log = fleet.workdir / f"agents-{name}.log"
        out = log.open("ab")
        proc = subprocess.Popen(
            [*RIG, "agents", str(spec), str(fleet.workdir / f"agents-{name}.ready")],
            env=fleet.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        started.append((proc, lag_file))
    return started


def run_phase(fleet: Fleet, clusters: list[tuple[str, str]], *, hold: float, per_process: int) -> bool:
    """One phase of ``len(clusters)`` sessions; prints its report and returns whether every target held."""
    say, engine, redis_client = fleet.say, fleet.engine, fleet.redis_client
    n = len(clusters)
    ids = [cluster_id for cluster_id, _ in clusters]
    tunnel_port, internal_port = free_port(), free_port()
    log = fleet.workdir / f"tunnel-{n}.log"
    with ExitStack() as stack:
        server = start_tunnel_server(
            fleet.env,
            log,
            internal_secret=fleet.internal_secret,
            tunnel_port=tunnel_port,
            internal_port=internal_port,
        )
        servers = [server]

        def stop_servers() -> None:
            for one in servers:
                stop_process(one.proc)

        stack.callback(stop_servers)
        time.sleep(2)
        rss_idle = rss_kib(server.proc.pid)
        fds_idle = open_fds(server.proc.pid)
        limit = fd_limit(server.proc.pid)
        tenth = max(1, n // 10)
        marks: list[tuple[int, int]] = []
        connect_seconds = 0.0
        cpu_before = cpu_seconds(server.proc.pid)
        agent_procs: list[tuple[subprocess.Popen[bytes], Path]] = []

        def stop_agents() -> None:
            for proc, _ in agent_procs:
                stop_process(proc)

        stack.callback(stop_agents)
        for label, group, upto in (("first", clusters[:tenth], tenth), ("rest", clusters[tenth:], n)):
            agent_procs += start_agents(
                fleet,
                label=f"{n}-{label}",
                tunnel_url=server.tunnel_url,
                agents=group,
                per_process=per_process,
            )
            live_ids = ids[:upto]

            def all_live(live_ids: list[str] = live_ids, procs: list[Any] = agent_procs) -> bool:
                for proc, _ in procs:
                    if proc.poll() is not None:
                        raise RuntimeError(f"an agents process exited with {proc.returncode} (see its log)")
                return connected_in_db(engine, live_ids) == len(live_ids) and in_registry(
                    redis_client, live_ids
                ) == len(live_ids)

            started = time.monotonic()
            wait_until(
                f"{len(live_ids)} agent sessions live", all_live, proc=server.proc, timeout=120 + n / 10
            )
            connect_seconds += time.monotonic() - started
            say(f"  {len(live_ids):>5} sessions live after {time.monotonic() - started:.1f} s")
            time.sleep(5)  # the first status reports (one burst per agent) settle
            marks.append((len(live_ids), rss_kib(server.proc.pid)))
        (n_tenth, rss_tenth), (n_all, rss_all) = marks
        cpu_connect = cpu_seconds(server.proc.pid) - cpu_before  # connects, first reports, 5 s idle twice
        reported = reported_in_db(engine, ids)
        fds_all = open_fds(server.proc.pid)

        # --- hold ---
        first = agent_rows(engine, ids)
        lag_before = lag_buckets(server)
        cpu_hold_start = cpu_seconds(server.proc.pid)
        lowest_live = n
        dropped: set[str] = set()
        hold_end = time.monotonic() + hold
        while time.monotonic() < hold_end:
            rows = agent_rows(engine, ids)
            registered = registry_ids(redis_client)
            live = {
                cid
                for cid, row in rows.items()
                if row.connected and row.session_id == first[cid].session_id and cid in registered
            }
            dropped |= set(ids) - live
            lowest_live = min(lowest_live, len(live))
            time.sleep(1.0)
        cpu_hold = cpu_seconds(server.proc.pid) - cpu_hold_start
        lag_hold = describe_lag_delta(lag_before, lag_buckets(server))
        agent_lag = read_agent_lag([lag for _, lag in agent_procs])

        # --- reconnect after a kill -9 of the tunnel server ---
        before = agent_rows(engine, ids)
        commits_before = database_commits(engine)
        killed_at = time.time()
        killed_monotonic = time.monotonic()
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        replacement = start_tunnel_server(
            fleet.env,
            log,
            internal_secret=fleet.internal_secret,
            tunnel_port=tunnel_port,
            internal_port=internal_port,
        )
        servers.append(replacement)
        restarted_after = time.monotonic() - killed_monotonic
        back: dict[str, float] = {}

        def all_back() -> bool:
            registered = registry_ids(redis_client)
            for cid, row in agent_rows(engine, ids).items():
                if (
                    cid not in back
                    and row.connected
                    and row.session_id != before[cid].session_id
                    and row.connected_at is not None
                    and cid in registered
                ):
                    back[cid] = row.connected_at.timestamp() - killed_at
            return len(back) == n

        with contextlib.suppress(RuntimeError):
            wait_until("every agent back", all_back, proc=replacement.proc, timeout=120 + n / 20)
        commits = database_commits(engine) - commits_before
        cpu_reconnect = cpu_seconds(replacement.proc.pid)
        busy = refused_busy(replacement)
        times = sorted(back.values())
        arrivals = Counter(math.floor(t) for t in times)

        # --- report ---
        say(f"  a fresh tunnel-server process (pid {server.proc.pid}), fd limit {limit}")
        say(f"  idle:                 VmRSS {rss_idle / 1024:8.1f} MiB, {fds_idle} fds")
        say(f"  {n_tenth:>5} sessions:       VmRSS {rss_tenth / 1024:8.1f} MiB")
        say(
            f"  {n_all:>5} sessions:       VmRSS {rss_all / 1024:8.1f} MiB, {fds_all} fds "
            f"(live in cluster_agents and in the registry: {n_all}; first status report recorded: {reported})"
        )
        per_session = (rss_all - rss_idle) / n_all
        marginal = (rss_all - rss_tenth) / max(1, n_all - n_tenth)
        memory_ok = per_session <= KIB_PER_SESSION_TARGET
        say(
            f"  KiB per session:      {per_session:8.1f} overall, {marginal:.1f} marginal   "
            f"target ≤ {KIB_PER_SESSION_TARGET:g}   {'OK' if memory_ok else 'MISSED'}"
        )
        hold_ok = not dropped
        say(
            f"  hold {hold:.0f} s:            {len(dropped)} session(s) dropped or replaced,"
            f" fewest live at once {lowest_live}/{n}   target 0   {'OK' if hold_ok else 'MISSED'}"
        )
        say(
            f"  tunnel server CPU:    {cpu_connect:.1f} s to connect them ({cpu_connect / n * 1000:.1f} ms a"
            f" session); {cpu_hold:.1f} s over the {hold:.0f} s hold ({cpu_hold / hold:.1%} of a core)"
        )
        say(f"  loop lag, tunnel server during the hold: {lag_hold}")
        say(f"  loop lag, agents processes (last 60 s):  {agent_lag}")
        reconnect_ok = len(times) == n and times[-1] <= RECONNECT_BOUND_SECONDS
        if times:
            p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
            say(
                f"  reconnect after kill -9 (new server up {restarted_after:.1f} s after the kill): "
                f"{len(times)}/{n} back, p50 {statistics.median(times):.1f} s, p95 {p95:.1f} s,"
                f" max {times[-1]:.1f} s   target all ≤ {RECONNECT_BOUND_SECONDS:g} s"
                f"   {'OK' if reconnect_ok else 'MISSED'}"
            )
            peak_second, peak = max(arrivals.items(), key=lambda item: item[1])
            say(
                f"  arrivals: busiest second {peak_second}-{peak_second + 1} s after the kill with {peak}"
                f" sessions ({peak / n:.0%}); {commits} database commits until all were back;"
                f" {busy} dials refused busy (503, Retry-After); the new server's CPU {cpu_reconnect:.1f} s"
            )
            # where the herd came back: a gap says the server waited for agents told to come later
            buckets = Counter(5 * math.floor(t / 5) for t in times)
            say(
                "  arrivals per 5 s after the kill: "
                + ", ".join(f"{t}-{t + 5} s {buckets[t]}" for t in range(0, 5 + int(times[-1]), 5))
            )
        else:
            say("  reconnect after kill -9: no agent came back   MISSED")
        say(
            f"  (agents processes: {len(agent_procs)}, VmRSS "
            + ", ".join(f"{rss_kib(p.pid) / 1024:.0f}" for p, _ in agent_procs if p.poll() is None)
            + " MiB)"
        )
        record(
            Row(
                key="tunnel.sessions.kib",
                label=f"tunnel process RSS per idle session at {n:,}",
                ours=per_session,
                baseline=None,
                unit="KiB",
                goal=f"≤ {KIB_PER_SESSION_TARGET:g} KiB",
                met=memory_ok and hold_ok,
                detail=f"marginal {marginal:.1f} KiB; {len(dropped)} dropped in the {hold:.0f} s hold",
            ),
            Row(
                key="tunnel.sessions.reconnect",
                label=f"all {n:,} agents back after kill -9 (max) / first connect",
                ours=times[-1] if len(times) == n else float("inf"),
                baseline=connect_seconds,
                unit="s",
                goal=f"≤ {RECONNECT_BOUND_SECONDS:g} s",
                met=reconnect_ok,
                detail=(
                    f"{len(times)}/{n} back, p50 {statistics.median(times):.1f} s; {busy} dials refused busy"
                    if times
                    else "no agent came back"
                ),
            ),
        )
        # a SIGTERM with every agent connected: GOAWAY to each, each session recorded gone
        stopping = time.monotonic()
        stopped = stop_process(replacement.proc)
        servers.remove(replacement)
        say(
            f"  SIGTERM with {len(back)} sessions: "
            + (f"stopped in {time.monotonic() - stopping:.1f} s" if stopped else "still running after 30 s")
        )
    return memory_ok and hold_ok and reconnect_ok
