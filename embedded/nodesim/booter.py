"""``NodeBooter``: boots simulated kaas nodes from their cloud-init user-data, read back through Nova.

Owned by ``nodesim``. Used by kaas's embedded mode (``kaas up``) and by end-to-end tests against simcloud
or the real OpenStack (fake virt driver): in both, servers become ACTIVE but nothing boots, so nothing
would ever run the kaas agent that cloud-init installs on a real control-plane node. The booter stands in
for that boot.

It runs in its own thread with its own asyncio loop (``start()`` / ``stop()``, or ``with NodeBooter(...)``)
and every ``poll_interval`` seconds lists ``conn.compute.servers(all_projects=True, details=True)`` with ONE
admin openstacksdk connection (blocking calls, so they run on a one-thread executor, never on the loop).
While nothing changes (the same servers in the same states, every agent running), the interval doubles
after each quiet poll up to ``idle_poll_interval``; any change brings it back to ``poll_interval``. A fleet
at rest then costs a list every few seconds instead of every second, and a new server is still seen within
``idle_poll_interval``.
Servers of kaas carry the tag ``kaas-cluster=<id>`` (or the metadata key ``kaas-cluster``); their user-data
comes from ``OS-EXT-SRV-ATTR:user_data`` (admin, microversion 2.3+; openstacksdk negotiates it).

Per cluster, once one control-plane server is ACTIVE and its user-data carries an agent config:
- a control plane (``nodesim.control_planes``) at the Kubernetes version of the node config: the real
  programs when that version is built (``kube_releases``), else the Python stand-in; kaas's RBAC manifest
  applied in it, and credentials for ServiceAccount ``kaas-system/kaas-agent``; the user-data's PKI
  (``/etc/kubernetes/pki``) and endpoint are the real control plane's;
- a kubeconfig for it under ``state_dir/clusters/<id>/`` (0600), and ONE agent (as a Deployment would run
  it) built from the user-data's ``/etc/kaas/agent.yaml`` with ``apiserver`` = that kubeconfig;
- on a real control plane, one apiserver per ACTIVE, joined control-plane server at that server's version,
  behind the cluster's balancer (``ClusterControlPlane.sync_members``, every poll);
- the cluster's Nodes follow its servers, each named as the server (or its node config): ACTIVE is Ready,
  ERROR/SHUTOFF/... is not Ready, a server still in BUILD has no Node yet, a vanished server's Node is
  deleted. On a real control plane kwok keeps the Ready ones Ready and runs their pods. ``faults``
  (``nodesim.faults``) lets a test hold some servers' Nodes NotReady whatever their state.
When every server of a cluster is gone, its agent and control plane stop and its directory is removed. With
``persist`` (``kaas up``), stopping the booter keeps each cluster's directory (a real control plane's etcd
data, a stand-in's ``objects.json``): a booter started again on the same directory boots each cluster that
still has servers with the objects it had. A crashed agent is restarted on the next poll (a Deployment would
restart its pod), and so is a real control plane one of whose processes died (its etcd data kept). A control
plane that fails to start is logged and tried again after ``START_RETRY_SECONDS``. Bad user-data is logged
once per server and skipped; cloud errors are logged and retried on the next poll. The agent token, the
cluster's keys and the user-data are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import openstack
from openstack.config import loader

from agents.config import AgentConfig, AgentConfigError, agent_config_from_mapping
from agents.runtime import run_agent
from agents.tunnel.boot_report import failure_line, success_line
from nodesim.control_planes import (
    ClusterControlPlane,
    ClusterRequest,
    ControlPlanes,
    ControlPlaneStartError,
    MemberSpec,
    NodeBoot,
    NodeSpec,
    StandinControlPlane,
)
from nodesim.faults import FAULT_METADATA_KEY, NodeFaults, ServerFacts
from nodesim.kube_real import KubeletOptions
from nodesim.kubeadm_node import NodeBootFailed
from nodesim.userdata import NodeUserData, UserDataError, decode_user_data, parse_user_data
from simcloud.kube.testing import KubeStandinHandle

logger = logging.getLogger(__name__)

SERVER_PAGE = 500
NOVA_LIST_MICROVERSION = "2.26"  # server tags in listings (2.26) and OS-EXT-SRV-ATTR:user_data (2.3)
CLUSTER_TAG_PREFIX = "kaas-cluster="
CLUSTER_METADATA_KEY = "kaas-cluster"
ROLE_METADATA_KEY = "kaas-role"
CONTROL_PLANE = "control-plane"
ROLE_LABEL_PREFIX = "node-role.kubernetes.io/"
AGENT_STOP_TIMEOUT_SECONDS = 15.0
START_RETRY_SECONDS = 30.0
JOIN_TIMEOUT_SECONDS = 300.0  # kubeadm join's discovery timeout (5 minutes)
THREAD_START_TIMEOUT_SECONDS = 10.0
THREAD_STOP_TIMEOUT_SECONDS = 60.0
KEYSTONEAUTH_LOGGERS = (
    "keystoneauth.session",
    "keystoneauth.session.body",
    "keystoneauth.session.response",
    "keystoneauth.session.request",
)


class AgentRunner(Protocol):
    """``agents.runtime.run_agent``'s shape: run one agent until ``stop`` is set."""

    def __call__(self, config: AgentConfig, *, stop: asyncio.Event) -> Awaitable[None]: ...


