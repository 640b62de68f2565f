"""Settings of the API deployable.

One typed object, read once from the environment (``KAAS_`` prefix) by the composition root and passed down.
Inner code never reads the environment. What it shares with the workers and the tunnel servers, and the
production check, come from ``kaas_core.settings``; defaults serve the embedded mode.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from kaas_api.projects.policy import CreationPolicy, ProjectCreation
from kaas_core.serving.settings import MIB, HttpInputSettings
from kaas_core.settings import SharedSettings, TunnelRegistrySettings, TunnelSecretSettings


class ApiSettings(SharedSettings, TunnelRegistrySettings, TunnelSecretSettings, HttpInputSettings):
    """The API process's settings (the ``KAAS_HTTP_*`` input limits it shares with the tunnel server come
    from ``HttpInputSettings``)."""

    public_url: str = "http://127.0.0.1:8000"
    cluster_view_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        le=10,
        description="How long an API process answers a cluster GET from memory"
        " (kaas_api.clusters.view_cache): its own writes show at once, another process's (a worker's"
        " status, another replica's change) within this; access changes reach it at once over the"
        " revocation feed. 0 switches it off.",
    )
    database_pool_size: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="Database connections an API process keeps open (bursts open up to 20 more, closed after"
        " use); at most this many of the reads done in one worker thread (the cluster GET) run at once, so"
        " that the busiest read never opens and closes a connection per request.",
    )
    token_default_ttl_days: int = 90
    kubeconfig_token_ttl_days: int = 30
    kubeconfig_token_max_ttl_days: int = 365
    k8s_proxy_connect_timeout_seconds: float = 5.0
    k8s_proxy_read_timeout_seconds: float = 120.0  # per read; watches and follows have none
    tls_cert_file: Path | None = Field(
        default=None, description="Serve the API over HTTPS with this certificate (kubectl needs HTTPS)."
    )
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = Field(
        default=None, description="The CA of tls_cert_file; embedded in downloaded kubeconfigs when set."
    )
    dashboard_session_hours: int = Field(
        default=12, ge=1, le=24 * 30, description="How long an admin dashboard login lasts."
    )
    project_creation: ProjectCreation = Field(
        default=ProjectCreation.LIMITED,
        description="Who may create projects: anyone | admins | limited (each user up to"
        " max_projects_per_user live projects they created). Global admins always may.",
    )
    max_projects_per_user: int = Field(
        default=3,
        ge=0,
        le=10_000,
        description="With project_creation=limited: how many of the projects a non-admin created may"
        " exist at once (deleting one frees its place).",
    )

    @property
    def project_creation_policy(self) -> CreationPolicy:
        return CreationPolicy(who=self.project_creation, max_per_user=self.max_projects_per_user)

    http_max_body_bytes: int = Field(
        default=1 * MIB,
        ge=0,
        description="Request bodies of every route but the k8s proxy (JSON, forms); larger ones get 413.",
    )
    http_max_json_values: int = Field(
        default=10_000,
        ge=1,
        description="Values (object members plus array items) a JSON body may hold; more is refused with 422"
        " before validation, which would report each unknown key.",
    )
    max_validation_errors: int = Field(
        default=20, ge=1, description="How many problems a 422 lists; the message says how many more."
    )

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            problems.append("KAAS_TLS_CERT_FILE and KAAS_TLS_KEY_FILE go together")
        return problems
