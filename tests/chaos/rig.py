"""The parts of kaas as separate processes on loopback, each one killable and restartable: the chaos rig.

Owned by ``tests/chaos``; the campaign (``tests.chaos.campaign``) and the worker-kill test use it. Every
part is started as a deployment runs it, from the command line: ``kaas api``, ``kaas worker --pool
threads`` (through ``tests.chaos.worker``, which can be told to die just before it tags a cloud resource),
``kaas beat``, ``kaas tunnel``, the simulated cloud (``python -m simcloud --persist --durable``) and the
simulated nodes (``python -m nodesim``). Ports are picked once and kept, so a part started again after a
``kill -9`` is found where the others look for it (the tunnel URL is in every node's user-data). Each
start writes its own log under ``logs/``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
KAAS = [sys.executable, "-m", "kaas_cli.main"]
WORKER = [sys.executable, "-m", "tests.chaos.worker"]


class RigError(RuntimeError):
    """A part of the rig did not start or answer in time."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], object], *, what: str, timeout: float, interval: float = 0.1) -> None:
    """Poll ``condition`` until it is true; ``RigError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RigError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def http_answers(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=2, trust_env=False).status_code < 500
        except httpx.HTTPError:
            return False

    return check


@dataclass
class Part:
    """One kind of process of the rig: how to start one, and the ones running now."""

    name: str
    command: list[str]
    ready: Callable[[], bool] | None = None  # None: ready once started
    env: dict[str, str] = field(default_factory=dict)
    running: list[subprocess.Popen[bytes]] = field(default_factory=list)


class Rig:
    """Starts, kills (SIGKILL) and restarts the parts; stops everything at the end."""

    def __init__(self, *, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = {**env, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.parts: dict[str, Part] = {}
        self._starts = 0
        self._lock = threading.RLock()  # the killer and the supervisor never both act on one process

    def add(self, part: Part) -> None:
        self.parts[part.name] = part

    def start(self, name: str, *, timeout: float = 60.0) -> subprocess.Popen[bytes]:
        part = self.parts[name]
        with self._lock:
            self._starts += 1
            with (self.logs / f"{name}-{self._starts:03d}.log").open("wb") as log:
                process = subprocess.Popen(
                    part.command,
                    env={**self.env, **part.env},
                    cwd=self.workdir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            part.running.append(process)
        if part.ready is not None:
            ready = part.ready

            def started() -> bool:
                if process.poll() is not None:
                    raise RigError(f"{name} exited with {process.returncode} at start (see {self.logs})")
                return ready()

            wait_for(started, what=f"{name} to answer", timeout=timeout)
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> float:
        """SIGKILL one process (and its process group: a part's children die with it); returns when."""
        with self._lock:
            self.forget(process)
            killed_at = time.time()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
        return killed_at

    def terminate(self, process: subprocess.Popen[bytes], *, timeout: float = 30.0) -> float:
        """SIGTERM one process (its group), as a rolling restart does; SIGKILL if it has not ended in
        ``timeout``. Returns how long it took to end."""
        with self._lock:
            self.forget(process)
            started = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        return time.monotonic() - started

    def forget(self, process: subprocess.Popen[bytes]) -> None:
        with self._lock:
            for part in self.parts.values():
                if process in part.running:
                    part.running.remove(process)

    def take_exited(self) -> list[tuple[str, subprocess.Popen[bytes]]]:
        """The processes that ended by themselves (not killed here), forgotten: to be started again."""
        with self._lock:
            exited = [
                (name, p) for name, part in self.parts.items() for p in part.running if p.poll() is not None
            ]
            for _, process in exited:
                self.forget(process)
        return exited

    def stop(self) -> None:
        """SIGTERM to everything still running, then SIGKILL what did not stop within 20 s."""
        processes = [p for part in self.parts.values() for p in part.running]
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for part in self.parts.values():
            part.running.clear()
