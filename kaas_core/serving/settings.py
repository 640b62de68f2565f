"""The input-limit settings every kaas HTTP server reads (``KAAS_HTTP_*``, ``KAAS_K8S_PROXY_MAX_BODY_BYTES``).

A mixin of both HTTP deployables' settings, ``kaas_api.config.ApiSettings`` and
``kaas_tunnel.config.TunnelSettings``, so the two cannot drift; the composition roots pass
``http_limits`` to ``kaas_core.serving.limits.server_config``.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kaas_core.serving.limits import HttpLimits

KIB = 1024
MIB = 1024 * KIB
_DEFAULT = HttpLimits()  # the protocol's defaults are the settings' defaults


class HttpInputSettings(BaseSettings):
    """Limits on what a client may send before the application runs; the defaults serve production."""

    model_config = SettingsConfigDict(env_prefix="KAAS_", extra="ignore")

    http_max_head_bytes: int = Field(
        default=_DEFAULT.max_head_bytes,
        ge=1 * KIB,
        description="Request line plus headers, in bytes; more is refused with 431.",
    )
    http_max_headers: int = Field(
        default=_DEFAULT.max_headers, ge=1, description="Header fields per request; more is refused with 431."
    )
    http_head_timeout_seconds: float = Field(
        default=_DEFAULT.head_timeout_seconds,
        gt=0,
        description="The whole request head must arrive within this from the connection's start or the"
        " previous response's end; else 408 and the connection closes.",
    )
    http_body_grace_seconds: float = Field(
        default=_DEFAULT.body_grace_seconds,
        gt=0,
        description="How long a request body may take before its rate is checked.",
    )
    http_body_min_bytes_per_second: float = Field(
        default=_DEFAULT.body_min_bytes_per_second,
        gt=0,
        description="After the grace period a body must have arrived at this average rate (time the server"
        " spent not reading does not count); a slower one is cut off with 408.",
    )
    http_linger_seconds: float = Field(
        default=_DEFAULT.linger_seconds,
        gt=0,
        description="After an answer given before its request body arrived (413), how long the rest of the"
        " body is read and dropped before the connection closes, so that the client reads the answer"
        " rather than a connection reset.",
    )
    k8s_proxy_max_body_bytes: int = Field(
        default=32 * MIB,
        ge=0,
        description="Request bodies through the k8s proxy (and the tunnel server's internal endpoint); larger"
        " ones are refused with 413. kube-apiserver itself refuses requests over about 3 MiB.",
    )

    @property
    def http_limits(self) -> HttpLimits:
        """The protocol-level limits, as ``server_config`` takes them."""
        return HttpLimits(
            max_head_bytes=self.http_max_head_bytes,
            max_headers=self.http_max_headers,
            head_timeout_seconds=self.http_head_timeout_seconds,
            body_grace_seconds=self.http_body_grace_seconds,
            body_min_bytes_per_second=self.http_body_min_bytes_per_second,
            linger_seconds=self.http_linger_seconds,
        )
