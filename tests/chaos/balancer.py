"""A small TCP load balancer with health checks: what a Kubernetes Service (or an Ingress) is to the replicas.

Test infrastructure of the HA harness (``tests.chaos.ha``), which runs one in front of the API replicas and
one in front of the tunnel replicas, as a process of the rig: ``python -m tests.chaos.balancer --port P
--backend 127.0.0.1:A --backend 127.0.0.1:B [--health-path /healthz]``.

Each client connection goes to the next healthy backend in turn (round robin) and is piped byte for byte
both ways (HTTP, WebSocket: it does not parse them); when either side ends, both are closed, so a client of a
killed backend sees its connection drop, as it would behind kube-proxy. A backend is checked every
``health_interval`` seconds (a TCP connect, and with ``health_path`` an HTTP GET that must answer 2xx), and a
connect to it that fails marks it down at once: a killed backend stops receiving new connections. A
connection that cannot reach any backend is answered ``502 Bad Gateway`` (what nginx answers then) and
closed: the client knows nothing reached a server and may send again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import signal
import sys
from dataclasses import dataclass

logger = logging.getLogger("tests.chaos.balancer")

BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
CHUNK = 64 * 1024


@dataclass
class Backend:
    host: str
    port: int
    healthy: bool = True

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class Balancer:
    """Round robin over the healthy backends; see the module docstring."""

    def __init__(
        self,
        backends: list[Backend],
        *,
        health_path: str | None = None,
        health_interval: float = 0.25,
        connect_timeout: float = 2.0,
    ) -> None:
        if not backends:
            raise ValueError("a balancer needs at least one backend")
        self.backends = backends
        self.health_path = health_path
        self.health_interval = health_interval
        self.connect_timeout = connect_timeout
        self._turn = itertools.count()
        self.bad_gateways = 0  # connections no backend took

    def _candidates(self) -> list[Backend]:
        """Healthy ones first, starting at the next turn; the others last (a check may be behind)."""
        start = next(self._turn) % len(self.backends)
        ordered = self.backends[start:] + self.backends[:start]
        return [b for b in ordered if b.healthy] + [b for b in ordered if not b.healthy]

    def _mark(self, backend: Backend, *, healthy: bool) -> None:
        if backend.healthy != healthy:
            logger.warning("backend %s is %s", backend, "up" if healthy else "DOWN")
        backend.healthy = healthy

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for backend in self._candidates():
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(backend.host, backend.port), self.connect_timeout
                )
            except (OSError, TimeoutError):
                self._mark(backend, healthy=False)
        return None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:
            self.bad_gateways += 1
            with contextlib.suppress(OSError):
                writer.write(BAD_GATEWAY)
                await writer.drain()
            writer.close()
            return
        up_reader, up_writer = upstream
        pipes = [
            asyncio.create_task(_pipe(reader, up_writer)),
            asyncio.create_task(_pipe(up_reader, writer)),
        ]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for one in (writer, up_writer):
                one.close()

    async def _healthy(self, backend: Backend) -> bool:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(backend.host, backend.port), self.connect_timeout
            )
        except (OSError, TimeoutError):
            return False
        try:
            if self.health_path is None:
                return True
            writer.write(f"GET {self.health_path} HTTP/1.0\r\nHost: {backend}\r\n\r\n".encode())
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), self.connect_timeout)
            parts = status.split()
            return len(parts) >= 2 and parts[1].startswith(b"2")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()

    async def check_forever(self) -> None:
        while True:
            results = await asyncio.gather(*(self._healthy(b) for b in self.backends))
            for backend, healthy in zip(self.backends, results, strict=True):
                self._mark(backend, healthy=healthy)
            await asyncio.sleep(self.health_interval)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()


async def serve(balancer: Balancer, *, host: str, port: int, stop: asyncio.Event) -> None:
    server = await asyncio.start_server(balancer.handle, host, port)
    checker = asyncio.create_task(balancer.check_forever())
    try:
        await stop.wait()
    finally:
        checker.cancel()
        server.close()
        with contextlib.suppress(asyncio.CancelledError):
            await checker


def parse_backend(text: str) -> Backend:
    host, _, port = text.rpartition(":")
    return Backend(host=host or "127.0.0.1", port=int(port))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos.balancer", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, required=True, help="listens on 127.0.0.1:PORT")
    parser.add_argument("--backend", action="append", required=True, help="HOST:PORT (repeatable)")
    parser.add_argument("--health-path", help="an HTTP path that must answer 2xx (default: a TCP connect)")
    parser.add_argument("--health-interval", type=float, default=0.25)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    balancer = Balancer(
        [parse_backend(b) for b in args.backend],
        health_path=args.health_path,
        health_interval=args.health_interval,
    )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(balancer, host="127.0.0.1", port=args.port, stop=stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
