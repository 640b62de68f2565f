"""The agent's one typed settings object, and the loader that builds it from ``/etc/kaas/agent.yaml``.

Owned by the agent. ``load_agent_config`` is called once by the agent's entry point (the composition root);
everything else receives the resulting ``AgentConfig`` as an argument and never reads the environment.

The file is the one kaas's cloud-init writes (``provider.bootstrap.cloud_init``): ``tunnel_url``,
``cluster_id`` and the agent token (key ``token``, or ``agent_token``), plus optional ``node_name``/``role``
and optional apiserver settings. ``KAAS_AGENT_*`` environment variables override the file (see
``ENV_OVERRIDES``). The agent token is a ``SecretStr``: it never appears in a repr, a log line or an error.

Where the agent's own apiserver is:
- in-cluster (the default): ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT``, the service
  account token file (re-read when kubelet rotates it) and the service account CA;
- a kubeconfig file (``apiserver: {kubeconfig: /path, context: name}``), for tests and for agents that run
  outside a pod; token and client-certificate users, ``insecure-skip-tls-verify`` and http servers work.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_CONFIG_PATH = Path("/etc/kaas/agent.yaml")
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
ENV_PREFIX = "KAAS_AGENT_"

# Environment variable (after the prefix) → dotted key in the config document.
ENV_OVERRIDES: dict[str, str] = {
    "TUNNEL_URL": "tunnel_url",
    "CLUSTER_ID": "cluster_id",
    "TOKEN": "agent_token",
    "AGENT_TOKEN": "agent_token",
    "NODE_NAME": "node_name",
    "REPORT_INTERVAL_SECONDS": "report_interval_seconds",
    "REPORT_HEARTBEAT_SECONDS": "report_heartbeat_seconds",
    "RECONNECT_BACKOFF_MIN_SECONDS": "reconnect_backoff_min_seconds",
    "RECONNECT_BACKOFF_MAX_SECONDS": "reconnect_backoff_max_seconds",
    "KUBECONFIG": "apiserver.kubeconfig",
    "KUBECONFIG_CONTEXT": "apiserver.context",
    "APISERVER_HOST": "apiserver.host",
    "APISERVER_PORT": "apiserver.port",
    "APISERVER_TOKEN_PATH": "apiserver.token_path",
    "APISERVER_CA_PATH": "apiserver.ca_path",
}


class AgentConfigError(Exception):
    """The agent cannot start with this configuration; the message says which key is wrong and why."""


class InClusterApiserver(BaseModel):
    """The apiserver of the cluster the agent runs in, reached with the pod's service account."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["in_cluster"] = "in_cluster"
    host: str = Field(min_length=1, description="KUBERNETES_SERVICE_HOST when not set")
    port: int = Field(default=443, ge=1, le=65535, description="KUBERNETES_SERVICE_PORT when not set")
    token_path: Path = SERVICE_ACCOUNT_DIR / "token"
    ca_path: Path = SERVICE_ACCOUNT_DIR / "ca.crt"
    token_reread_seconds: float = Field(default=60.0, gt=0, description="Re-read the rotated token so often")


class KubeconfigApiserver(BaseModel):
    """An apiserver described by a kubeconfig file (tests, or an agent running outside the cluster)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["kubeconfig"] = "kubeconfig"
    kubeconfig: Path
    context: str | None = Field(default=None, description="The kubeconfig's current-context when not set")


ApiserverSettings = Annotated[InClusterApiserver | KubeconfigApiserver, Field(discriminator="kind")]


class AgentConfig(BaseModel):
    """Everything one agent process needs: where kaas is, who it is, and where its own apiserver is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tunnel_url: str = Field(description="ws:// or wss:// URL of kaas's tunnel endpoint")
    cluster_id: str = Field(min_length=1)
    agent_token: SecretStr
    node_name: str | None = None
    role: str | None = None
    apiserver: ApiserverSettings
    report_interval_seconds: float = Field(
        default=5.0, gt=0, le=3600, description="how often the agent observes its cluster's nodes"
    )
    report_heartbeat_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="an unchanged observation is sent at most this often (a change is sent at once)",
    )
    reconnect_backoff_min_seconds: float = Field(default=1.0, gt=0)
    reconnect_backoff_max_seconds: float = Field(default=60.0, gt=0)

    @field_validator("tunnel_url")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"must be a ws:// or wss:// URL with a host, got {value!r}")
        return value

    @field_validator("agent_token")
    @classmethod
    def _token_not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _backoff_ordered(self) -> AgentConfig:
        if self.reconnect_backoff_min_seconds > self.reconnect_backoff_max_seconds:
            raise ValueError(
                "reconnect_backoff_min_seconds must not exceed reconnect_backoff_max_seconds "
                f"({self.reconnect_backoff_min_seconds} > {self.reconnect_backoff_max_seconds})"
            )
        return self


