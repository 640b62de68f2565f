"""``nodesim.apiserver_balancer``: new connections go round robin to the backends in rotation, never to one
taken out, and skip one that refuses; a connection it carries stays when its backend is taken out.

Plain TCP backends that name themselves (the balancer relays bytes; TLS is the apiservers' own), added
``ready`` so no health check is needed.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from nodesim.apiserver_balancer import ApiserverBalancer
from nodesim.kube_real import write_cluster_pki


class _Named(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        name: bytes = self.server.name  # type: ignore[attr-defined]
        while self.request.recv(64):
            self.request.sendall(name)


class Backend(socketserver.ThreadingTCPServer):
    """Answers every chunk it receives with its own name, on its own loopback port."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _Named)
        self.name = name.encode()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        port: int = self.server_address[1]
        return port

    def close(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def balancer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiserverBalancer]:
    pki = tmp_path_factory.mktemp("pki")
    write_cluster_pki(pki)
    running = ApiserverBalancer(ca_pem=(pki / "ca.crt").read_bytes(), check_interval=60)
    running.start()
    yield running
    running.close()


@pytest.fixture
def backends() -> Iterator[dict[str, Backend]]:
    started = {name: Backend(name) for name in ("a", "b", "c")}
    yield started
    for backend in started.values():
        backend.close()


def ask(balancer: ApiserverBalancer) -> str:
    with socket.create_connection(("127.0.0.1", balancer.port), timeout=5) as sock:
        sock.sendall(b"?")
        return sock.recv(64).decode()


def test_new_connections_go_round_robin_over_the_backends(
    balancer: ApiserverBalancer, backends: dict[str, Backend]
) -> None:
    for name, backend in backends.items():
        balancer.add(name, backend.port, ready=True)
    answers = [ask(balancer) for _ in range(6)]
    assert sorted(answers) == ["a", "a", "b", "b", "c", "c"]
    assert {state.connections for state in balancer.backends().values()} == {2}


def test_a_backend_taken_out_gets_no_new_connection_but_keeps_the_one_it_carries(
    balancer: ApiserverBalancer, backends: dict[str, Backend]
) -> None:
    balancer.add("a", backends["a"].port, ready=True)
    with socket.create_connection(("127.0.0.1", balancer.port), timeout=5) as carried:
        carried.sendall(b"?")
        assert carried.recv(64) == b"a"
        balancer.add("b", backends["b"].port, ready=True)
        balancer.take_out("a")
        assert {ask(balancer) for _ in range(4)} == {"b"}
        carried.sendall(b"?")
        assert carried.recv(64) == b"a"  # the connection it carried still reaches it
    assert balancer.backends()["a"].in_rotation is False


def test_a_backend_that_refuses_the_connection_is_skipped(
    balancer: ApiserverBalancer, backends: dict[str, Backend]
) -> None:
    balancer.add("a", backends["a"].port, ready=True)
    gone = Backend("gone")
    gone.close()  # its port now refuses
    balancer.add("gone", gone.port, ready=True)
    assert {ask(balancer) for _ in range(4)} == {"a"}


def test_a_removed_backend_is_forgotten(balancer: ApiserverBalancer, backends: dict[str, Backend]) -> None:
    balancer.add("a", backends["a"].port, ready=True)
    balancer.add("b", backends["b"].port, ready=True)
    balancer.remove("a")
    assert set(balancer.backends()) == {"b"}
    assert {ask(balancer) for _ in range(3)} == {"b"}
