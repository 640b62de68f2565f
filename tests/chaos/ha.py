"""HA proven with processes: replicas of every kaas part behind balancers, one of each kind killed (SIGKILL).

Owned by ``tests/chaos``; ``test_ha.py`` runs the short form in CI (one kill of each kind); the long form
runs by hand::

    .venv/bin/python -m tests.chaos.ha --kills 50 [--replicas 3 --workers 3 --lifecycles 12]

It is the chaos campaign (``tests.chaos.campaign``: its rig, lifecycles, worker-kill recovery measure and
audit) with the parts a provider cluster runs as replicas (issue 14): ``replicas`` ``kaas api`` processes
behind one balancer (``tests.chaos.balancer``, health-checked on ``/healthz``), ``replicas`` ``kaas tunnel``
processes behind another (the agents' ``tunnel_url`` is the balancer's: an agent whose tunnel process died
dials again and lands on a live one; the k8s proxy finds it through the Redis tunnel registry), ``workers``
``kaas worker`` processes and two ``kaas beat`` processes (the leader lease, ``provider.beat_leader``).

Besides the campaign's lifecycles, ``steady`` clusters live through the whole run, and kubectl-like clients
GET with a kubeconfig token of each (``/k8s/clusters/{id}/api/v1/...``), half of them through a balancer in
front of the tunnel processes' own k8s proxies (what the ingress sends ``/k8s`` to in production), half
through the API balancer's k8s proxy.

Kills (seeded) among ``api`` (any replica), ``tunnel`` (the replica holding the most agents), ``worker``
(the campaign's: mid-pass when it can) and ``beat`` (the leader); each victim is started again after a
random pause, as a supervisor would. Measured and asserted:

- requests: every client (the lifecycles' and the kubectl ones) retries a request once, after
  ``RETRY_DELAY_SECONDS``, when the connection failed or the answer was 502/503 (what a client does anyway
  behind a balancer); a request that fails again, or answers another 5xx, is *failed*: there must be none;
- agents: per agent of a killed tunnel process, seconds from the kill until its new session's claim in the
  tunnel registry (``kaas_core.tunnel_registry``), within ``AGENT_RECONNECT_BOUND_SECONDS``;
- beats: the leader key names one running beat before and after each beat kill, and the beats' own logs
  (celery's "Sending due task" lines, one log per process) never interleave two senders;
- the campaign's invariants (leaks, stuck clusters and operations, node counts) and its worker-kill bound.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import Cluster
from kaas_core.tunnel_registry import KEY_PREFIX
from provider.beat_leader import LEADER_KEY
from provider.config import ProviderSettings
from tests.chaos.campaign import (
    FLAVOR,
    PROJECT,
    REGION,
    Campaign,
    Kill,
    Options,
    Report,
    _port_open,
)
from tests.chaos.lifecycle import (
    ApiUser,
    LifecycleResult,
    ServerErrors,
    create_cluster,
    delete_cluster,
    wait_phase,
)
from tests.chaos.rig import KAAS, Part, Rig, RigError, free_port, http_answers, wait_for

HA_KINDS = ("api", "tunnel", "worker", "beat")
RETRYABLE_STATUSES = frozenset({502, 503})
RETRY_DELAY_SECONDS = 0.5
AGENT_RECONNECT_BOUND_SECONDS = 30.0
SENDING = "Sending due task"  # celery.beat's line for every message a beat sends


@dataclass(frozen=True)
class HaOptions(Options):
    replicas: int = 3  # API and tunnel processes each
    workers: int = 2
    beats: int = 2
    steady: int = 2  # clusters that live through the run, the kubectl clients' targets
    kubectl_clients: int = 2
    # after the kills, every process restarted one at a time with SIGTERM (a rolling restart, as a
    # Deployment's rollout does) while the kubectl clients run; a tunnel replica's graceful stop keeps its
    # agents' claims, and the API's k8s proxy follows each agent to its new session
    rolling_restart: bool = True


# --- the clients' one retry ------------------------------------------------------------------------------


@dataclass
class RequestTally:
    """Requests sent, retried once, failed after their retry; across threads."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, attempt: Callable[[], httpx.Response | None], *, what: str) -> httpx.Response | None:
        """``attempt`` once, and once more after ``RETRY_DELAY_SECONDS`` if it failed retryably."""
        response = attempt()
        retried = response is None or response.status_code in RETRYABLE_STATUSES
        if retried:
            time.sleep(RETRY_DELAY_SECONDS)
            response = attempt()
        failed = response is None or response.status_code >= 500
        with self._lock:
            self.sent += 1
            self.retried += retried
            if failed:
                self.failed += 1
                status = "no answer" if response is None else f"{response.status_code} {response.text[:120]}"
                self.failures.append(f"{time.strftime('%H:%M:%S')} {what}: {status}")
        return response

    def line(self, name: str) -> str:
        return f"{name}: {self.sent} sent, {self.retried} retried once, {self.failed} failed after the retry"


