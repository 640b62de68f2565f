"""The tunnel client's own bounds, against a socket that accepts and never answers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from provider.addons.kube_client import AddonApplyError, TunnelKubeClient


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An address whose connections are accepted and never answered."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return  # closed
            accepted.append(connection)

    thread = threading.Thread(target=accept, name="silent-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
    thread.join(timeout=5)
    for connection in accepted:
        connection.close()


def test_a_request_the_tunnel_never_answers_fails_as_temporary_within_the_timeout(silent_server: str) -> None:
    started = time.monotonic()
    with TunnelKubeClient(address=silent_server, cluster_id="c" * 32, key=b"k" * 32, timeout=0.3) as client:
        with pytest.raises(AddonApplyError) as caught:
            client.apply({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "x", "namespace": "y"}})
    assert caught.value.temporary
    # the client's retries (3 by default) each wait one timeout; without the bound it waits forever
    assert time.monotonic() - started < 10