@dataclass(frozen=True)
class ClusterInfo:
    """What the booter runs for one cluster (a snapshot, safe to read from any thread)."""

    cluster_id: str
    apiserver_url: str
    control_plane: str  # "real" or "stand-in"
    kubernetes_version: str
    agent_running: bool
    node_count: int
    nodes_ready: int
    apiserver_versions: tuple[str, ...] = ()  # one per running apiserver (a real cluster runs one per member)


@dataclass(frozen=True)
class _Server:
    """The few fields of one Nova server the booter needs (user-data still base64, never logged)."""

    id: str
    name: str
    status: str
    cluster_id: str
    metadata: dict[str, str]
    raw_user_data: str | None = field(repr=False)
    fixed_addresses: tuple[str, ...] = ()  # IPv4 first
    addresses: tuple[str, ...] = ()  # every address, floating ones included


@dataclass(eq=False)
class _RunningCluster:
    cluster_id: str
    control_plane: ClusterControlPlane
    workdir: Path
    agent_config: AgentConfig
    agent_stop: asyncio.Event
    agent_task: asyncio.Task[None] | None = None
    nodes: dict[str, NodeSpec] = field(default_factory=dict)
    booted: set[str] = field(default_factory=set)  # server ids whose kubeadm part succeeded
    vips: frozenset[str] = frozenset()  # the cluster's load balancers' VIPs, when last listed
    joining_since: dict[str, float] = field(default_factory=dict)  # server id -> first attempt (monotonic)


def cluster_id_of(tags: object, metadata: Mapping[str, Any] | None) -> str | None:
    """The kaas cluster a server belongs to: its ``kaas-cluster=<id>`` tag, else its metadata; or None."""
    for tag in tags if isinstance(tags, list | tuple) else ():
        if isinstance(tag, str) and tag.startswith(CLUSTER_TAG_PREFIX) and len(tag) > len(CLUSTER_TAG_PREFIX):
            return tag[len(CLUSTER_TAG_PREFIX):]
    value = (metadata or {}).get(CLUSTER_METADATA_KEY)
    return str(value) if value else None


def _addresses_of(server: Mapping[str, Any], *, fixed: bool) -> tuple[str, ...]:
    """A Nova server's addresses (``fixed``: only its own, as its network interface has them), IPv4 first."""
    found: list[tuple[int, str]] = []
    for entries in (server.get("addresses") or {}).values():
        for entry in entries or []:
            if not isinstance(entry, dict) or not entry.get("addr"):
                continue
            if fixed and entry.get("OS-EXT-IPS:type", "fixed") != "fixed":
                continue
            found.append((0 if entry.get("version", 4) == 4 else 1, str(entry["addr"])))
    return tuple(address for _, address in sorted(found, key=lambda pair: pair[0]))


