"""How the agent reaches its own apiserver: base URL, TLS context and its own credentials.

Owned by the agent. ``apiserver_connection`` turns the ``apiserver`` part of ``AgentConfig`` into an
``ApiserverConnection``; ``agents.forward.ApiserverForwarder`` builds its HTTP client from it. Nothing here
does network I/O; only files are read (kubeconfig, CA, client certificate, service account token).

The in-cluster service account token is re-read when the file changes (kubelet rotates projected tokens by
swapping a symlink) and at least every ``token_reread_seconds``; a failed re-read keeps the last good token.
"""

from __future__ import annotations

import base64
import binascii
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import yaml

from agents.config import AgentConfigError, ApiserverSettings, InClusterApiserver, KubeconfigApiserver


class ApiserverConfigError(AgentConfigError):
    """The apiserver settings (kubeconfig, CA, certificate, token file) cannot be used."""


class TokenSource(Protocol):
    """Hands out the bearer token to send with the next request."""

    def token(self) -> str: ...


@dataclass(frozen=True)
class StaticToken:
    """A token fixed for the life of the process (a kubeconfig ``token``)."""

    value: str

    def token(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return "StaticToken(value='**********')"


class FileToken:
    """A token read from a file and re-read when the file changes or the re-read interval has passed."""

    def __init__(
        self, path: Path, *, reread_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._path = path
        self._reread_seconds = reread_seconds
        self._clock = clock
        self._value = self._read()
        self._read_at = clock()
        self._stamp = self._file_stamp()

    def __repr__(self) -> str:
        return f"FileToken(path={str(self._path)!r})"

    def _read(self) -> str:
        try:
            value = self._path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ApiserverConfigError(f"cannot read token file {self._path}: {exc.strerror or exc}") from exc
        if not value:
            raise ApiserverConfigError(f"token file {self._path} is empty")
        return value

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self._path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_ino

    def token(self) -> str:
        now = self._clock()
        stamp = self._file_stamp()
        if stamp != self._stamp or now - self._read_at >= self._reread_seconds:
            try:
                self._value = self._read()
            except ApiserverConfigError:
                pass  # mid-rotation or briefly unreadable: the previous token is still the best we have
            else:
                self._stamp = stamp
            self._read_at = now
        return self._value


@dataclass(frozen=True)
class ApiserverConnection:
    """Where the apiserver is and how the agent authenticates to it as itself."""

    base_url: str  # scheme://host:port[/prefix], no trailing slash
    ssl_context: ssl.SSLContext | None  # None for an http:// apiserver
    token_source: TokenSource | None  # None when a client certificate (in ssl_context) authenticates

    def authorization(self) -> str | None:
        """The ``Authorization`` header value for the agent's own identity, if it uses a token."""
        if self.token_source is None:
            return None
        return f"Bearer {self.token_source.token()}"


def _tls_context(
    *,
    ca_file: Path | None = None,
    ca_pem: str | None = None,
    insecure: bool = False,
    client_cert_pem: bytes | None = None,
    client_key_pem: bytes | None = None,
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if ca_file is not None:
            context.load_verify_locations(cafile=str(ca_file))
        elif ca_pem is not None:
            context.load_verify_locations(cadata=ca_pem)
        elif not insecure:
            context.load_default_certs()
    except (OSError, ssl.SSLError) as exc:
        raise ApiserverConfigError(f"cannot load the apiserver CA: {exc}") from exc
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert_pem is not None and client_key_pem is not None:
        # load_cert_chain only reads files; they live just long enough to be loaded.
        with tempfile.TemporaryDirectory(prefix="kaas-agent-") as directory:
            cert_path = Path(directory) / "client.crt"
            key_path = Path(directory) / "client.key"
            cert_path.write_bytes(client_cert_pem)
            key_path.touch(mode=0o600)
            key_path.write_bytes(client_key_pem)
            try:
                context.load_cert_chain(certfile=str(cert_path), keyfile=str(key_path))
            except (OSError, ssl.SSLError) as exc:
                raise ApiserverConfigError(f"cannot load the client certificate and key: {exc}") from exc
    return context


def in_cluster_connection(settings: InClusterApiserver) -> ApiserverConnection:
    """The pod's own apiserver, with the service account token and CA."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    if not settings.ca_path.is_file():
        raise ApiserverConfigError(f"service account CA {settings.ca_path} does not exist")
    return ApiserverConnection(
        base_url=f"https://{host}:{settings.port}",
        ssl_context=_tls_context(ca_file=settings.ca_path),
        token_source=FileToken(settings.token_path, reread_seconds=settings.token_reread_seconds),
    )


def _named(entries: Any, name: str, what: str, path: Path) -> dict[str, Any]:
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(what)
            if not isinstance(body, dict):
                raise ApiserverConfigError(f"kubeconfig {path}: {what} {name!r} has no {what} section")
            return body
    raise ApiserverConfigError(f"kubeconfig {path}: no {what} named {name!r}")


def _decode(value: Any, key: str, path: Path) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiserverConfigError(f"kubeconfig {path}: {key} is not valid base64") from exc


def _file_or_data(section: dict[str, Any], key: str, base: Path, path: Path) -> bytes | None:
    if section.get(f"{key}-data"):
        return _decode(section[f"{key}-data"], f"{key}-data", path)
    if section.get(key):
        file = base / str(section[key])
        try:
            return file.read_bytes()
        except OSError as exc:
            raise ApiserverConfigError(f"kubeconfig {path}: cannot read {file}: {exc.strerror}") from exc
    return None


_UNSUPPORTED_USER_KEYS = ("exec", "auth-provider", "username", "password")
_UNSUPPORTED_CLUSTER_KEYS = ("proxy-url", "tls-server-name")


def kubeconfig_connection(path: Path, *, context: str | None = None) -> ApiserverConnection:
    """The apiserver of one context of a kubeconfig (token or client-certificate users)."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ApiserverConfigError(f"cannot read kubeconfig {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ApiserverConfigError(f"kubeconfig {path} is not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise ApiserverConfigError(f"kubeconfig {path} is not a mapping")
    context_name = context or document.get("current-context")
    if not context_name:
        raise ApiserverConfigError(f"kubeconfig {path} has no current-context; set apiserver.context")
    ctx = _named(document.get("contexts"), str(context_name), "context", path)
    cluster = _named(document.get("clusters"), str(ctx.get("cluster")), "cluster", path)
    user = _named(document.get("users"), str(ctx.get("user")), "user", path) if ctx.get("user") else {}
    base = path.parent

    for key in _UNSUPPORTED_CLUSTER_KEYS:
        if cluster.get(key):
            raise ApiserverConfigError(f"kubeconfig {path}: cluster {key} is not supported by the agent")
    for key in _UNSUPPORTED_USER_KEYS:
        if user.get(key):
            raise ApiserverConfigError(f"kubeconfig {path}: user {key} is not supported by the agent")

    server = str(cluster.get("server") or "").rstrip("/")
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiserverConfigError(f"kubeconfig {path}: the server must be an http(s) URL, got {server!r}")
    if parts.query or parts.fragment or parts.username:
        raise ApiserverConfigError(f"kubeconfig {path}: cluster server must not carry a query or credentials")

    token_source: TokenSource | None = None
    if user.get("token"):
        token_source = StaticToken(str(user["token"]))
    elif user.get("tokenFile"):
        token_source = FileToken(base / str(user["tokenFile"]))
    cert = _file_or_data(user, "client-certificate", base, path)
    client_key = _file_or_data(user, "client-key", base, path)
    if (cert is None) != (client_key is None):
        raise ApiserverConfigError(f"kubeconfig {path}: client-certificate and client-key go together")
    if token_source is None and cert is None:
        raise ApiserverConfigError(f"kubeconfig {path}: the user needs a token, tokenFile or client cert")

    ssl_context: ssl.SSLContext | None = None
    if parts.scheme == "https":
        ca = _file_or_data(cluster, "certificate-authority", base, path)
        ssl_context = _tls_context(
            ca_pem=ca.decode("ascii", errors="replace") if ca is not None else None,
            insecure=bool(cluster.get("insecure-skip-tls-verify")),
            client_cert_pem=cert,
            client_key_pem=client_key,
        )
    elif cert is not None:
        raise ApiserverConfigError(f"kubeconfig {path}: a client certificate needs an https server")
    return ApiserverConnection(base_url=server, ssl_context=ssl_context, token_source=token_source)


def apiserver_connection(settings: ApiserverSettings) -> ApiserverConnection:
    """The connection the ``apiserver`` part of ``AgentConfig`` describes."""
    if isinstance(settings, KubeconfigApiserver):
        return kubeconfig_connection(settings.kubeconfig, context=settings.context)
    return in_cluster_connection(settings)
