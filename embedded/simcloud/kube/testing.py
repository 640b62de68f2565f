"""Running a ``KubeStandin`` on 127.0.0.1 in a background thread, and kubeconfigs that point at it.

Owned by the Kubernetes stand-in; used by tests (``tests/simcloud/kube``, later the agent's tests) and by
the embedded mode. The server runs uvicorn in a daemon thread with its own event loop on a free port
(bound to port 0 before the server starts, so parallel test runs never collide).

HTTPS by default, with a throwaway CA (``handle.ca``, PEM): kubectl sends a kubeconfig's bearer token only
over TLS, so over plain HTTP it could never authenticate. ``tls=False`` serves plain HTTP for clients
that send the ``Authorization`` header themselves (httpx, the agent); then ``handle.ca`` is None.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
import yaml

from simcloud.kube.exec import MAX_MESSAGE_BYTES
from simcloud.kube.identity import Identity
from simcloud.kube.server import KubeStandin
from simcloud.kube.tls import make_serving_certificate
from simcloud.serving import QuietServer

STARTUP_TIMEOUT_SECONDS = 10.0
SHUTDOWN_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class KubeStandinHandle:
    url: str
    ca: bytes | None  # the CA's PEM to trust, or None for plain HTTP
    tokens: Mapping[str, Identity]
    standin: KubeStandin

    def write_kubeconfig(self, path: Path, *, token: str, namespace: str = "default") -> Path:
        return write_kubeconfig(path, server=self.url, token=token, ca=self.ca, namespace=namespace)


def kubeconfig_document(
    *, server: str, token: str, ca: bytes | None = None, namespace: str = "default", name: str = "standin"
) -> dict[str, object]:
    cluster: dict[str, object] = {"server": server}
    if ca is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
        "current-context": name,
        "preferences": {},
    }


def write_kubeconfig(
    path: Path, *, server: str, token: str, ca: bytes | None = None, namespace: str = "default"
) -> Path:
    """Write a kubeconfig (mode 0600) that reaches ``server`` with ``token``; returns ``path``."""
    document = kubeconfig_document(server=server, token=token, ca=ca, namespace=namespace)
    path.write_text(yaml.safe_dump(document))
    path.chmod(0o600)
    return path


@contextmanager
def run_kube_standin(
    *,
    version: str = "v1.30.2",
    tokens: Mapping[str, Identity],
    manifest_files: Iterable[Path] = (),
    tls: bool = True,
    state_file: Path | None = None,
) -> Iterator[KubeStandinHandle]:
    """Serve a ``KubeStandin`` on 127.0.0.1:<free port> for the duration of the block: a fresh one, or
    with ``state_file`` the objects saved there (kept there again when the block exits)."""
    standin = KubeStandin(
        version=version, tokens=tokens, manifest_files=manifest_files, state_file=state_file
    )
    with tempfile.TemporaryDirectory(prefix="kube-standin-") as workdir:
        ca: bytes | None = None
        ssl_options: dict[str, str] = {}
        if tls:
            certificate = make_serving_certificate()
            ca = certificate.ca_pem
            (Path(workdir) / "tls.crt").write_bytes(certificate.cert_pem)
            (Path(workdir) / "tls.key").write_bytes(certificate.key_pem)
            ssl_options = {"ssl_certfile": f"{workdir}/tls.crt", "ssl_keyfile": f"{workdir}/tls.key"}
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only then (else ~40 ms delayed-ACK stalls)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            # websockets-sansio sends a refused handshake's Status body (the ASGI denial-response extension);
            # uvicorn 0.54 then logs a spurious "returned without completing handshake" (Kludex/uvicorn#3138)
            standin.app, lifespan="off", ws="websockets-sansio", ws_max_size=MAX_MESSAGE_BYTES,
            log_level="warning", access_log=False,
            timeout_graceful_shutdown=2, **ssl_options,  # type: ignore[arg-type]
        )
        server = QuietServer(config)
        failures: list[BaseException] = []

        def serve() -> None:
            try:
                asyncio.run(server.serve(sockets=[sock]))
            except BaseException as exc:  # reported to the caller below
                failures.append(exc)

        thread = threading.Thread(target=serve, name=f"kube-standin-{port}", daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
            while not server.started:
                if failures or not thread.is_alive():
                    raise RuntimeError(f"the kube stand-in did not start: {failures}")
                if time.monotonic() > deadline:
                    raise TimeoutError("the kube stand-in did not start in time")
                time.sleep(0.01)
            scheme = "https" if tls else "http"
            yield KubeStandinHandle(url=f"{scheme}://127.0.0.1:{port}", ca=ca, tokens=dict(tokens),
                                    standin=standin)
        finally:
            standin.close()
            server.should_exit = True
            thread.join(timeout=SHUTDOWN_TIMEOUT_SECONDS)
            sock.close()
