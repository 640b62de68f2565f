"""The chaos campaign: cluster lifecycles through the API while the parts of kaas are killed with SIGKILL.

Owned by ``tests/chaos``. ``test_campaign.py`` runs the quick form in CI; the long form runs by hand::

    .venv/bin/python -m tests.chaos.campaign --lifecycles 100 --kills 40            # on simcloud
    .venv/bin/python -m tests.chaos.campaign --lifecycles 8 --kills 10 --cloud real  # the real OpenStack

Every part is a process of its own on loopback (``tests.chaos.rig``), on a PostgreSQL database and a Redis
database of the campaign's own: ``kaas api``, two ``kaas worker --pool threads``, ``kaas beat``, ``kaas
tunnel``, the simulated cloud (``python -m simcloud --persist --durable``; on the real OpenStack, a
throw-away project of its own) and the simulated nodes (``python -m nodesim``: the nodes' agents dial the
tunnel server as a booted node's would). ``concurrency`` lifecycles run at once (``tests.chaos.lifecycle``:
create, scale, delete, through the API, as a user whose answers may be lost).

Kills (seeded: ``--seed``) are spread over the campaign's progress, one every so many lifecycle steps, each
at a random moment: the victim gets SIGKILL and is started again after a random pause, as a supervisor
would. Kinds: ``worker`` (preferably while it holds a cluster's lease: mid-pass), ``beat``, ``tunnel``,
``api``, ``nodes``, ``cloud`` (simcloud only: the shared real cloud is not ours to kill), and the two cases
a timed kill cannot reach: ``api-after-commit`` (an API process whose broker never answers takes one
create: its transaction commits, its send hangs, and it is killed then: nothing was queued, the due-scan
must find the cluster) and ``worker-before-tag`` (a worker dies just before it tags a resource it created:
``tests.chaos.worker``; the resource carries only its description mark).

At the end, the five invariants, each of which must be 0: cloud resources leaked (by tag, description mark
and name prefix, after the leak sweep had its chance), clusters outside a final phase, operations stuck,
API answers with a 5xx status, node counts that disagree (asked for, observed, Ready, rows, servers); and
the recovery bound: after each worker kill, how long until every cluster in flight moved again (a pass
that started after the kill committed; ``tests.chaos.recovery``), p50 and max, against
``KAAS_RECOVERY_BOUND_SECONDS`` (30 s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.users.service import create_user
from kaas_core.db.migrate import upgrade_database
from kaas_core.db.models import (
    Cluster,
    Operation,
    OperationKind,
    Project,
    ProjectMember,
    Quota,
    Region,
    Role,
    as_utc,
)
from kaas_core.db.session import make_engine, make_session_factory, session_scope
from provider.bootstrap import rbac_manifest
from provider.config import ProviderSettings
from tests.chaos import audit
from tests.chaos.lifecycle import ApiUser, LifecycleResult, LifecycleSpec, ServerErrors, run_lifecycle
from tests.chaos.recovery import KillRecovery, snapshot_before_kill, utc_from_epoch, watch_until_moved
from tests.chaos.rig import KAAS, WORKER, Part, Rig, RigError, free_port, http_answers, wait_for
from tests.conftest import create_pg_database, drop_pg_database

SIM_KINDS = ("worker", "beat", "tunnel", "api", "nodes", "cloud", "api-after-commit", "worker-before-tag")
REAL_KINDS = tuple(kind for kind in SIM_KINDS if kind != "cloud")
SPECIAL_KINDS = ("api-after-commit", "worker-before-tag")
REGION = "chaos"
PROJECT = "chaos"
FLAVOR = "m1.small"
IMAGE = "fake-image"  # seeded by simcloud and by the real OpenStack of ../shared/openstack
KUBERNETES_VERSION = "1.30.2"
SECRET_KEY = "chaos-secret-key-" + "0123456789abcdef" * 2
INTERNAL_SECRET = "chaos-internal-secret-" + "0123456789abcdef" * 2
SWEEP_INTERVAL_SECONDS = 10.0
REAL_CLOUDS_YAML = Path(os.environ.get("KAAS_OPENSTACK_DIR", "/tmp/kaas-openstack")) / "clouds.yaml"


@dataclass(frozen=True)
class Options:
    lifecycles: int = 6
    kills: int | None = None  # None: one of each kind
    concurrency: int = 3
    seed: int = 1
    cloud: str = "sim"  # sim | real
    redis_url: str = "redis://127.0.0.1:6379/11"
    step_timeout: float = 300.0
    boot_delay: float = 1.0
    workdir: Path | None = None
    log: Any = None  # a callable taking a line, for progress


@dataclass
class Kill:
    kind: str
    at: float  # time.time()
    detail: str = ""
    recovery: KillRecovery | None = None


@dataclass
class AfterCommit:
    """The API killed after its commit, before its send: when the row was committed, when a pass came."""

    cluster: str
    committed_at: datetime
    first_pass_at: datetime | None

    @property
    def seconds(self) -> float:
        if self.first_pass_at is None:
            return float("inf")
        return (self.first_pass_at - self.committed_at).total_seconds()


@dataclass
class Report:
    cloud: str
    seed: int
    seconds: float = 0.0
    lifecycles: list[LifecycleResult] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    leaked: dict[str, list[str]] = field(default_factory=dict)
    outside_final_phase: dict[str, str] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    operations_stuck: list[str] = field(default_factory=list)
    server_errors: list[tuple[str, str, int, str]] = field(default_factory=list)
    after_commit: list[AfterCommit] = field(default_factory=list)
    before_tag: str | None = None  # the tag request the worker died before
    bound: float = 30.0
    unreached: list[str] = field(default_factory=list)

    @property
    def node_count_mismatches(self) -> list[str]:
        return [
            f"{r.name}: {r.node_counts}"
            for r in self.lifecycles
            if r.node_counts is not None and not r.node_counts.matches
        ]

    @property
    def invariants(self) -> dict[str, int]:
        return {
            "leaked cloud resources": sum(len(v) for v in self.leaked.values()),
            "clusters outside a final phase": len(self.outside_final_phase),
            "operations stuck": len(self.operations_stuck),
            "API answers 5xx": len(self.server_errors),
            "node count mismatches": len(self.node_count_mismatches),
        }

    @property
    def worker_kills(self) -> list[KillRecovery]:
        return [k.recovery for k in self.kills if k.recovery is not None]

    def per_kill_worst(self) -> list[float]:
        return [recovery.worst for recovery in self.worker_kills]

    @property
    def recovery_ok(self) -> bool:
        worst = self.per_kill_worst()
        after = max((one.seconds for one in self.after_commit), default=0.0)
        return bool(worst) and max(worst) <= self.bound and after <= self.bound

    @property
    def passed(self) -> bool:
        completed = all(r.error is None for r in self.lifecycles)
        return (
            completed
            and not self.failed
            and all(v == 0 for v in self.invariants.values())
            and self.recovery_ok
        )

    def lines(self) -> list[str]:
        done = sum(1 for r in self.lifecycles if r.error is None)
        by_kind = Counter(k.kind for k in self.kills)
        out = [
            f"chaos campaign on {'the real OpenStack' if self.cloud == 'real' else 'simcloud'},"
            f" seed {self.seed}: {len(self.lifecycles)} lifecycles ({done} completed),"
            f" {len(self.kills)} kills, {self.seconds:.0f} s",
            "kills by component: " + ", ".join(f"{kind} {n}" for kind, n in sorted(by_kind.items())),
            "invariants (each must be 0):",
        ]
        out += [f"  {name:<32} {value}" for name, value in self.invariants.items()]
        out.append(f"  {'failed lifecycles':<32} {len(self.lifecycles) - done}")
        worst = self.per_kill_worst()
        if worst:
            every = sorted(s for r in self.worker_kills for s in r.held_up().values())
            raw = sorted(s for r in self.worker_kills for s in r.seconds_from_kill().values())
            out.append(
                f"recovery after {len(worst)} worker kill(s), until every in-flight cluster moved again"
                f" (beyond its own schedule): p50 {statistics.median(worst):.1f} s, max {max(worst):.1f} s"
                f" (bound {self.bound:g} s) {'OK' if max(worst) <= self.bound else 'MISSED'}"
            )
            if every:
                out.append(
                    f"  per cluster ({len(every)}): p50 {statistics.median(every):.1f} s,"
                    f" max {every[-1]:.1f} s;"
                    f" from the kill itself p50 {statistics.median(raw):.1f} s, max {raw[-1]:.1f} s;"
                    f" {sum(len(r.leased_by_victim) for r in self.worker_kills)} were mid-pass in the victim"
                )
        else:
            out.append("recovery: no worker kill happened   MISSED")
        if self.after_commit:
            seconds = sorted(one.seconds for one in self.after_commit)
            out.append(
                f"API killed after its commit, before its send ({len(seconds)}x): the cluster's first"
                f" pass p50 {statistics.median(seconds):.1f} s, max {seconds[-1]:.1f} s after the commit"
                " (the due-scan)"
            )
        if self.before_tag is not None:
            out.append(f"worker killed before tagging: {self.before_tag}")
        for kind in self.unreached:
            out.append(f"not reached: {kind}")
        for name, value in (
            ("leaked", self.leaked),
            ("outside a final phase", self.outside_final_phase),
            ("operations stuck", self.operations_stuck),
            ("5xx", self.server_errors),
            ("node counts", self.node_count_mismatches),
            ("failed", [f"{r.name}: {r.error}" for r in self.lifecycles if r.error] + self.failed),
        ):
            if value:
                out.append(f"  {name}: {value}")
        out.append("PASSED" if self.passed else "FAILED")
        return out


# --- the cloud -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cloud:
    clouds_yaml: Path
    tenant: str  # the cloud entry kaas's region uses
    admin: str  # the admin entry: the node booter, the audit
    project_id: str


@contextmanager
def real_project(workdir: Path) -> Iterator[Cloud]:
    """A throw-away project and user on the shared real OpenStack: kaas's leak sweep there sees only the
    campaign's own resources, never another developer's."""
    if not REAL_CLOUDS_YAML.exists():
        raise RigError(f"no real OpenStack: {REAL_CLOUDS_YAML} is missing (../shared/openstack/up.sh)")
    admin = audit.admin_connection(REAL_CLOUDS_YAML, "os-real")
    name = f"kaas-chaos-{uuid.uuid4().hex[:8]}"
    project = admin.identity.create_project(name=name, domain_id="default")
    user = None
    try:
        user = admin.identity.create_user(name=name, password="secret", domain_id="default")
        for role in ("member", "load-balancer_member"):
            admin.identity.assign_project_role_to_user(project, user, admin.identity.find_role(role))
        document = yaml.safe_load(REAL_CLOUDS_YAML.read_text())
        tenant = dict(document["clouds"]["os-real-demo"])
        tenant["auth"] = {**tenant["auth"], "username": name, "project_name": name, "password": "secret"}
        path = workdir / "clouds.yaml"
        path.write_text(
            yaml.safe_dump({"clouds": {"chaos": tenant, "os-real": document["clouds"]["os-real"]}})
        )
        path.chmod(0o600)
        yield Cloud(clouds_yaml=path, tenant="chaos", admin="os-real", project_id=project.id)
    finally:
        _clean_project(admin, project.id)
        if user is not None:
            admin.identity.delete_user(user, ignore_missing=True)
        admin.identity.delete_project(project, ignore_missing=True)
        admin.close()


def _clean_project(admin: Any, project_id: str) -> None:
    """Whatever is left in the throw-away project (a failed campaign's leaks), best effort, before it goes."""
    with contextlib.suppress(Exception):
        for server in admin.compute.servers(all_projects=True):
            if server.project_id == project_id:
                admin.compute.delete_server(server, ignore_missing=True)
        for router in admin.network.routers():
            if router.project_id == project_id:
                for port in admin.network.ports(device_id=router.id):
                    if port.device_owner == "network:router_interface":
                        with contextlib.suppress(Exception):
                            admin.network.remove_interface_from_router(router, port_id=port.id)
                admin.network.delete_router(router, ignore_missing=True)
        time.sleep(5)
        for network in admin.network.networks():
            if network.project_id == project_id:
                with contextlib.suppress(Exception):
                    admin.network.delete_network(network, ignore_missing=True)
        for group in admin.network.security_groups():
            if group.project_id == project_id and group.name != "default":
                with contextlib.suppress(Exception):
                    admin.network.delete_security_group(group, ignore_missing=True)


# --- the blackhole broker --------------------------------------------------------------------------------


@contextmanager
def blackhole() -> Iterator[int]:
    """A TCP port that accepts connections and never answers: a broker a send hangs on for ever."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                connection, _ = listener.accept()
                held.append(connection)

    thread = threading.Thread(target=accept, name="chaos-blackhole", daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        for connection in held:
            connection.close()
        listener.close()


# --- the campaign -----------------------------------------------------------------------------------------


@dataclass
class Diversion:
    """One create sent to the doomed API: the lifecycle that takes it names its cluster here."""

    url: str
    taken: threading.Event = field(default_factory=threading.Event)
    name: str = ""


class Campaign:
    def __init__(self, options: Options, *, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.rng = random.Random(options.seed)
        self.report = Report(cloud=options.cloud, seed=options.seed)
        self.say = options.log or (lambda line: print(line, flush=True))
        self.errors = ServerErrors()
        self.steps_started = 0
        self.steps_lock = threading.Lock()
        self.lifecycles_done = threading.Event()
        self.diversion: Diversion | None = None
        self.diversion_lock = threading.Lock()
        self.trigger = workdir / "die-before-tag"
        self.tag_recovery: tuple[KillRecovery, dict[str, Any], threading.Thread] | None = None
        self.prepared: set[str] = set()  # deterministic kills set up before the first lifecycle
        self.pending: Diversion | None = None  # the diversion the next api-after-commit kill handles
        self.doomed: Any = None
        self.rng_supervisor = random.Random(options.seed + 1)
        settings = ProviderSettings()
        self.report.bound = settings.recovery_bound_seconds
        self.grace = settings.requeue_grace_seconds

    # --- set-up ---

    def seed_database(self, session_factory: sessionmaker[Session], cloud: Cloud) -> str:
        with session_scope(session_factory) as session:
            session.add(
                Region(
                    name=REGION,
                    cloud=cloud.tenant,
                    kubernetes_versions=[KUBERNETES_VERSION],
                    default_kubernetes_version=KUBERNETES_VERSION,
                    flavors=[{"name": FLAVOR, "vcpus": 1, "ram_mb": 2048}],
                    image=IMAGE,
                    external_network="public",
                )
            )
            user, token = create_user(session, name="chaos-user")
            project = Project(name=PROJECT)
            session.add(project)
            session.flush()
            session.add(ProjectMember(project_id=project.id, user_id=user.id, role=Role.OWNER.value))
            session.add(
                Quota(
                    project_id=project.id, max_clusters=None, max_nodes=None, max_vcpus=None, max_ram_mb=None
                )
            )
        return token

    def build_rig(self, *, cloud: Cloud, database_url: str, blackhole_port: int, sim_port: int | None) -> Rig:
        api_port, tunnel_port, internal_port = free_port(), free_port(), free_port()
        self.api_url = f"http://127.0.0.1:{api_port}"
        env = {
            **os.environ,
            "KAAS_DATABASE_URL": database_url,
            "KAAS_BROKER_URL": self.options.redis_url,
            "KAAS_REDIS_URL": self.options.redis_url,
            "KAAS_SECRET_KEY": SECRET_KEY,
            "KAAS_TUNNEL_INTERNAL_SECRET": INTERNAL_SECRET,
            "KAAS_TUNNEL_URL": f"ws://127.0.0.1:{tunnel_port}/v1/tunnel",
            "KAAS_TUNNEL_PORT": str(tunnel_port),
            "KAAS_INTERNAL_PORT": str(internal_port),
            "KAAS_CLOUDS_YAML": str(cloud.clouds_yaml),
            "KAAS_SWEEP_INTERVAL_SECONDS": str(SWEEP_INTERVAL_SECONDS),
            "KAAS_LOG_LEVEL": "WARNING",
            "KAAS_CHAOS_DIE_BEFORE_TAG": str(self.trigger),
            # nodesim boots Kubernetes stand-ins here, which serve kaas's RBAC but not the add-ons'
            # manifests (server-side apply, DaemonSets, CRDs); as `kaas up` on stand-ins (manage_addons)
            "KAAS_MANAGE_ADDONS": "false",
        }
        rig = Rig(workdir=self.workdir, env=env)
        if sim_port is not None:
            state = str(self.workdir / "cloud")
            delays = [
                "--boot-delay",
                str(self.options.boot_delay),
                "--lb-delay",
                str(self.options.boot_delay),
            ]
            simcloud = [sys.executable, "-m", "simcloud", "--port", str(sim_port), "--state-dir", state]
            answers = http_answers(f"http://127.0.0.1:{sim_port}/identity/v3")
            clouds_yaml = self.workdir / "cloud" / "clouds.yaml"

            def cloud_ready() -> bool:  # it writes clouds.yaml once it answers
                return answers() and clouds_yaml.exists() and "sim-admin" in clouds_yaml.read_text()

            rig.add(Part("cloud", [*simcloud, "--persist", "--durable", *delays], ready=cloud_ready))
        rig.add(
            Part(
                "api", [*KAAS, "api", "--port", str(api_port)], ready=http_answers(f"{self.api_url}/healthz")
            )
        )
        doomed_port = free_port()
        self.doomed_url = f"http://127.0.0.1:{doomed_port}"
        rig.add(
            Part(
                "api-doomed",
                [*KAAS, "api", "--port", str(doomed_port)],
                ready=http_answers(f"{self.doomed_url}/healthz"),
                env={"KAAS_BROKER_URL": f"redis://127.0.0.1:{blackhole_port}/0"},
            )
        )
        rig.add(
            Part("worker", [*WORKER, "worker", "--region", REGION, "--pool", "threads", "--concurrency", "2"])
        )
        rig.add(Part("beat", [*KAAS, "beat"]))
        rig.add(Part("tunnel", [*KAAS, "tunnel"], ready=lambda: _port_open(tunnel_port)))
        nodes = [sys.executable, "-m", "nodesim", "--clouds-yaml", str(cloud.clouds_yaml)]
        nodes += ["--admin-cloud", cloud.admin, "--rbac-manifest", str(rbac_manifest())]
        nodes += [
            "--state-dir",
            str(self.workdir / "nodes"),
            "--kubernetes-version",
            f"v{KUBERNETES_VERSION}",
        ]
        if self.options.cloud == "real":
            nodes += ["--only-clusters", str(self.workdir / "clusters")]
        rig.add(Part("nodes", nodes))
        return rig

    def start_parts(self, rig: Rig) -> None:
        """One of each part, two workers (the HA harness starts replicas)."""
        for name in ("api", "tunnel", "beat", "nodes", "worker", "worker"):
            rig.start(name)

    def make_user(self) -> ApiUser:
        return ApiUser(base_url=self.api_url, token=self.token, project=PROJECT, errors=self.errors)

    def before_lifecycles(
        self, stack: ExitStack, *, rig: Rig, factory: sessionmaker[Session], user: ApiUser
    ) -> None:
        """Hook: traffic besides the lifecycles (the HA harness's kubectl clients), stopped by ``stack``."""

    def after_lifecycles(self, user: ApiUser) -> None:
        """Hook: the last lifecycle ended and the killer is done; before the audit."""

    # --- lifecycles ---

    def step(self, name: str, step: str) -> None:
        with self.steps_lock:
            self.steps_started += 1

    def run_one(
        self, index: int, user: ApiUser, cloud_view: audit.CloudView, factory: sessionmaker[Session]
    ) -> LifecycleResult:
        name = f"c{index:03d}"
        spec = LifecycleSpec(
            name=name,
            region=REGION,
            flavor=FLAVOR,
            node_cidr=f"10.{index // 256}.{index % 256}.0/24",
            step_timeout=self.options.step_timeout,
        )
        create_via = None
        with self.diversion_lock:
            diversion, self.diversion = self.diversion, None
        doomed_user: ApiUser | None = None
        if diversion is not None:
            doomed_user = ApiUser(
                base_url=diversion.url,
                token=self.token,
                project=PROJECT,
                errors=self.errors,
                outage_seconds=0,
            )
            doomed_client = doomed_user

            def create_via(body: dict[str, Any]) -> httpx.Response | None:
                diversion.name = name
                diversion.taken.set()
                return doomed_client.once("POST", doomed_client.clusters_path(), json=body, timeout=300)

        try:
            result = run_lifecycle(
                spec,
                user,
                count_servers=cloud_view.servers_of,
                count_rows=lambda cluster_id: audit.node_rows(factory, cluster_id),
                create_via=create_via,
                on_step=lambda step: self.step(name, step),
            )
        finally:
            if doomed_user is not None:
                doomed_user.close()
        self.say(
            f"  {name}: {'done' if result.error is None else 'FAILED: ' + result.error}"
            + "".join(f", {step} {seconds:.0f} s" for step, seconds in result.seconds.items())
        )
        return result

    def run_lifecycles(
        self, user: ApiUser, view: audit.CloudView, factory: sessionmaker[Session], killer: threading.Thread
    ) -> list[LifecycleResult]:
        """``lifecycles`` of them, ``concurrency`` at a time, and more while kills are still to come: every
        kill lands on work in flight."""
        slots = threading.Semaphore(self.options.concurrency)
        futures = []
        with ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="chaos-lifecycle") as pool:
            index = 0
            most = 3 * self.options.lifecycles + 10  # kills that never come must not make lifecycles forever
            while (index < self.options.lifecycles or killer.is_alive()) and index < most:
                slots.acquire()
                if index >= self.options.lifecycles and not killer.is_alive():
                    slots.release()
                    break
                future = pool.submit(self.run_one, index, user, view, factory)
                future.add_done_callback(lambda _: slots.release())
                futures.append(future)
                index += 1
        self.lifecycles_done.set()
        return [future.result() for future in futures]

    # --- kills ---

    def plan(self) -> list[str]:
        """The kinds to kill, in order: the deterministic two first (they are set up before the first
        lifecycle, so its create reaches them), then the others shuffled; by default one of each."""
        kinds = REAL_KINDS if self.options.cloud == "real" else SIM_KINDS
        wanted = self.options.kills
        chosen = list(kinds) if wanted is None or wanted >= len(kinds) else []
        if wanted is not None:
            chosen += [self.rng.choice(kinds) for _ in range(wanted - len(chosen))]
        first = [kind for kind in SPECIAL_KINDS if kind in chosen]
        for kind in first:
            chosen.remove(kind)
        self.rng.shuffle(chosen)
        return [*first, *chosen]

    def killer(self, rig: Rig, factory: sessionmaker[Session], plan: list[str]) -> None:
        total_steps = 3 * self.options.lifecycles
        for number, kind in enumerate(plan, 1):
            threshold = number * total_steps / (len(plan) + 1)
            prepared = kind in self.prepared
            self.prepared.discard(kind)
            while self.steps_started < threshold and not prepared:
                time.sleep(0.2)
            time.sleep(self.rng.uniform(0.0, 4.0))  # a random moment within the step
            try:
                kill = self.kill(kind, rig, factory)
            except Exception as exc:  # a kill that could not be made is reported, the campaign goes on
                self.say(f"  kill {number} ({kind}) could not be done: {exc!r}")
                self.report.unreached.append(kind)
                continue
            if kill is None:
                self.report.unreached.append(kind)
                continue
            self.report.kills.append(kill)
            self.say(f"  kill {number}: {kind}{': ' + kill.detail if kill.detail else ''}")

    def kill(self, kind: str, rig: Rig, factory: sessionmaker[Session]) -> Kill | None:
        pause = self.rng.uniform(0.5, 3.0)  # how long a supervisor takes to notice and restart
        if kind == "worker":
            return self.kill_worker(rig, factory, pause=pause)
        if kind == "worker-before-tag":
            return self.kill_worker_before_tag(rig, factory)
        if kind == "api-after-commit":
            return self.kill_api_after_commit(rig, factory)
        victim = rig.parts[kind].running[0]
        killed_at = rig.kill(victim)
        time.sleep(pause)
        rig.start(kind, timeout=120)
        return Kill(kind=kind, at=killed_at, detail=f"restarted after {pause:.1f} s")

    def kill_worker(self, rig: Rig, factory: sessionmaker[Session], *, pause: float) -> Kill:
        victim = rig.parts["worker"].running[0]  # the oldest: each in turn
        marker = f"/{victim.pid}/"

        def mid_pass() -> bool:
            with factory() as session:
                owners = session.scalars(
                    select(Cluster.lease_owner).where(Cluster.lease_owner.is_not(None))
                ).all()
            return any(marker in owner for owner in owners)

        with contextlib.suppress(RigError):
            wait_for(mid_pass, what="the victim to hold a lease", timeout=5, interval=0.01)
        recovery = snapshot_before_kill(
            factory, killed_at=utc_from_epoch(time.time()), victim_marker=marker, grace_seconds=self.grace
        )
        killed_at = rig.kill(victim)
        watcher = threading.Thread(  # from the kill on: a late first look would see a later pass
            target=watch_until_moved, args=(factory, recovery), kwargs={"timeout": 180}, daemon=True
        )
        watcher.start()
        time.sleep(pause)
        rig.start("worker")
        watcher.join()
        return Kill(
            kind="worker",
            at=killed_at,
            recovery=recovery,
            detail=f"{len(recovery.leased_by_victim)} mid-pass, {len(recovery.in_flight)} in flight"
            f" ({len(recovery.settled)} settled by a pass already under way),"
            f" all moved again within {recovery.worst:.1f} s",
        )

    def arm_before_tag(self) -> None:
        """The next worker about to tag a resource dies (``tests.chaos.worker``); the supervisor notices."""
        Path(f"{self.trigger}.fired").unlink(missing_ok=True)
        self.tag_recovery = None
        self.trigger.write_text("armed")

    def kill_worker_before_tag(self, rig: Rig, factory: sessionmaker[Session]) -> Kill | None:
        if not self.trigger.exists() and self.tag_recovery is None:
            self.arm_before_tag()
        try:
            wait_for(lambda: self.tag_recovery is not None, what="a worker to tag a resource", timeout=180)
        except RigError:
            self.trigger.unlink(missing_ok=True)
            return None
        recovery, note, watcher = self.tag_recovery
        self.tag_recovery = None
        watcher.join()
        self.report.before_tag = f"PUT {note['path']}: the resource was left with its description mark only"
        return Kill(
            kind="worker-before-tag",
            at=note["at"],
            recovery=recovery,
            detail=f"before PUT {note['path']},"
            f" all in-flight clusters moved again within {recovery.worst:.1f} s",
        )

    def supervise(self, rig: Rig, factory: sessionmaker[Session], stop: threading.Event) -> None:
        """Start again, after a pause, any process that ended by itself (a worker that died before a tag),
        as a supervisor would; the killer starts again the ones it killed."""
        fired = Path(f"{self.trigger}.fired")
        while not stop.wait(0.05):
            for name, process in rig.take_exited():
                note: dict[str, Any] = {}
                if name == "worker" and fired.exists():
                    with contextlib.suppress(RigError):
                        wait_for(lambda: bool(fired.read_text()), what="the note", timeout=5, interval=0.01)
                    note = json.loads(fired.read_text() or "{}")
                if note.get("pid") == process.pid:
                    recovery = snapshot_before_kill(
                        factory,
                        killed_at=utc_from_epoch(note["at"]),
                        victim_marker=f"/{process.pid}/",
                        grace_seconds=self.grace,
                    )
                    # watched from now: a late first look would see a later pass, not the first one
                    watcher = threading.Thread(
                        target=watch_until_moved,
                        args=(factory, recovery),
                        kwargs={"timeout": 180},
                        name="chaos-tag-kill-watcher",
                        daemon=True,
                    )
                    watcher.start()
                    self.tag_recovery = (recovery, note, watcher)
                elif not stop.is_set():
                    self.say(f"  {name} (pid {process.pid}) exited by itself with {process.returncode}")
                time.sleep(self.rng_supervisor.uniform(0.5, 3.0))
                if not stop.is_set():
                    with contextlib.suppress(RigError):
                        rig.start(name, timeout=120)

    def prepare_api_after_commit(self, rig: Rig) -> None:
        """An API process whose broker never answers; the next lifecycle sends its create there."""
        self.doomed = rig.start("api-doomed")
        with self.diversion_lock:
            self.diversion = Diversion(url=self.doomed_url)
            self.pending = self.diversion

    def kill_api_after_commit(self, rig: Rig, factory: sessionmaker[Session]) -> Kill | None:
        if self.pending is None:
            self.prepare_api_after_commit(rig)
        diversion, self.pending = self.pending, None
        assert diversion is not None
        doomed = self.doomed
        try:
            wait_for(diversion.taken.is_set, what="a create to send to the doomed API", timeout=300)
        except RigError:
            with self.diversion_lock:
                self.diversion = None
            rig.kill(doomed)
            return None

        def committed() -> datetime | None:
            with factory() as session:
                return as_utc(
                    session.scalar(select(Cluster.created_at).where(Cluster.name == diversion.name))
                )

        wait_for(lambda: committed() is not None, what="the doomed API's commit", timeout=120, interval=0.02)
        killed_at = rig.kill(doomed)  # its send hangs on the blackhole broker: nothing was queued
        committed_at = committed()
        assert committed_at is not None

        def first_pass() -> datetime | None:
            """When the first committed pass started: it started the create operation (the cluster's
            ``last_reconciled_at`` would be the latest pass, not the first)."""
            with factory() as session:
                return as_utc(
                    session.scalar(
                        select(Operation.started_at)
                        .join(Cluster, Operation.cluster_id == Cluster.id)
                        .where(Cluster.name == diversion.name, Operation.kind == OperationKind.CREATE.value)
                    )
                )

        with contextlib.suppress(RigError):
            wait_for(lambda: first_pass() is not None, what="a first pass", timeout=120, interval=0.1)
        result = AfterCommit(cluster=diversion.name, committed_at=committed_at, first_pass_at=first_pass())
        self.report.after_commit.append(result)
        return Kill(
            kind="api-after-commit",
            at=killed_at,
            detail=f"{diversion.name} committed, never queued;"
            f" first pass {result.seconds:.1f} s after the commit",
        )

    # --- the run ---

    def run(self) -> Report:
        options = self.options
        started = time.monotonic()
        with ExitStack() as stack:
            database_url = create_pg_database()
            stack.callback(drop_pg_database, database_url)
            upgrade_database(database_url)
            engine = make_engine(database_url)
            stack.callback(engine.dispose)
            factory = make_session_factory(engine)
            broker = redis.Redis.from_url(options.redis_url)
            broker.flushdb()
            stack.callback(broker.close)
            stack.callback(broker.flushdb)
            sim_port: int | None = None
            if options.cloud == "real":
                cloud = stack.enter_context(real_project(self.workdir))
            else:
                sim_port = free_port()
                cloud = Cloud(
                    clouds_yaml=self.workdir / "cloud" / "clouds.yaml",
                    tenant="sim",
                    admin="sim-admin",
                    project_id="",
                )
            blackhole_port = stack.enter_context(blackhole())
            self.token = self.seed_database(factory, cloud)
            rig = self.build_rig(
                cloud=cloud, database_url=database_url, blackhole_port=blackhole_port, sim_port=sim_port
            )
            stack.callback(rig.stop)
            self.say(f"chaos rig in {self.workdir}: starting every part ...")
            if sim_port is not None:
                rig.start("cloud")
                admin = audit.admin_connection(cloud.clouds_yaml, cloud.admin)
                demo = admin.identity.find_project("demo")
                cloud = Cloud(
                    clouds_yaml=cloud.clouds_yaml, tenant=cloud.tenant, admin=cloud.admin, project_id=demo.id
                )
                admin.close()
            self.start_parts(rig)
            if options.cloud == "real":
                stack.enter_context(cluster_ids_file(factory, self.workdir / "clusters"))
            admin = audit.admin_connection(cloud.clouds_yaml, cloud.admin)
            stack.callback(admin.close)
            view = audit.CloudView(admin=admin, project_id=cloud.project_id)
            user = self.make_user()
            stack.callback(user.close)

            plan = self.plan()
            self.say(
                f"{options.lifecycles} lifecycles, {options.concurrency} at a time;"
                f" kills planned: {', '.join(plan)}"
            )
            # the two deterministic kills are set up before the first lifecycle, so its create reaches them
            if "api-after-commit" in plan:
                self.prepare_api_after_commit(rig)
                self.prepared.add("api-after-commit")
            if "worker-before-tag" in plan:
                self.arm_before_tag()
                self.prepared.add("worker-before-tag")
            supervisor_stop = threading.Event()
            supervisor = threading.Thread(
                target=self.supervise,
                args=(rig, factory, supervisor_stop),
                name="chaos-supervisor",
                daemon=True,
            )
            supervisor.start()
            stack.callback(supervisor.join, 30)
            stack.callback(supervisor_stop.set)
            self.before_lifecycles(stack, rig=rig, factory=factory, user=user)
            killer = threading.Thread(
                target=self.killer, args=(rig, factory, plan), name="chaos-killer", daemon=True
            )
            killer.start()
            self.report.lifecycles = self.run_lifecycles(user, view, factory, killer)
            killer.join()
            self.after_lifecycles(user)
            self.audit(rig, factory, view)
            self.report.seconds = time.monotonic() - started
        return self.report

    def audit(self, rig: Rig, factory: sessionmaker[Session], view: audit.CloudView) -> None:
        self.say("lifecycles done; auditing (the leak sweep gets two intervals to repair what it can) ...")
        deadline = time.monotonic() + 2 * SWEEP_INTERVAL_SECONDS + 30
        leaked = view.kaas_resources()
        while leaked and time.monotonic() < deadline:
            time.sleep(2)
            leaked = view.kaas_resources()
        self.report.leaked = leaked
        self.report.outside_final_phase = audit.clusters_outside_a_final_phase(factory)
        self.report.failed = audit.failed_clusters(factory)
        self.report.operations_stuck = audit.operations_stuck(factory)
        self.report.server_errors = list(self.errors.seen)


@contextmanager
def cluster_ids_file(factory: sessionmaker[Session], path: Path) -> Iterator[None]:
    """Keep ``path`` listing every cluster id of the campaign's database (for ``nodesim --only-clusters``)."""
    stop = threading.Event()

    def write() -> None:
        written = ""
        while not stop.is_set():
            with factory() as session:
                ids = sorted(session.scalars(select(Cluster.id)).all())
            text = "".join(f"{cluster_id}\n" for cluster_id in ids)
            if text != written:
                temporary = path.with_suffix(".tmp")
                temporary.write_text(text)
                temporary.replace(path)
                written = text
            stop.wait(0.5)

    thread = threading.Thread(target=write, name="chaos-cluster-ids", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def run_campaign(options: Options) -> Report:
    workdir = options.workdir or Path(f"/tmp/kaas-chaos-{uuid.uuid4().hex[:8]}")
    workdir.mkdir(parents=True, exist_ok=True)
    return Campaign(options, workdir=workdir).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos.campaign", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--lifecycles", type=int, default=int(os.environ.get("KAAS_CHAOS_LIFECYCLES", "6")))
    parser.add_argument(
        "--kills",
        type=int,
        default=int(os.environ["KAAS_CHAOS_KILLS"]) if os.environ.get("KAAS_CHAOS_KILLS") else None,
        help="how many (default: one of each kind)",
    )
    parser.add_argument("--concurrency", type=int, default=3, help="lifecycles at once")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cloud", choices=["sim", "real"], default="sim")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("KAAS_TEST_REDIS_URL", "redis://127.0.0.1:6379/11"),
        help="a Redis database of the campaign's own (flushed)",
    )
    parser.add_argument("--workdir", type=Path, help="logs and state (default: a new /tmp/kaas-chaos-*)")
    args = parser.parse_args(argv)
    report = run_campaign(
        Options(
            lifecycles=args.lifecycles,
            kills=args.kills,
            concurrency=args.concurrency,
            seed=args.seed,
            cloud=args.cloud,
            redis_url=args.redis_url,
            workdir=args.workdir,
        )
    )
    print("\n".join(report.lines()), flush=True)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