def _set_dotted(document: dict[str, Any], dotted: str, value: str) -> None:
    head, _, tail = dotted.partition(".")
    if not tail:
        document[head] = value
        return
    nested = document.get(head)
    if not isinstance(nested, dict):
        nested = {}
        document[head] = nested
    _set_dotted(nested, tail, value)


def _read_document(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AgentConfigError(f"agent config file {path} does not exist") from None
    except OSError as exc:
        raise AgentConfigError(f"cannot read agent config file {path}: {exc.strerror or exc}") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AgentConfigError(f"agent config file {path} is not valid YAML: {exc}") from exc
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise AgentConfigError(f"agent config file {path} must be a mapping, got {type(document).__name__}")
    return dict(document)


def _apiserver_document(raw: object, environ: Mapping[str, str]) -> dict[str, Any]:
    """Fill the in-cluster defaults from the pod's environment; a ``kubeconfig`` key selects that kind."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise AgentConfigError(f"apiserver must be a mapping, got {type(raw).__name__}")
    document = dict(raw)
    if "kind" not in document:
        document["kind"] = "kubeconfig" if "kubeconfig" in document else "in_cluster"
    if document["kind"] == "in_cluster":
        if "host" not in document:
            host = environ.get("KUBERNETES_SERVICE_HOST")
            if not host:
                raise AgentConfigError(
                    "the agent is not running in a pod (KUBERNETES_SERVICE_HOST is not set): "
                    "set apiserver.host or apiserver.kubeconfig in the agent config"
                )
            document["host"] = host
        if "port" not in document and environ.get("KUBERNETES_SERVICE_PORT"):
            document["port"] = environ["KUBERNETES_SERVICE_PORT"]
    return document


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(document)"
        # Never echo the input: it may be the agent token.
        problems.append(f"{location}: {item['msg']}")
    return "; ".join(problems)


def agent_config_from_mapping(document: Mapping[str, Any], *, environ: Mapping[str, str]) -> AgentConfig:
    """Validate one already-parsed config document (``environ`` supplies the in-cluster defaults)."""
    data = dict(document)
    if "token" in data:
        if "agent_token" in data:
            raise AgentConfigError("set the agent token once, as either token or agent_token")
        data["agent_token"] = data.pop("token")
    data["apiserver"] = _apiserver_document(data.get("apiserver"), environ)
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise AgentConfigError(f"invalid agent config: {_describe(exc)}") from None


def load_agent_config(
    path: Path | str = DEFAULT_CONFIG_PATH, *, environ: Mapping[str, str] | None = None
) -> AgentConfig:
    """Read the agent config file, apply ``KAAS_AGENT_*`` overrides, validate; ``AgentConfigError`` if bad.

    ``environ`` defaults to the process environment; only the entry point should rely on that.
    """
    env = os.environ if environ is None else environ
    document = _read_document(Path(path))
    if "token" in document and (env.get(ENV_PREFIX + "TOKEN") or env.get(ENV_PREFIX + "AGENT_TOKEN")):
        document.pop("token")
    if env.get(ENV_PREFIX + "KUBECONFIG"):
        # A kubeconfig from the environment replaces whatever apiserver the file describes.
        document["apiserver"] = {"kind": "kubeconfig"}
    for name, key in ENV_OVERRIDES.items():
        value = env.get(ENV_PREFIX + name)
        if value:
            _set_dotted(document, key, value)
    return agent_config_from_mapping(document, environ=env)
