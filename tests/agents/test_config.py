"""The agent config file and environment, and the apiserver connection built from them (kubeconfig, TLS)."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agents.config import (
    AgentConfigError,
    InClusterApiserver,
    KubeconfigApiserver,
    load_agent_config,
)
from agents.forward import ApiserverForwarder, ForwardRequest
from agents.kube import ApiserverConfigError, FileToken, apiserver_connection, kubeconfig_connection
from provider.bootstrap.cloud_init import parse_agent_config, render_user_data
from tests.provider.bootstrap.samples import control_plane_node

TOKEN = "agent-token-that-must-never-be-printed"
POD_ENV = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}


def write_config(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


def base_document(**overrides: Any) -> dict[str, Any]:
    return {"tunnel_url": "wss://kaas.example/v1/tunnel", "cluster_id": "c-1", "token": TOKEN, **overrides}


# --- the config file --------------------------------------------------------------------------------------


def test_reads_the_file_kaas_cloud_init_writes(tmp_path: Path) -> None:
    user_data = render_user_data(
        control_plane_node(
            cluster_id="c-42", node_name="kaas-c42-cp-0", api_endpoint=None,
            tunnel_url="wss://kaas.example/v1/tunnel", agent_token=TOKEN,
        )
    )
    path = write_config(tmp_path / "agent.yaml", parse_agent_config(user_data))

    config = load_agent_config(path, environ=POD_ENV)

    assert config.tunnel_url == "wss://kaas.example/v1/tunnel"
    assert config.cluster_id == "c-42"
    assert config.agent_token.get_secret_value() == TOKEN
    assert config.node_name == "kaas-c42-cp-0"
    assert config.apiserver == InClusterApiserver(host="10.96.0.1", port=443)
    assert config.report_interval_seconds == 5
    assert config.reconnect_backoff_min_seconds <= config.reconnect_backoff_max_seconds


def test_the_agent_token_never_appears_in_repr_or_dumps(tmp_path: Path) -> None:
    config = load_agent_config(write_config(tmp_path / "agent.yaml", base_document()), environ=POD_ENV)

    assert TOKEN not in repr(config)
    assert TOKEN not in str(config)
    assert TOKEN not in config.model_dump_json()


def test_invalid_values_are_reported_by_key_without_echoing_the_token(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "agent.yaml",
        base_document(tunnel_url="https://kaas.example/v1/tunnel", report_interval_seconds=0),
    )

    with pytest.raises(AgentConfigError) as caught:
        load_agent_config(path, environ=POD_ENV)

    message = str(caught.value)
    assert "tunnel_url" in message
    assert "report_interval_seconds" in message
    assert TOKEN not in message


def test_missing_keys_are_named(tmp_path: Path) -> None:
    path = write_config(tmp_path / "agent.yaml", {"tunnel_url": "ws://127.0.0.1:8000/v1/tunnel"})

    with pytest.raises(AgentConfigError, match=r"cluster_id.*agent_token|agent_token.*cluster_id"):
        load_agent_config(path, environ=POD_ENV)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match="does not exist"):
        load_agent_config(tmp_path / "nope.yaml", environ=POD_ENV)


@pytest.mark.parametrize("text", ["tunnel_url: [unclosed", "- a\n- list\n"])
def test_a_file_that_is_not_a_yaml_mapping_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(text)

    with pytest.raises(AgentConfigError, match=str(path)):
        load_agent_config(path, environ=POD_ENV)


def test_backoff_min_must_not_exceed_max(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "agent.yaml",
        base_document(reconnect_backoff_min_seconds=30, reconnect_backoff_max_seconds=5),
    )

    with pytest.raises(AgentConfigError, match="reconnect_backoff_min_seconds"):
        load_agent_config(path, environ=POD_ENV)


def test_in_cluster_outside_a_pod_says_what_to_set(tmp_path: Path) -> None:
    path = write_config(tmp_path / "agent.yaml", base_document())

    with pytest.raises(AgentConfigError, match="KUBERNETES_SERVICE_HOST"):
        load_agent_config(path, environ={})


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path / "agent.yaml", base_document())
    env = {
        **POD_ENV,
        "KAAS_AGENT_TUNNEL_URL": "ws://127.0.0.1:9999/v1/tunnel",
        "KAAS_AGENT_TOKEN": "from-env",
        "KAAS_AGENT_REPORT_INTERVAL_SECONDS": "2.5",
        "KAAS_AGENT_KUBECONFIG": str(tmp_path / "kubeconfig"),
    }

    config = load_agent_config(path, environ=env)

    assert config.tunnel_url == "ws://127.0.0.1:9999/v1/tunnel"
    assert config.agent_token.get_secret_value() == "from-env"
    assert config.report_interval_seconds == 2.5
    assert config.apiserver == KubeconfigApiserver(kubeconfig=tmp_path / "kubeconfig")


def test_kubeconfig_apiserver_from_the_file(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "agent.yaml",
        base_document(apiserver={"kubeconfig": "/etc/kaas/kubeconfig", "context": "x"}),
    )

    config = load_agent_config(path, environ={})

    assert config.apiserver == KubeconfigApiserver(kubeconfig=Path("/etc/kaas/kubeconfig"), context="x")


def test_unknown_keys_are_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path / "agent.yaml", base_document(tunel_url="typo"))

    with pytest.raises(AgentConfigError, match="tunel_url"):
        load_agent_config(path, environ=POD_ENV)


# --- certificates for the TLS tests -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca_pem: bytes
    server_cert_pem: bytes
    server_key_pem: bytes
    client_cert_pem: bytes
    client_key_pem: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificate(
    *, subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None = None,
    issuer_key: ec.EllipticCurvePrivateKey | None = None, ca: bool = False, server: bool = False,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    return builder.sign(issuer_key or key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(subject="test-ca", key=ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate(subject="apiserver", key=server_key, issuer=ca.subject, issuer_key=ca_key,
                          server=True)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate(subject="system:kaas-agent", key=client_key, issuer=ca.subject, issuer_key=ca_key)
    pem = serialization.Encoding.PEM
    return Pki(ca.public_bytes(pem), server.public_bytes(pem), _key_pem(server_key), client.public_bytes(pem),
               _key_pem(client_key))


@dataclass(frozen=True)
class TlsServer:
    url: str
    seen: list[dict[str, Any]]


@pytest.fixture
async def tls_server(pki: Pki, tmp_path: Path) -> AsyncIterator[TlsServer]:
    """A tiny HTTPS server that asks for a client certificate and answers with what it saw."""
    (tmp_path / "server.crt").write_bytes(pki.server_cert_pem)
    (tmp_path / "server.key").write_bytes(pki.server_key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    context.load_verify_locations(cadata=pki.ca_pem.decode())
    context.verify_mode = ssl.CERT_OPTIONAL
    seen: list[dict[str, Any]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            pairs = (line.partition(":") for line in lines[1:] if line)
            headers = {k.lower(): v.strip() for k, _, v in pairs}
            peer = writer.get_extra_info("peercert") or {}
            subject = dict(item[0] for item in peer.get("subject", ()))
            seen.append({"request_line": lines[0], "client_cn": subject.get("commonName"),
                         "authorization": headers.get("authorization")})
            body = json.dumps(seen[-1]).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
        except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield TlsServer(url=f"https://127.0.0.1:{port}", seen=seen)
    finally:
        server.close()
        await server.wait_closed()


def write_kubeconfig(path: Path, *, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    document = {
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }
    path.write_text(yaml.safe_dump(document))
    return path


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def get_version(connection: Any) -> tuple[int, dict[str, Any]]:
    async with ApiserverForwarder(connection, connect_timeout_seconds=3) as forwarder:
        response = await forwarder.forward(
            ForwardRequest(method="GET", path="/version", user="kaas:alice", groups=["kaas:viewer"])
        )
        return response.status, json.loads(await response.read())


# --- kubeconfig users and TLS -------------------------------------------------------------------------------


async def test_client_certificate_user_with_ca_data(pki: Pki, tls_server: TlsServer, tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(
        tmp_path / "kubeconfig",
        cluster={"server": tls_server.url, "certificate-authority-data": b64(pki.ca_pem)},
        user={
            "client-certificate-data": b64(pki.client_cert_pem),
            "client-key-data": b64(pki.client_key_pem),
        },
    )

    status, seen = await get_version(kubeconfig_connection(kubeconfig))

    assert status == 200
    assert seen["client_cn"] == "system:kaas-agent"
    assert seen["authorization"] is None


async def test_ca_and_token_files_are_relative_to_the_kubeconfig(
    pki: Pki, tls_server: TlsServer, tmp_path: Path
) -> None:
    (tmp_path / "ca.crt").write_bytes(pki.ca_pem)
    (tmp_path / "token").write_text("file-token\n")
    kubeconfig = write_kubeconfig(
        tmp_path / "kubeconfig",
        cluster={"server": tls_server.url, "certificate-authority": "ca.crt"},
        user={"tokenFile": "token"},
    )

    status, seen = await get_version(kubeconfig_connection(kubeconfig))

    assert status == 200
    assert seen["authorization"] == "Bearer file-token"


async def test_an_unknown_server_certificate_is_refused_with_502(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", cluster={"server": tls_server.url},
                                  user={"token": "t"})

    status, body = await get_version(kubeconfig_connection(kubeconfig))

    assert status == 502
    assert body["kind"] == "Status"
    assert tls_server.seen == []


async def test_insecure_skip_tls_verify_accepts_an_unknown_server_certificate(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    kubeconfig = write_kubeconfig(
        tmp_path / "kubeconfig", cluster={"server": tls_server.url, "insecure-skip-tls-verify": True},
        user={"token": "t"},
    )

    status, seen = await get_version(kubeconfig_connection(kubeconfig))

    assert status == 200
    assert seen["authorization"] == "Bearer t"


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ({"exec": {"command": "aws"}}, "exec is not supported"),
        ({}, "needs a token"),
        ({"client-certificate-data": b64(b"x")}, "go together"),
        ({"token": "t", "client-key-data": "not base64!"}, "not valid base64"),
    ],
)
def test_unusable_kubeconfig_users_are_clear_errors(
    tmp_path: Path, user: dict[str, Any], message: str
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", cluster={"server": "https://127.0.0.1:6443"},
                                  user=user)

    with pytest.raises(ApiserverConfigError, match=message):
        kubeconfig_connection(kubeconfig)


def test_an_unknown_context_is_a_clear_error(tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", cluster={"server": "http://127.0.0.1:1"},
                                  user={"token": "t"})

    with pytest.raises(ApiserverConfigError, match="no context named 'other'"):
        kubeconfig_connection(kubeconfig, context="other")


def test_in_cluster_connection_uses_the_service_account(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_bytes(pki.ca_pem)
    (tmp_path / "token").write_text("sa-token")
    settings = InClusterApiserver(host="fd00::1", port=6443, token_path=tmp_path / "token",
                                  ca_path=tmp_path / "ca.crt")

    connection = apiserver_connection(settings)

    assert connection.base_url == "https://[fd00::1]:6443"
    assert connection.authorization() == "Bearer sa-token"
    assert connection.ssl_context is not None
    assert connection.ssl_context.verify_mode == ssl.CERT_REQUIRED


def test_a_rotated_service_account_token_is_picked_up(tmp_path: Path) -> None:
    token_path = tmp_path / "token"
    token_path.write_text("first")
    os.utime(token_path, ns=(1_000_000_000, 1_000_000_000))
    token = FileToken(token_path, reread_seconds=3600)
    assert token.token() == "first"

    replacement = tmp_path / "token.new"
    replacement.write_text("second")
    replacement.replace(token_path)  # kubelet swaps the file atomically

    assert token.token() == "second"


def test_a_briefly_missing_token_file_keeps_the_last_token(tmp_path: Path) -> None:
    token_path = tmp_path / "token"
    token_path.write_text("first")
    token = FileToken(token_path, reread_seconds=0.0001)
    token_path.unlink()

    assert token.token() == "first"