class RetryingApiUser(ApiUser):
    """The lifecycles' user, whose every request goes through ``RequestTally.send``; only an answer after
    the retry counts as the campaign's 5xx (``errors``)."""

    def __init__(self, *, tally: RequestTally, errors: ServerErrors, **kwargs: Any) -> None:
        super().__init__(errors=ServerErrors(), **kwargs)  # every attempt's 5xx, retried ones included
        self.tally = tally
        self.final_errors = errors

    def once(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        response = self.tally.send(
            lambda: super(RetryingApiUser, self).once(method, path, **kwargs), what=f"{method} {path}"
        )
        if response is not None:
            self.final_errors.hook(response)
        return response


class KubectlTraffic:
    """kubectl-like clients: GETs through the k8s proxy, each cluster with its own kubeconfig token."""

    PATHS = ("api/v1/nodes", "api/v1/namespaces/kube-system/serviceaccounts", "version")

    def __init__(self, *, base_url: str, tally: RequestTally, clients: int) -> None:
        self.base_url = base_url
        self.tally = tally
        self.clients = clients
        self.targets: dict[str, str] = {}  # cluster id -> kubeconfig token
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for number in range(self.clients):
            thread = threading.Thread(
                target=self._run, args=(number,), name=f"ha-kubectl-{number}", daemon=True
            )
            thread.start()
            self.threads.append(thread)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def _run(self, number: int) -> None:
        with httpx.Client(
            base_url=self.base_url, timeout=httpx.Timeout(30.0, connect=5.0), trust_env=False
        ) as client:
            turn = number
            while not self.stop.is_set():
                for cluster_id, token in list(self.targets.items()):
                    path = f"/k8s/clusters/{cluster_id}/{self.PATHS[turn % len(self.PATHS)]}"
                    turn += 1

                    def attempt(path: str = path, token: str = token) -> httpx.Response | None:
                        try:
                            return client.get(path, headers={"Authorization": f"Bearer {token}"})
                        except httpx.TransportError:
                            return None

                    self.tally.send(attempt, what=f"GET {path}")
                self.stop.wait(0.1)


# --- what the report adds --------------------------------------------------------------------------------


@dataclass
class TunnelKill:
    replica: str
    agents: int
    reconnected: dict[str, float]  # cluster id -> seconds from the kill to its new session's claim
    missing: list[str]  # agents that did not reconnect within the watch


@dataclass
class BeatKill:
    leader_before: str  # the key's holder (host:pid)
    leader_after: str | None
    running_after: bool  # the new holder is a running beat process
    takeover_seconds: float
    took_over_at: float = 0.0  # time.time() when the new holder was seen


@dataclass
class BeatSends:
    """The beats' sends, from their logs: one log per process, runs of one sender at a time."""

    sends: int = 0
    runs: list[str] = field(default_factory=list)  # the sender (log file) of each run of sends, in order

    @property
    def interleaved(self) -> list[str]:
        """Senders that sent in two separate runs: another beat sent in between (never two at once)."""
        return sorted({one for one in self.runs if self.runs.count(one) > 1})


@dataclass
class RollingRestart:
    processes: int
    seconds: float
    sent: int  # kubectl requests through kaas while it ran
    retried: int
    failed: int
    ended_at: float = 0.0  # wall clock: the beats' handovers of the restart are over by then


@dataclass
class HaReport(Report):
    replicas: int = 0
    api_requests: RequestTally = field(default_factory=RequestTally)
    k8s_requests: RequestTally = field(default_factory=RequestTally)
    tunnel_kills: list[TunnelKill] = field(default_factory=list)
    beat_kills: list[BeatKill] = field(default_factory=list)
    beat_sends: BeatSends = field(default_factory=BeatSends)
    beats_active: int = 0  # distinct senders over the last sends, at the end
    reconnect_bound: float = AGENT_RECONNECT_BOUND_SECONDS
    rolling_restart: RollingRestart | None = None

    @property
    def reconnects(self) -> list[float]:
        return sorted(s for kill in self.tunnel_kills for s in kill.reconnected.values())

    @property
    def agents_missing(self) -> list[str]:
        return [c for kill in self.tunnel_kills for c in kill.missing]

    @property
    def ha_problems(self) -> list[str]:
        problems = []
        if self.api_requests.failed or self.k8s_requests.failed:
            problems.append("requests failed after their retry")
        if self.agents_missing or any(s > self.reconnect_bound for s in self.reconnects):
            problems.append(f"an agent did not reconnect within {self.reconnect_bound:g} s")
        if not all(k.running_after for k in self.beat_kills):
            problems.append("no running beat took the lead after a beat kill")
        if self.beat_sends.interleaved:
            problems.append(f"two beats sent at once: {self.beat_sends.interleaved}")
        if self.beats_active != 1:
            problems.append(f"{self.beats_active} beats active at the end")
        return problems

    @property
    def passed(self) -> bool:
        return super().passed and not self.ha_problems

    def ha_lines(self) -> list[str]:
        reconnects = self.reconnects
        out = [
            f"HA: {self.replicas} API and {self.replicas} tunnel replicas behind balancers",
            self.api_requests.line("requests (API)"),
            self.k8s_requests.line("requests (k8s proxy)"),
        ]
        if reconnects:
            out.append(
                f"agents' reconnects after {len(self.tunnel_kills)} tunnel kill(s): {len(reconnects)} agents,"
                f" p50 {statistics.median(reconnects):.1f} s, max {reconnects[-1]:.1f} s"
                f" (bound {self.reconnect_bound:g} s), {len(self.agents_missing)} never"
            )
        else:
            out.append("agents' reconnects: no agent was on a killed tunnel process")
        for kill in self.beat_kills:
            out.append(
                f"beat kill: leader {kill.leader_before} -> {kill.leader_after}"
                f" after {kill.takeover_seconds:.1f} s ({'a running beat' if kill.running_after else 'NONE'})"
            )
        out.append(
            f"beats active at the end: {self.beats_active}; {self.beat_sends.sends} sends in"
            f" {len(self.beat_sends.runs)} run(s) of one sender, interleaved senders:"
            f" {len(self.beat_sends.interleaved)}"
        )
        restart = self.rolling_restart
        if restart is not None:
            out.append(
                f"rolling restart (SIGTERM, one at a time): {restart.processes} processes in"
                f" {restart.seconds:.0f} s; k8s proxy requests meanwhile: {restart.sent} sent,"
                f" {restart.retried} retried once, {restart.failed} failed after the retry"
            )
        out += [
            f"  failed: {line}" for line in (self.api_requests.failures + self.k8s_requests.failures)[:20]
        ]
        out += [f"  HA problem: {problem}" for problem in self.ha_problems]
        return out

    def lines(self) -> list[str]:
        base = super().lines()
        return base[:-1] + self.ha_lines() + base[-1:]


# --- the harness -----------------------------------------------------------------------------------------


class HaCampaign(Campaign):
    def __init__(self, options: HaOptions, *, workdir: Path) -> None:
        super().__init__(options, workdir=workdir)
        self.ha = options
        bound = self.report.bound
        self.report = HaReport(cloud=options.cloud, seed=options.seed, bound=bound, replicas=options.replicas)
        self.ha_report = self.report
        self.tunnel_address: dict[str, str] = {}  # replica -> its internal address (the registry's)
        self.redis = redis.Redis.from_url(options.redis_url, decode_responses=True)
        self.traffic: list[KubectlTraffic] = []
        self.steady: list[str] = []

    # --- set-up ---

    def build_rig(self, *, cloud: Any, database_url: str, blackhole_port: int, sim_port: int | None) -> Rig:
        rig = super().build_rig(
            cloud=cloud, database_url=database_url, blackhole_port=blackhole_port, sim_port=sim_port
        )
        for single in ("api", "tunnel", "beat"):
            del rig.parts[single]
        n = self.ha.replicas
        api_ports = [free_port() for _ in range(n)]
        tunnel_ports = [free_port() for _ in range(n)]
        k8s_ports = [free_port() for _ in range(n)]
        api_lb, tunnel_lb, k8s_lb = free_port(), free_port(), free_port()
        self.api_url = f"http://127.0.0.1:{api_lb}"
        self.k8s_url = f"http://127.0.0.1:{k8s_lb}"  # the ingress's /k8s: the tunnel processes' k8s proxy
        rig.env["KAAS_TUNNEL_URL"] = f"ws://127.0.0.1:{tunnel_lb}/v1/tunnel"  # in every node's user-data
        for index, port in enumerate(api_ports):
            rig.add(
                Part(
                    f"api-{index}",
                    [*KAAS, "api", "--port", str(port)],
                    ready=http_answers(f"http://127.0.0.1:{port}/healthz"),
                )
            )
        for index, (port, k8s_port) in enumerate(zip(tunnel_ports, k8s_ports, strict=True)):
            internal = free_port()
            name = f"tunnel-{index}"
            self.tunnel_address[name] = f"http://127.0.0.1:{internal}"
            rig.add(
                Part(
                    name,
                    [*KAAS, "tunnel"],
                    ready=lambda port=port: _port_open(port),  # type: ignore[misc]
                    env={
                        "KAAS_TUNNEL_PORT": str(port),
                        "KAAS_INTERNAL_PORT": str(internal),
                        "KAAS_K8S_PROXY_PORT": str(k8s_port),
                    },
                )
            )
        for index in range(self.ha.beats):
            # INFO and JSON: the logs show every send, with its time (BeatSends)
            rig.add(
                Part(
                    f"beat-{index}", [*KAAS, "beat"], env={"KAAS_LOG_LEVEL": "INFO", "KAAS_LOG_JSON": "true"}
                )
            )
        balancer = [sys.executable, "-m", "tests.chaos.balancer"]
        rig.add(
            Part(
                "lb-api",
                [*balancer, "--port", str(api_lb), "--health-path", "/healthz"]
                + [f"--backend=127.0.0.1:{port}" for port in api_ports],
                ready=lambda: _port_open(api_lb),
            )
        )
        rig.add(
            Part(
                "lb-tunnel",
                [*balancer, "--port", str(tunnel_lb)]
                + [f"--backend=127.0.0.1:{port}" for port in tunnel_ports],
                ready=lambda: _port_open(tunnel_lb),
            )
        )
        rig.add(
            Part(
                "lb-k8s",
                [*balancer, "--port", str(k8s_lb)] + [f"--backend=127.0.0.1:{port}" for port in k8s_ports],
                ready=lambda: _port_open(k8s_lb),
            )
        )
        return rig

    def start_parts(self, rig: Rig) -> None:
        self.rig = rig
        for name in sorted(n for n in rig.parts if n.startswith("tunnel-")):
            rig.start(name)
        rig.start("lb-tunnel")
        rig.start("lb-k8s")
        for name in sorted(n for n in rig.parts if n.startswith(("api-", "beat-"))):
            if name != "api-doomed":
                rig.start(name)
        rig.start("lb-api")
        rig.start("nodes")
        for _ in range(self.ha.workers):
            rig.start("worker")

    def make_user(self) -> ApiUser:
        return RetryingApiUser(
            tally=self.ha_report.api_requests,
            errors=self.errors,
            base_url=self.api_url,
            token=self.token,
            project=PROJECT,
        )

    def before_lifecycles(
        self, stack: ExitStack, *, rig: Rig, factory: sessionmaker[Session], user: ApiUser
    ) -> None:
        """The steady clusters, running and with their agents connected, and the kubectl clients on them."""
        self.say(f"{self.ha.steady} steady clusters for the kubectl clients ...")
        ids = [
            create_cluster(
                user, self._body(f"s{index:03d}", index), LifecycleResult(name=f"s{index:03d}"), None
            )
            for index in range(self.ha.steady)
        ]
        for cluster_id in ids:
            wait_phase(user, cluster_id, "running", timeout=self.options.step_timeout)
        self.steady = ids
        targets: dict[str, str] = {}
        for cluster_id in ids:
            kubeconfig = user.reliably("GET", user.clusters_path(f"/{cluster_id}/kubeconfig"))
            kubeconfig.raise_for_status()
            targets[cluster_id] = yaml.safe_load(kubeconfig.text)["users"][0]["user"]["token"]
        # kubectl clients on both k8s proxies: the tunnel processes' own (where the ingress sends /k8s in
        # production) and the API's (kaas up's)
        for base_url in (self.k8s_url, self.api_url):
            traffic = KubectlTraffic(
                base_url=base_url, tally=self.ha_report.k8s_requests, clients=self.ha.kubectl_clients
            )
            traffic.targets.update(targets)
            traffic.start()
            self.traffic.append(traffic)
            stack.callback(traffic.close)

    def _body(self, name: str, index: int) -> dict[str, Any]:
        return {
            "name": name,
            "region": REGION,
            "control_plane": {"count": 1, "flavor": FLAVOR},
            "node_pools": [{"name": "workers", "flavor": FLAVOR, "count": 1}],
            "node_cidr": f"10.255.{index}.0/24",
        }

    rig: Rig | None = None

    def after_lifecycles(self, user: ApiUser) -> None:
        """A rolling restart under the kubectl clients' load; then they stop, and the steady clusters go
        (the audit then finds nothing of them)."""
        if self.ha.rolling_restart and self.rig is not None:
            self.rolling_restart(self.rig)
        for traffic in self.traffic:
            traffic.close()
        for cluster_id in self.steady:
            delete_cluster(user, cluster_id, LifecycleResult(name=cluster_id))
        for cluster_id in self.steady:
            wait_phase(user, cluster_id, "deleted", timeout=self.options.step_timeout)

    def rolling_restart(self, rig: Rig) -> None:
        """Every API, tunnel, worker and beat process in turn: SIGTERM, wait for it to end, start it again
        and wait until it answers, as a rolling update of each Deployment does (one at a time, maxSurge 0).
        The requests the kubectl clients sent meanwhile are counted apart."""
        tally = self.ha_report.k8s_requests
        before = (tally.sent, tally.retried, len(tally.failures))
        names = [
            n
            for prefix in ("api-", "tunnel-", "worker", "beat")
            for n in sorted(rig.parts)
            if n.startswith(prefix)
        ]
        order = [(n, p) for n in names if n != "api-doomed" for p in list(rig.parts[n].running)]
        started = time.monotonic()
        for name, process in order:
            took = rig.terminate(process)
            rig.start(name, timeout=120)
            self.say(f"rolling restart: {name} ended in {took:.1f} s and is back")
        self.ha_report.rolling_restart = RollingRestart(
            processes=len(order),
            seconds=time.monotonic() - started,
            sent=tally.sent - before[0],
            retried=tally.retried - before[1],
            failed=len(tally.failures) - before[2],
            ended_at=time.time(),
        )

    # --- kills ---

    def plan(self) -> list[str]:
        wanted = self.options.kills
        chosen = list(HA_KINDS) if wanted is None or wanted >= len(HA_KINDS) else []
        if wanted is not None:
            chosen += [self.rng.choice(HA_KINDS) for _ in range(wanted - len(chosen))]
        self.rng.shuffle(chosen)
        return chosen

    def kill(self, kind: str, rig: Rig, factory: sessionmaker[Session]) -> Kill | None:
        pause = self.rng.uniform(0.5, 3.0)  # how long a supervisor takes to notice and restart
        if kind == "worker":
            return self.kill_worker(rig, factory, pause=pause)
        if kind == "api":
            name = self.rng.choice(sorted(n for n in rig.parts if n.startswith("api-") and n != "api-doomed"))
            killed_at = rig.kill(rig.parts[name].running[0])
            time.sleep(pause)
            rig.start(name, timeout=120)
            return Kill(kind="api", at=killed_at, detail=f"{name}, restarted after {pause:.1f} s")
        if kind == "tunnel":
            return self.kill_tunnel(rig, factory, pause=pause)
        if kind == "beat":
            return self.kill_beat(rig, pause=pause)
        raise ValueError(f"no such kind of kill: {kind}")

    def registry(self) -> dict[str, dict[str, Any]]:
        """The tunnel registry: cluster id -> its claim (session id, address, connected_at)."""
        found = {}
        for key in self.redis.scan_iter(match=KEY_PREFIX + "*", count=500):
            raw = self.redis.get(key)
            if raw is not None:
                found[str(key).removeprefix(KEY_PREFIX)] = json.loads(raw)
        return found

    def kill_tunnel(self, rig: Rig, factory: sessionmaker[Session], *, pause: float) -> Kill:
        claims = self.registry()
        held = {
            name: {c: claim["session_id"] for c, claim in claims.items() if claim["address"] == address}
            for name, address in self.tunnel_address.items()
        }
        name = max(sorted(held), key=lambda one: len(held[one]))
        affected = held[name]
        killed_at = rig.kill(rig.parts[name].running[0])
        restart = threading.Timer(pause, rig.start, args=(name,), kwargs={"timeout": 120})
        restart.start()
        reconnected: dict[str, float] = {}
        waiting = dict(affected)
        deadline = time.monotonic() + AGENT_RECONNECT_BOUND_SECONDS + 15
        while waiting and time.monotonic() < deadline:
            claims = self.registry()
            for cluster_id, old_session in list(waiting.items()):
                claim = claims.get(cluster_id)
                if claim is not None and claim["session_id"] != old_session:
                    reconnected[cluster_id] = float(claim["connected_at"]) - killed_at
                    del waiting[cluster_id]
            gone = self._gone(factory, set(waiting))  # a lifecycle's cluster deleted meanwhile: no agent
            for cluster_id in gone:
                del waiting[cluster_id]
            time.sleep(0.1)
        restart.join()
        kill = TunnelKill(
            replica=name, agents=len(affected), reconnected=reconnected, missing=sorted(waiting)
        )
        self.ha_report.tunnel_kills.append(kill)
        worst = max(reconnected.values(), default=0.0)
        return Kill(
            kind="tunnel",
            at=killed_at,
            detail=f"{name} held {len(affected)} agent(s): {len(reconnected)} reconnected"
            f" (max {worst:.1f} s), {len(waiting)} never; restarted after {pause:.1f} s",
        )

    def _gone(self, factory: sessionmaker[Session], cluster_ids: set[str]) -> set[str]:
        if not cluster_ids:
            return set()
        with factory() as session:
            rows = session.execute(select(Cluster.id, Cluster.phase).where(Cluster.id.in_(cluster_ids))).all()
        return {cluster_id for cluster_id, phase in rows if phase in ("deleting", "deleted")}

    def leader(self) -> str | None:
        """The leader key's holder, ``host:pid`` (its token is ``host:pid:random``)."""
        token = self.redis.get(LEADER_KEY)
        return None if token is None else str(token).rsplit(":", 1)[0]

    @staticmethod
    def _pid(holder: str | None) -> int | None:
        return None if holder is None else int(holder.rsplit(":", 1)[1])

    def kill_beat(self, rig: Rig, *, pause: float) -> Kill:
        beats = {
            p.pid: (name, p)
            for name, part in rig.parts.items()
            if name.startswith("beat-")
            for p in part.running
        }
        wait_for(lambda: self._pid(self.leader()) in beats, what="a running beat to lead", timeout=30)
        before = self.leader()
        assert before is not None
        name, victim = beats[int(before.rsplit(":", 1)[1])]
        killed_at = rig.kill(victim)
        restart = threading.Timer(pause, rig.start, args=(name,), kwargs={"timeout": 120})
        restart.start()
        after: str | None = None
        with contextlib.suppress(RigError):
            wait_for(
                lambda: self.leader() not in (None, before),
                what="another beat to take the lead",
                timeout=ProviderSettings().beat_lease_seconds + 20,
            )
        after = self.leader()
        restart.join()
        running = {p.pid for n, part in rig.parts.items() if n.startswith("beat-") for p in part.running}
        takeover = time.time() - killed_at if after not in (None, before) else float("inf")
        kill = BeatKill(
            leader_before=before,
            leader_after=after,
            running_after=self._pid(after) in running,
            takeover_seconds=takeover,
            took_over_at=time.time(),
        )
        self.ha_report.beat_kills.append(kill)
        return Kill(
            kind="beat",
            at=killed_at,
            detail=f"leader {name} ({before}); {after} leads after {takeover:.1f} s",
        )

    # --- the audit ---

    def audit(self, rig: Rig, factory: sessionmaker[Session], view: Any) -> None:
        super().audit(rig, factory, view)
        # the beats active at the end: those that sent since the last takeover, over two due-scan intervals
        restart = self.ha_report.rolling_restart
        since = max(
            [kill.took_over_at for kill in self.ha_report.beat_kills]
            + ([restart.ended_at] if restart else []),
            default=0.0,
        )
        interval = ProviderSettings().due_scan_interval_seconds
        time.sleep(max(0.0, since + 2 * interval + 1 - time.time()))
        self.ha_report.beat_sends, self.ha_report.beats_active = beat_sends(
            self.workdir / "logs", since=datetime.fromtimestamp(max(since, time.time() - 4 * interval), UTC)
        )


def beat_sends(logs: Path, *, since: datetime) -> tuple[BeatSends, int]:
    """Every send of every beat process (one log per start), in time order; and how many beats are active at
    the end: over the sends after ``since``, 1 when each beat's sends follow the previous one's (handovers),
    the number of beats when one sends again after another took over."""
    sends: list[tuple[datetime, str]] = []
    for log in sorted(logs.glob("beat-*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if SENDING not in line:
                continue
            with contextlib.suppress(ValueError, KeyError):
                sends.append((datetime.fromisoformat(json.loads(line)["timestamp"]), log.name))
    sends.sort()
    runs: list[str] = []
    for _, sender in sends:
        if not runs or runs[-1] != sender:
            runs.append(sender)
    # after ``since``: one beat active, whatever handovers there were (a lease that lapsed under load passes
    # it on), unless some beat sends again after another took over (then both think they lead)
    runs_after: list[str] = []
    for at, sender in sends:
        if at > since and (not runs_after or runs_after[-1] != sender):
            runs_after.append(sender)
    if not runs_after:
        return BeatSends(sends=len(sends), runs=runs), 0
    alternating = len(runs_after) != len(set(runs_after))
    return BeatSends(sends=len(sends), runs=runs), len(set(runs_after)) if alternating else 1


def run_ha(options: HaOptions) -> HaReport:
    workdir = options.workdir or Path(f"/tmp/kaas-ha-{uuid.uuid4().hex[:8]}")
    workdir.mkdir(parents=True, exist_ok=True)
    report = HaCampaign(options, workdir=workdir).run()
    assert isinstance(report, HaReport)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.ha", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, help="how many (default: one of each kind)")
    parser.add_argument("--lifecycles", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=3, help="lifecycles at once")
    parser.add_argument("--replicas", type=int, default=3, help="API and tunnel processes each")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steady", type=int, default=2, help="clusters the kubectl clients read")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--no-rolling-restart",
        dest="rolling_restart",
        action="store_false",
        help="skip the rolling restart of every process after the kills",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("KAAS_TEST_REDIS_URL", "redis://127.0.0.1:6379/11"),
        help="a Redis database of the harness's own (flushed)",
    )
    parser.add_argument("--workdir", type=Path, help="logs and state (default: a new /tmp/kaas-ha-*)")
    args = parser.parse_args(argv)
    report = run_ha(
        HaOptions(
            kills=args.kills,
            lifecycles=args.lifecycles,
            concurrency=args.concurrency,
            replicas=args.replicas,
            workers=args.workers,
            steady=args.steady,
            seed=args.seed,
            rolling_restart=args.rolling_restart,
            redis_url=args.redis_url,
            workdir=args.workdir,
        )
    )
    print("\n".join(report.lines()), flush=True)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
