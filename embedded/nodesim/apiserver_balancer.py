"""A loopback TCP load balancer in front of one real cluster's kube-apiservers: nodesim's Octavia VIP.

Owned by ``nodesim``: ``nodesim.kube_real.start_control_plane`` starts one per real control plane and every
client of the cluster that nodesim starts or writes a kubeconfig for (the agent, nodesim's admin client,
kubeadm's discovery, the controller manager, the scheduler and kwok) dials its address, never an apiserver's
own port. ``RealControlPlane`` adds each apiserver (``add``), takes one out of rotation before stopping it
(``take_out``) and forgets it once stopped (``remove``).

TCP, not HTTP: TLS ends at the apiservers, as behind Octavia's TCP listener, so every client still checks an
apiserver's own serving certificate. Each new connection goes to the next backend, round robin, among those
whose ``/readyz`` answered 200 within ``healthy_for`` seconds (checked every ``check_interval`` seconds, with
one keep-alive client, so a check costs no handshake); a backend that refuses the connection is skipped for
the next. When no backend is healthy (a cluster whose only apiserver is restarting) every backend still in
rotation is tried, as a load balancer whose members all failed their checks still forwards. A backend taken
out gets no new connection; the connections it already carries stay until one side closes them (the
apiserver's graceful shutdown ends them), so a request in flight finishes. With one backend in rotation
nothing is checked (it takes every connection anyway).

The balancer runs its own thread and event loop (``start``/``close``); its methods may be called from any
thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from dataclasses import dataclass

import httpx

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
COPY_CHUNK_BYTES = 64 * 1024
THREAD_TIMEOUT_SECONDS = 10.0


class BalancerError(Exception):
    """The balancer could not start, or was used after it closed."""


@dataclass
class _Backend:
    name: str
    port: int
    in_rotation: bool = True
    ready_at: float | None = None  # monotonic time of the last /readyz that answered 200
    connections: int = 0  # connections sent to it, ever


@dataclass(frozen=True)
class BackendState:
    """One backend as the balancer sees it (a snapshot)."""

    name: str
    port: int
    in_rotation: bool
    healthy: bool
    connections: int


class ApiserverBalancer:
    """Round robin over the healthy apiservers of one cluster, on a loopback port of its own."""

    def __init__(self, *, ca_pem: bytes, check_interval: float = 0.5, healthy_for: float = 2.0,
                 connect_timeout: float = 2.0, name: str = "apiserver-balancer") -> None:
        """``ca_pem``: the cluster CA, which the health checks verify each apiserver's certificate with
        (``/readyz`` is readable anonymously, as kubeadm leaves it)."""
        self._ca_pem = ca_pem
        self._check_interval = check_interval
        self._healthy_for = healthy_for
        self._connect_timeout = connect_timeout
        self._name = name
        self._lock = threading.Lock()
        self._backends: dict[str, _Backend] = {}
        self._next = 0
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None

    # --- any thread ---

    @property
    def port(self) -> int:
        if self._port is None:
            raise BalancerError("the balancer was not started")
        return self._port

    @property
    def url(self) -> str:
        return f"https://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        """Listen on a free loopback port; returns once it accepts connections."""
        if self._thread is not None:
            raise BalancerError("the balancer was already started")
        self._thread = threading.Thread(target=self._thread_main, name=self._name, daemon=True)
        self._thread.start()
        if not self._started.wait(THREAD_TIMEOUT_SECONDS) or self._port is None:
            raise BalancerError("the balancer did not start") from self._failure

    def close(self) -> None:
        """Stop listening and end every connection it carries. Idempotent."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended already
                loop.call_soon_threadsafe(stopping.set)
        thread.join(THREAD_TIMEOUT_SECONDS)

    def add(self, name: str, port: int, *, ready: bool = False) -> None:
        """Put the apiserver listening on ``port`` into rotation (``ready``: its /readyz just answered, so
        it takes connections before the next check)."""
        with self._lock:
            ready_at = time.monotonic() if ready else None
            self._backends[name] = _Backend(name=name, port=port, ready_at=ready_at)

    def take_out(self, name: str) -> None:
        """No new connection goes to ``name`` from now on; the ones it carries stay."""
        with self._lock:
            backend = self._backends.get(name)
            if backend is not None:
                backend.in_rotation = False

    def remove(self, name: str) -> None:
        with self._lock:
            self._backends.pop(name, None)

    def backends(self) -> dict[str, BackendState]:
        now = time.monotonic()
        with self._lock:
            return {name: BackendState(name=name, port=b.port, in_rotation=b.in_rotation,
                                       healthy=self._healthy(b, now), connections=b.connections)
                    for name, b in self._backends.items()}

    # --- choosing a backend ---

    def _healthy(self, backend: _Backend, now: float) -> bool:
        return backend.ready_at is not None and now - backend.ready_at <= self._healthy_for

    def _candidates(self) -> list[_Backend]:
        """The backends to try for one new connection, in order: the healthy ones in rotation, round robin
        from the next one; when there is none, every one still in rotation."""
        now = time.monotonic()
        with self._lock:
            rotation = [b for b in self._backends.values() if b.in_rotation]
            healthy = [b for b in rotation if self._healthy(b, now)] or rotation
            if not healthy:
                return []
            start = self._next % len(healthy)
            self._next += 1
            return healthy[start:] + healthy[:start]

    # --- the balancer's thread ---

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start() or logged: the thread must not die silently
            self._failure = exc
            logger.exception("nodesim: the apiserver balancer failed")
        finally:
            self._started.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        connections: set[asyncio.Task[None]] = set()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            connections.add(task)
            try:
                await self._relay(reader, writer)
            finally:
                connections.discard(task)

        server = await asyncio.start_server(serve, LOOPBACK, 0)
        self._port = server.sockets[0].getsockname()[1]
        checks = asyncio.create_task(self._check_forever(), name=f"{self._name}-checks")
        self._started.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            checks.cancel()
            for task in list(connections):
                task.cancel()
            await asyncio.gather(checks, *connections, return_exceptions=True)
            await server.wait_closed()

    async def _check_forever(self) -> None:
        context = ssl.create_default_context(cadata=self._ca_pem.decode())
        timeout = self._check_interval * 2
        async with httpx.AsyncClient(verify=context, timeout=timeout, trust_env=False) as client:
            while True:
                with self._lock:
                    targets = [(b.name, b.port) for b in self._backends.values() if b.in_rotation]
                # one backend takes every connection whatever it answers: a cluster with one control plane
                # (most of them) pays for no check
                if len(targets) > 1:
                    await asyncio.gather(*(self._check(client, name, port) for name, port in targets))
                await asyncio.sleep(self._check_interval)

    async def _check(self, client: httpx.AsyncClient, name: str, port: int) -> None:
        try:
            response = await client.get(f"https://{LOOPBACK}:{port}/readyz")
        except httpx.HTTPError:
            return  # not answering: it stops being healthy once its last good answer is old enough
        if response.status_code == 200:
            with self._lock:
                backend = self._backends.get(name)
                if backend is not None and backend.port == port:
                    backend.ready_at = time.monotonic()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        for backend in self._candidates():
            try:
                upstream = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, backend.port),
                                                  self._connect_timeout)
            except (OSError, TimeoutError):
                continue  # refused (stopping, or not listening yet): the next one takes the connection
            with self._lock:
                backend.connections += 1
            break
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream
        # either direction ending ends the connection: TLS and HTTP/1.1 never rely on a half-close
        directions = [asyncio.create_task(_copy(reader, up_writer)),
                      asyncio.create_task(_copy(up_reader, writer))]
        try:
            await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in directions:
                task.cancel()
            await asyncio.gather(*directions, return_exceptions=True)
            for side in (writer, up_writer):
                side.close()
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    await side.wait_closed()


async def _copy(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while chunk := await source.read(COPY_CHUNK_BYTES):
            target.write(chunk)
            await target.drain()
