"""Settings of the tunnel server deployable (``KAAS_`` prefix), read once by its composition root.

Owned by ``kaas_tunnel``; ``TunnelSettings()`` is built by whoever starts the server (``kaas tunnel``,
the embedded mode, tests) and passed to ``TunnelServer``. Inner code never reads the environment.
"""

from __future__ import annotations

from pydantic import Field

from kaas_core.serving.settings import HttpInputSettings
from kaas_core.settings import TunnelRegistrySettings, TunnelSecretSettings


class TunnelSettings(TunnelRegistrySettings, TunnelSecretSettings, HttpInputSettings):
    """Where the tunnel server listens, how it finds its peers, and its limits and timeouts (its internal
    endpoint's ``KAAS_HTTP_*`` input limits and body cap are the API's, from ``HttpInputSettings``)."""

    redis_max_connections: int = Field(
        default=50,
        ge=1,
        description="Connections to the registry's Redis at most; more callers at once wait for one (up to"
        " redis_wait_seconds) instead of failing: thousands of sessions claim and refresh through them.",
    )
    redis_wait_seconds: float = Field(default=20.0, gt=0, description="How long a caller waits for one.")

    tunnel_host: str = "127.0.0.1"
    tunnel_port: int = Field(default=8010, ge=0, le=65535, description="0 picks a free port")
    tunnel_path: str = "/v1/tunnel"
    internal_host: str = "127.0.0.1"
    internal_port: int = Field(default=8011, ge=0, le=65535, description="0 picks a free port")
    internal_advertise_url: str | None = Field(
        default=None, description="how other processes reach the internal endpoint; http://host:port if unset"
    )

    k8s_proxy_host: str = "127.0.0.1"
    k8s_proxy_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Where this process serves kubectl's /k8s/clusters/... itself (kaas_tunnel.k8s_proxy;"
        " the ingress sends /k8s here); None: not served (the API's k8s proxy still is), 0 picks a free port",
    )
    k8s_proxy_read_timeout_seconds: float = Field(
        default=120.0, gt=0, description="per read on the hop to another tunnel process; watches have none"
    )

    registry_ttl_seconds: float = Field(default=30.0, gt=0)
    handshake_timeout_seconds: float = Field(default=10.0, gt=0)
    dial_timeout_seconds: float = Field(default=10.0, gt=0)
    response_head_timeout_seconds: float = Field(default=60.0, gt=0)
    max_streams_per_session: int = Field(default=1024, ge=1)
    stream_window_bytes: int = Field(default=256 * 1024, ge=1024)
    agent_replacements_per_window: int = Field(
        default=5,
        ge=1,
        description="How many newer agent sessions may replace a live one, per cluster and window; a dial"
        " beyond that answers 429 and the live session stays (kaas_tunnel.store.authenticate_and_admit).",
    )
    agent_replacement_window_seconds: float = Field(default=60.0, gt=0)
    max_handshakes_in_progress: int = Field(
        default=128,
        ge=1,
        description="Agent handshakes worked on at once (database and registry work until the session is"
        " recorded); a dial beyond them is refused at once with 503 and a Retry-After that spreads the herd"
        " (kaas_tunnel.admission): after a restart, every agent dials again within seconds. Their database"
        " work is group-committed (kaas_tunnel.group_commit), so more at once costs little more.",
    )
    handshake_lag_limit_seconds: float = Field(
        default=2.0,
        gt=0,
        description="Dials are refused likewise while the event loop runs this late: the server is starved.",
    )
