"""A real HTTP receiver for webhook tests: a threaded ``http.server`` on 127.0.0.1 that records every
request and answers a scripted sequence of status codes (the last one repeats)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


class Receiver:
    def __init__(self, statuses: Sequence[int], port: int, *, delay_seconds: float = 0.0) -> None:
        self._statuses = list(statuses)
        self.delay_seconds = delay_seconds
        self._lock = threading.Lock()
        self.requests: list[Received] = []
        self.url = f"http://127.0.0.1:{port}/hooks/kaas"

    def record(self, received: Received) -> int:
        with self._lock:
            self.requests.append(received)
            return self._statuses.pop(0) if len(self._statuses) > 1 else self._statuses[0]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {name.lower(): value for name, value in self.headers.items()}
        time.sleep(self.server.receiver.delay_seconds)  # a slow receiver keeps the attempt in flight
        status = self.server.receiver.record(Received(path=self.path, headers=headers, body=body))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: Receiver


@contextmanager
def run_receiver(statuses: Sequence[int] = (200,), *, delay_seconds: float = 0.0) -> Iterator[Receiver]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.receiver = Receiver(statuses, server.server_address[1], delay_seconds=delay_seconds)
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield server.receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