class _RedactUserData(logging.Filter):
    """keystoneauth logs response bodies at DEBUG: a server list carries every user-data (and agent token)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record we cannot format is none of our business
            return True
        if "user_data" in message:
            record.msg, record.args = "[a message carrying server user-data, redacted by nodesim]", ()
        return True


def _redact_keystoneauth_bodies() -> None:
    for name in KEYSTONEAUTH_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, _RedactUserData) for f in target.filters):
            target.addFilter(_RedactUserData())


class NodeBooter:
    """Watches kaas's servers through Nova and boots each cluster's control plane and agent."""

    def __init__(
        self,
        *,
        clouds_yaml: Path,
        admin_cloud: str,
        rbac_manifest: Path,
        state_dir: Path,
        kubernetes_version_default: str,
        poll_interval: float = 1.0,
        idle_poll_interval: float = 5.0,
        agent_runner: AgentRunner = run_agent,
        agent_overrides: Mapping[str, Any] | None = None,
        cluster_filter: Callable[[str], bool] | None = None,
        tls: bool = True,
        api_timeout: float = 30.0,
        persist: bool = False,
        kube_releases: Mapping[str, Path] | None = None,
        kubelet: KubeletOptions | None = None,
        join_timeout: float = JOIN_TIMEOUT_SECONDS,
    ) -> None:
        """``agent_overrides`` are merged into every agent config (e.g. ``report_interval_seconds``);
        ``cluster_filter`` limits the booter to some clusters (tests on a shared cloud); ``tls`` serves the
        stand-ins over HTTPS with a throwaway CA (written into the kubeconfig). ``kube_releases`` (version
        → folder of its programs, ``nodesim.kube_releases.built_releases``): the clusters at those versions
        run real control planes, with ``kubelet`` (``KubeletOptions``) for what kwok serves of their pods.
        ``join_timeout``: how long a joining node retries a discovery that cannot succeed yet (kubeadm's
        discovery timeout) before its boot fails."""
        self._clouds_yaml = clouds_yaml
        self._admin_cloud = admin_cloud
        self._control_planes = ControlPlanes(
            rbac_manifest=rbac_manifest, releases=kube_releases, tls=tls, persist=persist, kubelet=kubelet
        )
        self._state_dir = state_dir
        self._version_default = kubernetes_version_default
        self._poll_interval = poll_interval
        self._idle_poll_interval = max(idle_poll_interval, poll_interval)
        self._interval = poll_interval
        self._fingerprint: frozenset[tuple[str, str, str]] | None = None
        self._agent_runner = agent_runner
        self._agent_overrides = dict(agent_overrides or {})
        self._cluster_filter = cluster_filter
        self._api_timeout = api_timeout
        self._persist = persist
        # Loop-thread state.
        self._conn: Any = None
        self._running: dict[str, _RunningCluster] = {}
        self._parsed: dict[str, NodeUserData | None] = {}  # server id -> parsed user-data, None if bad
        self._refused_sources: set[str] = set()  # server ids whose agent config was logged as unusable
        self._start_failed_at: dict[str, float] = {}  # cluster id -> when its control plane last failed
        self._cloud_failing = False
        self._join_timeout = join_timeout
        self._boot_failed: dict[str, str] = {}  # server id -> the failed step (reported on its console)
        self._console_refused = False  # the cloud takes no console lines (not simcloud): said once
        self._executor: ThreadPoolExecutor | None = None
        # Shared with other threads.
        self._lock = threading.Lock()
        self._snapshot: dict[str, ClusterInfo] = {}
        self._control_planes_by_cluster: dict[str, ClusterControlPlane] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self.faults = NodeFaults()  # tests hold Nodes NotReady through it (``nodesim.faults``)

    # --- any thread ---

    def start(self) -> None:
        """Start the booter's thread and loop; returns once it runs (the first poll follows at once)."""
        if self._thread is not None:
            raise RuntimeError("the node booter was already started")
        self._thread = threading.Thread(target=self._thread_main, name="nodesim-booter", daemon=True)
        self._thread.start()
        if not self._started.wait(THREAD_START_TIMEOUT_SECONDS):
            raise RuntimeError("the node booter did not start in time")
        if self._failure is not None:
            raise RuntimeError("the node booter failed to start") from self._failure

    def stop(self) -> None:
        """Stop every agent and stand-in, close the cloud connection, end the thread. Idempotent."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended on its own
                loop.call_soon_threadsafe(stopping.set)
        thread.join(THREAD_STOP_TIMEOUT_SECONDS)
        if thread.is_alive():
            logger.warning(
                "node booter: the booter thread did not stop within %ss", THREAD_STOP_TIMEOUT_SECONDS
            )

    def __enter__(self) -> NodeBooter:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def clusters(self) -> dict[str, ClusterInfo]:
        """What runs now: cluster id → its apiserver, whether its agent runs, its node counts."""
        with self._lock:
            return dict(self._snapshot)

    def control_plane_for(self, cluster_id: str) -> ClusterControlPlane | None:
        """The running control plane of a cluster (tests arrange objects through it), or None."""
        with self._lock:
            return self._control_planes_by_cluster.get(cluster_id)

    def standin_for(self, cluster_id: str) -> KubeStandinHandle | None:
        """The running stand-in apiserver of a cluster, or None (also for a cluster on a real one)."""
        control_plane = self.control_plane_for(cluster_id)
        return control_plane.handle if isinstance(control_plane, StandinControlPlane) else None

    # --- the booter's thread ---

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start() or logged: the thread must not die silently
            self._failure = exc
            logger.exception("node booter: the booter loop failed")
        finally:
            self._started.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nodesim-openstack")
        self._executor = executor
        self._started.set()
        try:
            while not self._stopping.is_set():
                await self._poll_once(executor)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=self._interval)
        finally:
            for running in list(self._running.values()):
                try:
                    await self._stop_cluster(running, forget=not self._persist)
                except Exception:
                    logger.exception("node booter: stopping cluster %s failed", running.cluster_id)
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.get_running_loop().run_in_executor(executor, self._conn.close)
            executor.shutdown(wait=True)

    # --- the cloud (blocking: executor only) ---

    def _connect(self) -> Any:
        _redact_keystoneauth_bodies()
        config = loader.OpenStackConfig(config_files=[str(self._clouds_yaml)], load_envvars=False)
        region = config.get_one(cloud=self._admin_cloud, api_timeout=self._api_timeout)
        return openstack.connection.Connection(config=region)

    def _list_servers(self) -> list[_Server]:
        """Every kaas server of every project, read as raw JSON pages of ``/servers/detail``.

        Raw rather than openstacksdk's ``servers()``: building a ``Resource`` per server cost the booter
        most of its CPU at rest (it lists every few seconds). Microversion 2.26 gives tags (2.26) and the
        user-data (2.3) in one listing; pages follow Nova's ``servers_links`` (marker paging).
        """
        if self._conn is None:
            self._conn = self._connect()
        servers: list[_Server] = []
        params: dict[str, str] = {"all_tenants": "True", "limit": str(SERVER_PAGE)}
        while True:
            response = self._conn.compute.get(
                "/servers/detail", params=params, microversion=NOVA_LIST_MICROVERSION
            )
            response.raise_for_status()
            page: list[dict[str, Any]] = response.json().get("servers") or []
            for server in page:
                metadata = {str(k): str(v) for k, v in (server.get("metadata") or {}).items()}
                cluster_id = cluster_id_of(server.get("tags"), metadata)
                if cluster_id is None:
                    continue
                if self._cluster_filter is not None and not self._cluster_filter(cluster_id):
                    continue
                servers.append(
                    _Server(
                        id=str(server["id"]),
                        name=str(server.get("name", "")),
                        status=str(server.get("status") or "BUILD").upper(),
                        cluster_id=cluster_id,
                        metadata=metadata,
                        raw_user_data=server.get("OS-EXT-SRV-ATTR:user_data"),
                        fixed_addresses=_addresses_of(server, fixed=True),
                        addresses=_addresses_of(server, fixed=False),
                    )
                )
            if len(page) < SERVER_PAGE:
                return servers
            params = {**params, "marker": str(page[-1]["id"])}

    # --- one poll ---

    async def _poll_once(self, executor: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        try:
            servers = await loop.run_in_executor(executor, self._list_servers)
        except Exception as exc:
            if not self._cloud_failing:
                logger.warning(
                    "node booter: cannot list servers on cloud %r (retrying every %ss): %s",
                    self._admin_cloud, self._poll_interval, type(exc).__name__,
                )
            else:
                logger.debug("node booter: listing servers failed again: %s", type(exc).__name__)
            self._cloud_failing = True
            return
        if self._cloud_failing:
            logger.info("node booter: cloud %r answers again", self._admin_cloud)
        self._cloud_failing = False
        self._pace(servers)
        by_cluster: dict[str, list[_Server]] = {}
        for server in servers:
            if server.status != "DELETED":
                by_cluster.setdefault(server.cluster_id, []).append(server)
        seen = {server.id for server in servers}
        for server_id in [sid for sid in self._parsed if sid not in seen]:
            del self._parsed[server_id]
        for server_id in [sid for sid in self._boot_failed if sid not in seen]:
            del self._boot_failed[server_id]
        self._refused_sources &= seen
        for cluster_id in sorted(set(by_cluster) | set(self._running)):
            if self._stopping is not None and self._stopping.is_set():
                break
            try:
                await self._sync_cluster(cluster_id, by_cluster.get(cluster_id, []))
            except Exception:
                logger.exception(
                    "node booter: syncing cluster %s failed; retrying on the next poll", cluster_id
                )
        self._publish()

    def _pace(self, servers: list[_Server]) -> None:
        """The next poll's interval: back to ``poll_interval`` on any change, doubled after a quiet poll."""
        fingerprint = frozenset(
            [(server.id, server.status, server.metadata.get(FAULT_METADATA_KEY, "")) for server in servers]
            + [("faults", str(self.faults.generation), "")])
        settled = all(
            running.agent_task is not None and not running.agent_task.done()
            for running in self._running.values()
        )
        if fingerprint == self._fingerprint and settled and all(s.status == "ACTIVE" for s in servers):
            self._interval = min(self._interval * 2, self._idle_poll_interval)
        else:
            self._interval = self._poll_interval
        self._fingerprint = fingerprint

    def _user_data(self, server: _Server) -> NodeUserData | None:
        if server.id in self._parsed:
            return self._parsed[server.id]
        parsed: NodeUserData | None
        try:
            parsed = parse_user_data(decode_user_data(server.raw_user_data))
        except UserDataError as exc:
            logger.warning(
                "node booter: server %s (%s) of cluster %s is skipped: %s",
                server.name, server.id, server.cluster_id, exc,
            )
            parsed = None
        self._parsed[server.id] = parsed
        return parsed

    def _role(self, server: _Server, user_data: NodeUserData | None) -> str:
        role = server.metadata.get(ROLE_METADATA_KEY) or (user_data.role if user_data else None)
        if role:
            return role
        return CONTROL_PLANE if "-cp-" in server.name else "worker"

    async def _sync_cluster(self, cluster_id: str, servers: list[_Server]) -> None:
        running = self._running.get(cluster_id)
        if not servers:
            if running is not None:
                logger.info("node booter: every server of cluster %s is gone: stopping its agent", cluster_id)
                await self._stop_cluster(running)
            return
        if running is not None and not running.control_plane.healthy():
            logger.warning(
                "node booter: the control plane of cluster %s stopped running; starting it again", cluster_id
            )
            await self._stop_cluster(running, forget=False)
            running = None
        if running is None:
            failed_at = self._start_failed_at.get(cluster_id)
            if failed_at is not None and time.monotonic() - failed_at < START_RETRY_SECONDS:
                return
            running = await self._maybe_start_cluster(cluster_id, servers)
            if running is None:
                return
        task = running.agent_task
        if task is None or task.done():
            if task is not None:
                self._report_agent_exit(running, task)
            self._start_agent(running)
        await asyncio.to_thread(running.control_plane.refresh_agent_credentials)
        await self._sync_nodes(running, servers)

    # --- starting and stopping a cluster ---

    def _agent_config(self, cluster_id: str, server: _Server, agent: Mapping[str, Any]) -> AgentConfig | None:
        kubeconfig = self._workdir(cluster_id) / "agent.kubeconfig"
        document = {
            **agent,
            **self._agent_overrides,
            "apiserver": {"kind": "kubeconfig", "kubeconfig": str(kubeconfig)},
        }
        try:
            config = agent_config_from_mapping(document, environ={})
        except AgentConfigError as exc:  # its message never echoes a value
            problem = str(exc)
        else:
            if config.cluster_id == cluster_id:
                return config
            problem = f"its agent config names another cluster ({config.cluster_id!r})"
        if server.id not in self._refused_sources:
            self._refused_sources.add(server.id)
            logger.warning(
                "node booter: server %s (%s) of cluster %s cannot run the agent: %s",
                server.name, server.id, cluster_id, problem,
            )
        return None

    def _workdir(self, cluster_id: str) -> Path:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in cluster_id)
        return self._state_dir / "clusters" / safe

    async def _maybe_start_cluster(self, cluster_id: str, servers: list[_Server]) -> _RunningCluster | None:
        def initializes_first(server: _Server) -> tuple[bool, str]:
            user_data = self._user_data(server)
            kubeadm = user_data.kubeadm if user_data else None
            return (not (kubeadm is not None and kubeadm.initializes), server.name)

        # the server whose user-data runs kubeadm init starts the cluster (a restarted booter may find only
        # joined ones, whose cluster's data it kept)
        for server in sorted(servers, key=initializes_first):
            if server.status != "ACTIVE" or server.id in self._boot_failed:
                continue
            user_data = self._user_data(server)
            if user_data is None or self._role(server, user_data) != CONTROL_PLANE:
                continue
            if user_data.agent is None:
                if server.id not in self._refused_sources:
                    self._refused_sources.add(server.id)
                    logger.warning(
                        "node booter: control-plane server %s (%s) of cluster %s has no agent config",
                        server.name, server.id, cluster_id,
                    )
                continue
            config = self._agent_config(cluster_id, server, user_data.agent)
            if config is None:
                continue
            return await self._start_cluster(cluster_id, config, user_data=user_data, server=server)
        return None

    async def _start_cluster(
        self, cluster_id: str, config: AgentConfig, *, user_data: NodeUserData, server: _Server
    ) -> _RunningCluster | None:
        assert config.apiserver.kind == "kubeconfig"
        kubeconfig = config.apiserver.kubeconfig
        workdir = kubeconfig.parent
        request = ClusterRequest(
            cluster_id=cluster_id,
            version=user_data.kubernetes_version or self._version_default,
            workdir=workdir,
            endpoint=user_data.api_endpoint,
            pki=user_data.pki,
            kubeadm=user_data.kubeadm,
            advertise_address=server.fixed_addresses[0] if server.fixed_addresses else None,
            server_id=server.id,
            server_names=server.addresses,
            agent_manifest=user_data.agent_manifest,
        )
        releases = self._control_planes.releases
        if releases and request.version not in releases:
            logger.warning(
                "node booter: cluster %s runs on the stand-in: Kubernetes %s is not built (built: %s)",
                cluster_id, request.version, ", ".join(releases),
            )
        try:
            control_plane = await asyncio.to_thread(self._control_planes.start, request)
        except NodeBootFailed as failed:
            await self._report_boot_failure(cluster_id, server, failed)
            return None
        except ControlPlaneStartError as exc:
            self._start_failed_at[cluster_id] = time.monotonic()
            logger.warning(
                "node booter: the control plane of cluster %s did not start (again in %ss): %s",
                cluster_id, START_RETRY_SECONDS, exc,
            )
            return None
        self._start_failed_at.pop(cluster_id, None)
        try:
            await asyncio.to_thread(control_plane.write_agent_kubeconfig, kubeconfig)
        except BaseException:
            await asyncio.to_thread(control_plane.close)
            raise
        running = _RunningCluster(
            cluster_id=cluster_id,
            control_plane=control_plane,
            workdir=workdir,
            agent_config=config,
            agent_stop=asyncio.Event(),
        )
        self._running[cluster_id] = running
        with self._lock:
            self._control_planes_by_cluster[cluster_id] = control_plane
        logger.info(
            "node booter: cluster %s booted: %s kube-apiserver %s at %s",
            cluster_id, control_plane.kind, control_plane.version, control_plane.url,
        )
        return running

    def _start_agent(self, running: _RunningCluster) -> None:
        runner, config, stop = self._agent_runner, running.agent_config, running.agent_stop

        async def run() -> None:
            await runner(config, stop=stop)

        running.agent_task = asyncio.create_task(run(), name=f"nodesim-agent-{running.cluster_id}")
        logger.info(
            "node booter: agent of cluster %s started (tunnel %s)", running.cluster_id, config.tunnel_url
        )

    @staticmethod
    def _report_agent_exit(running: _RunningCluster, task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            logger.warning(
                "node booter: the agent of cluster %s failed (%s); restarting it",
                running.cluster_id, type(error).__name__, exc_info=error,
            )
        else:
            logger.warning("node booter: the agent of cluster %s exited; restarting it", running.cluster_id)

    async def _stop_cluster(self, running: _RunningCluster, *, forget: bool = True) -> None:
        """Stop the agent, then the control plane; the cluster leaves ``clusters()`` once both are down.

        ``forget``: the cluster is gone, so its directory (kubeconfig, PKI, etcd data, saved objects) goes
        too; a booter that merely stops keeps it when it persists."""
        self._running.pop(running.cluster_id, None)
        running.agent_stop.set()
        task = running.agent_task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), AGENT_STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                logger.warning("node booter: the agent of cluster %s did not stop", running.cluster_id)
                task.cancel()
            except Exception:
                logger.warning("node booter: the agent of cluster %s failed to stop", running.cluster_id)
            with contextlib.suppress(BaseException):
                await task
        await asyncio.to_thread(running.control_plane.close)
        if forget:
            shutil.rmtree(running.workdir, ignore_errors=True)
        with self._lock:
            self._control_planes_by_cluster.pop(running.cluster_id, None)
            self._snapshot.pop(running.cluster_id, None)
        logger.info(
            "node booter: cluster %s stopped (agent and %s apiserver)",
            running.cluster_id, running.control_plane.kind,
        )

    # --- nodes ---

    def _node_spec(self, server: _Server, running: _RunningCluster) -> NodeSpec | None:
        exists = any(spec.server_id == server.id for spec in running.nodes.values())
        if server.status == "BUILD" and not exists:
            return None  # not booted yet: no kubelet has registered
        if server.status == "ACTIVE" and server.id not in running.booted:
            return None  # its boot has not joined the cluster (yet, or ever: see _boot)
        user_data = self._user_data(server)  # a node without a usable user-data still registers
        role = self._role(server, user_data)
        name = (user_data.node_name if user_data else None) or server.name
        labels = {
            **(user_data.labels if user_data else {}),
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            f"{ROLE_LABEL_PREFIX}{role}": "",
        }
        if server.metadata.get("kaas-pool"):
            labels["kaas.io/node-pool"] = server.metadata["kaas-pool"]
        taints = [
            (t.get("key", ""), t.get("value", ""), t.get("effect", ""))
            for t in (user_data.taints if user_data else [])
        ]
        if role == CONTROL_PLANE:
            taints.append((f"{ROLE_LABEL_PREFIX}{CONTROL_PLANE}", "", "NoSchedule"))
        version = (user_data.kubernetes_version if user_data else None) or running.control_plane.version
        held = self.faults.holds_not_ready(ServerFacts(
            name=server.name, metadata=server.metadata,
            version=user_data.kubernetes_version if user_data else None))
        return NodeSpec(
            name=name,
            server_id=server.id,
            ready=server.status == "ACTIVE" and not held,
            labels=tuple(sorted(labels.items())),
            taints=tuple(taints),
            kubelet_version=version,
        )

    def _reachable_hosts(self, running: _RunningCluster, servers: list[_Server]) -> frozenset[str]:
        """Where the cloud routes to the cluster's apiserver: its control planes' addresses, its load
        balancers' VIPs (``_cluster_vips``), and the endpoint kubeadm init was given (routed to it, as a
        DNS name or an outside load balancer would be)."""
        hosts = set(running.vips)
        for server in servers:
            user_data = self._user_data(server)
            if self._role(server, user_data) == CONTROL_PLANE:
                hosts.update(server.addresses)
            kubeadm = user_data.kubeadm if user_data else None
            if kubeadm is not None and kubeadm.initializes and kubeadm.control_plane_endpoint_host:
                hosts.add(kubeadm.control_plane_endpoint_host)
        return frozenset(hosts)

    async def _boot(self, running: _RunningCluster, servers: list[_Server]) -> None:
        """Each ACTIVE server not booted yet plays its kubeadm part against the cluster (``boot_node``):
        joined, it may register its Node; a failure is written on its console (``agents.tunnel.
        boot_report``), at once when it cannot succeed, after ``join_timeout`` when it might still."""
        pending = [s for s in servers if s.status == "ACTIVE" and s.id not in running.booted
                   and s.id not in self._boot_failed]
        if not pending:
            return
        if any(getattr(self._user_data(s), "kubeadm", None) is not None for s in pending):
            running.vips = await self._cluster_vips(running.cluster_id)
        reachable = self._reachable_hosts(running, servers)
        for server in sorted(pending, key=lambda s: s.name):
            user_data = self._user_data(server)
            boot = NodeBoot(
                server_id=server.id,
                node_name=(user_data.node_name if user_data else None) or server.name,
                documents=user_data.kubeadm if user_data else None,
                reachable_hosts=reachable,
                pki=user_data.pki if user_data else {},
            )
            try:
                await asyncio.to_thread(running.control_plane.boot_node, boot)
            except NodeBootFailed as failed:
                first = running.joining_since.setdefault(server.id, time.monotonic())
                if failed.retryable and time.monotonic() - first < self._join_timeout:
                    logger.debug("node booter: server %s not joined yet: %s", server.name, failed)
                    continue
                await self._report_boot_failure(running.cluster_id, server, failed)
                continue
            running.joining_since.pop(server.id, None)
            running.booted.add(server.id)
            await self._write_console(server, [success_line()])

    async def _report_boot_failure(self, cluster_id: str, server: _Server, failed: NodeBootFailed) -> None:
        self._boot_failed[server.id] = failed.step
        logger.warning("node booter: server %s (%s) of cluster %s failed its boot: %s",
                       server.name, server.id, cluster_id, failed)
        await self._write_console(server, [failure_line(failed.step, failed.reason)])

    async def _in_executor(self, call: Callable[[], Any]) -> Any:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _write_console(self, server: _Server, lines: list[str]) -> None:
        """Lines on the server's console, as its boot prints them (simcloud's ``/_sim/servers/{id}/console``;
        another cloud's consoles are its VMs' own, so there they are only logged)."""
        if self._console_refused:
            return
        try:
            written = await self._in_executor(lambda: self._post_console(server.id, lines))
        except Exception as exc:  # the console is a report channel: a failure to write it is only logged
            logger.info("node booter: cannot write the console of server %s: %s", server.name,
                        type(exc).__name__)
            return
        if not written:
            self._console_refused = True
            logger.info("node booter: the cloud takes no console lines from nodesim (not simcloud); boot "
                        "outcomes are only logged")

    def _post_console(self, server_id: str, lines: list[str]) -> bool:
        if self._conn is None:
            self._conn = self._connect()
        parts = urlsplit(str(self._conn.config.get_auth_args().get("auth_url") or ""))
        url = f"{parts.scheme}://{parts.netloc}/_sim/servers/{server_id}/console"
        response = self._conn.session.post(url, json={"lines": lines}, raise_exc=False)
        if response.status_code in (404, 405):
            return False
        response.raise_for_status()
        return True

    async def _cluster_vips(self, cluster_id: str) -> frozenset[str]:
        """The VIPs of the cluster's load balancers (tagged ``kaas-cluster=<id>``), as the admin sees them."""
        def listing() -> frozenset[str]:
            if self._conn is None:
                self._conn = self._connect()
            tag = f"{CLUSTER_TAG_PREFIX}{cluster_id}"
            return frozenset(str(lb.vip_address) for lb in self._conn.load_balancer.load_balancers()
                             if tag in (lb.tags or []) and lb.vip_address)
        try:
            vips: frozenset[str] = await self._in_executor(listing)
        except Exception as exc:  # no load balancer service: the endpoint is a server's address
            logger.debug("node booter: cannot list load balancers: %s", type(exc).__name__)
            return frozenset()
        return vips

    def _members(self, running: _RunningCluster, servers: list[_Server]) -> dict[str, MemberSpec]:
        """The control-plane servers whose apiserver runs: ACTIVE and joined (a server going away, or no
        longer ACTIVE, leaves the balancer and its apiserver stops)."""
        members: dict[str, MemberSpec] = {}
        for server in servers:
            if server.status != "ACTIVE" or server.id not in running.booted:
                continue
            user_data = self._user_data(server)
            if self._role(server, user_data) != CONTROL_PLANE:
                continue
            members[server.id] = MemberSpec(
                server_id=server.id,
                node_name=(user_data.node_name if user_data else None) or server.name,
                version=(user_data.kubernetes_version if user_data else None) or self._version_default,
                advertise_address=server.fixed_addresses[0] if server.fixed_addresses else None,
                server_names=server.addresses,
            )
        return members

    async def _sync_nodes(self, running: _RunningCluster, servers: list[_Server]) -> None:
        await self._boot(running, servers)
        await asyncio.to_thread(running.control_plane.sync_members, self._members(running, servers))
        wanted: dict[str, NodeSpec] = {}
        for server in servers:
            spec = self._node_spec(server, running)
            if spec is not None:
                wanted[spec.name] = spec
        if wanted == running.nodes:
            return
        await asyncio.to_thread(running.control_plane.sync_nodes, wanted)
        for name in running.nodes.keys() - wanted.keys():
            logger.info("node booter: cluster %s: node %s removed", running.cluster_id, name)
        for name, spec in wanted.items():
            if running.nodes.get(name) != spec:
                logger.info(
                    "node booter: cluster %s: node %s %s",
                    running.cluster_id, name, "Ready" if spec.ready else "NotReady",
                )
        running.nodes = wanted

    def _publish(self) -> None:
        snapshot = {
            cluster_id: ClusterInfo(
                cluster_id=cluster_id,
                apiserver_url=running.control_plane.url,
                control_plane=running.control_plane.kind,
                kubernetes_version=running.control_plane.version,
                agent_running=running.agent_task is not None and not running.agent_task.done(),
                node_count=len(running.nodes),
                nodes_ready=sum(1 for spec in running.nodes.values() if spec.ready),
                apiserver_versions=running.control_plane.apiserver_versions,
            )
            for cluster_id, running in self._running.items()
        }
        with self._lock:
            self._snapshot = snapshot
