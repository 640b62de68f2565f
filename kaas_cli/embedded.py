"""``kaas up``: every part of kaas in one process on embedded defaults.

SQLite in the state directory, Celery on the in-memory transport with the worker and the sweep running as
threads of this process, and the simulated OpenStack (``simcloud``) on a free loopback port. The same code
paths as a real deployment, only the far ends are embedded: the API queues by task name, the worker
reconciles through openstacksdk over HTTP.

Which Kubernetes the clusters run (``choose_kubernetes``): the real programs when ``scripts/kube-bin.sh``
has built them into its cache (``nodesim.kube_releases``), and then the region offers exactly the built
versions (so a cluster can be created at the older one); else the Python stand-in at
``STANDIN_KUBERNETES_VERSIONS``.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.users.service import create_user, issue_token
from kaas_core.db.models import (
    ApiToken,
    Project,
    ProjectMember,
    Quota,
    Region,
    Role,
    TokenKind,
    User,
    as_utc,
    utcnow,
)
from kaas_core.security import hash_token

DEFAULT_REGION = "local"
DEFAULT_PROJECT = "default"
ADMIN_USER = "admin"
# the description of the admin tokens kaas up issues and saves for the CLI
KAAS_UP_TOKEN_DESCRIPTION = "kaas up"  # noqa: S105 (a description, not a secret)
SIM_FLAVORS = [
    {"name": "m1.tiny", "vcpus": 1, "ram_mb": 512},
    {"name": "m1.small", "vcpus": 1, "ram_mb": 2048},
    {"name": "m1.medium", "vcpus": 2, "ram_mb": 4096},
    {"name": "m1.large", "vcpus": 4, "ram_mb": 8192},
]
# what the region offers when the clusters run on the stand-in (any version: it only reports it)
STANDIN_KUBERNETES_VERSIONS = ["1.31.4", "1.30.8", "1.29.12"]
REAL = "real"
STANDIN = "stand-in"
AUTO = "auto"


class KubernetesChoiceError(ValueError):
    """``kaas up`` cannot run the Kubernetes it was asked for; the message says what to do."""


@dataclass(frozen=True)
class EmbeddedKubernetes:
    """The Kubernetes of ``kaas up``'s clusters: its kind, the versions the region offers (as kaas writes
    them, ``1.37.2``) and its default, and for the real kind the folder of each release's programs."""

    kind: str  # REAL or STANDIN
    versions: list[str]
    default_version: str
    cache_dir: Path
    releases: dict[str, Path] = field(default_factory=dict)  # "v1.37.2" -> its programs (REAL only)

    def describe(self) -> str:
        """The line ``kaas up`` prints on start."""
        if self.kind == REAL:
            built = ", ".join(f"v{version}" for version in self.versions)
            return (
                f"Kubernetes: real {built} (default v{self.default_version}), the programs in "
                f"{self.cache_dir / 'kube'}"
            )
        return (
            f"Kubernetes: the Python stand-in (no real programs in {self.cache_dir / 'kube'}; "
            "bash scripts/kube-bin.sh builds them)"
        )


def _plain(version: str) -> str:
    return version.strip().removeprefix("v")


def choose_kubernetes(
    *, releases: Mapping[str, Path], cache_dir: Path, mode: str = AUTO, default_version: str | None = None
) -> EmbeddedKubernetes:
    """``mode`` ``auto``: real when any release is built, else the stand-in; ``real`` insists on the real
    programs, ``stand-in`` on the stand-in. ``default_version`` (``1.37.2`` or ``v1.37.2``) must be one
    the region offers; without it the newest is the default. ``releases`` come oldest first."""
    if mode not in (AUTO, REAL, STANDIN):
        raise KubernetesChoiceError(f"--kubernetes must be {AUTO}, {REAL} or {STANDIN}, not {mode!r}")
    if mode == REAL and not releases:
        raise KubernetesChoiceError(
            f"no real Kubernetes programs in {cache_dir / 'kube'}: build them with bash scripts/kube-bin.sh"
        )
    if releases and mode != STANDIN:
        kind, versions = REAL, [_plain(version) for version in releases]
    else:
        kind, versions = STANDIN, list(STANDIN_KUBERNETES_VERSIONS)
    if default_version is None:
        default = versions[-1] if kind == REAL else versions[0]
    elif _plain(default_version) in versions:
        default = _plain(default_version)
    else:
        raise KubernetesChoiceError(
            f"Kubernetes {default_version} is not offered: kaas up runs {', '.join(versions)}"
            + (" (the built releases)" if kind == REAL else " (on the stand-in)")
        )
    return EmbeddedKubernetes(
        kind=kind,
        versions=versions,
        default_version=default,
        cache_dir=cache_dir,
        releases=dict(releases) if kind == REAL else {},
    )


def load_or_create_secret_key(state_dir: Path) -> str:
    """A random secret key kept in the state directory, so encrypted tokens survive restarts."""
    path = state_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    state_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


def remembered_port(path: Path) -> int:
    """The port saved in ``path`` if it is free now, else 0 (the caller binds a free one and saves it).

    The tunnel port must outlive a restart: every node's user-data names it, so the agents of the clusters
    that exist keep dialling it; a new port would leave them unreachable.
    """
    try:
        port = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return 0
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return 0
    return port


@dataclass(frozen=True)
class SeedResult:
    admin_token: str
    project: str
    region: str


def admin_token_for_this_run(session: Session, admin: User, *, saved_token: str | None) -> str:
    """The admin token the CLI config saved, if it is still a live token of the admin; else a new one, and
    the earlier ``kaas up`` tokens are revoked: the config that held them is overwritten with the new one,
    so nothing uses them any more, and a token nobody holds should not stay valid for ever."""
    now = utcnow()
    if saved_token:
        row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(saved_token)))
        expires_at = as_utc(row.expires_at) if row is not None else None
        if (
            row is not None
            and row.user_id == admin.id
            and row.kind == TokenKind.USER.value
            and row.revoked_at is None
            and (expires_at is None or expires_at > now)
        ):
            return saved_token
    replaced = session.scalars(
        select(ApiToken).where(
            ApiToken.user_id == admin.id,
            ApiToken.description == KAAS_UP_TOKEN_DESCRIPTION,
            ApiToken.revoked_at.is_(None),
        )
    )
    for row in replaced:
        row.revoked_at = now
    return issue_token(session, user=admin, description=KAAS_UP_TOKEN_DESCRIPTION)


def seed_embedded(
    factory: sessionmaker[Session],
    *,
    cloud_name: str,
    saved_token: str | None = None,
    kubernetes_versions: list[str] | None = None,
    default_kubernetes_version: str | None = None,
) -> SeedResult:
    """Make sure the embedded defaults exist (a region on the simulated cloud, an admin, a project) and
    pick the admin token of this run (``admin_token_for_this_run``: the saved one while it is valid).
    Idempotent: a second ``kaas up`` reuses what exists. The region offers exactly ``kubernetes_versions``
    (``EmbeddedKubernetes.versions``; the stand-in's by default), this run's, whatever an earlier run
    offered: clusters created at a version no longer offered keep it."""
    versions = list(kubernetes_versions or STANDIN_KUBERNETES_VERSIONS)
    default = default_kubernetes_version or versions[0]
    with factory() as session, session.begin():
        region = session.scalar(select(Region).where(Region.name == DEFAULT_REGION))
        if region is None:
            session.add(
                Region(
                    name=DEFAULT_REGION,
                    cloud=cloud_name,
                    kubernetes_versions=versions,
                    default_kubernetes_version=default,
                    flavors=SIM_FLAVORS,
                    image="ubuntu-22.04",
                    external_network="public",
                )
            )
        else:
            region.cloud = cloud_name
            region.kubernetes_versions = versions
            region.default_kubernetes_version = default
        admin = session.scalar(select(User).where(User.name == ADMIN_USER))
        if admin is None:
            admin, token = create_user(session, name=ADMIN_USER, is_admin=True)
            first = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
            assert first is not None  # just made by create_user
            first.description = KAAS_UP_TOKEN_DESCRIPTION  # so that a later run that replaces it revokes it
        else:
            token = admin_token_for_this_run(session, admin, saved_token=saved_token)
        project = session.scalar(select(Project).where(Project.name == DEFAULT_PROJECT))
        if project is None:
            project = Project(name=DEFAULT_PROJECT, description="created by kaas up", created_by=admin.id)
            session.add(project)
            session.flush()
            session.add(ProjectMember(project_id=project.id, user_id=admin.id, role=Role.OWNER.value))
            session.add(Quota(project_id=project.id))
    return SeedResult(admin_token=token, project=DEFAULT_PROJECT, region=DEFAULT_REGION)


@dataclass(frozen=True)
class EmbeddedTls:
    """The embedded API's serving certificate: kubectl sends bearer tokens only over HTTPS."""

    cert_file: Path
    key_file: Path
    ca_file: Path


def ensure_embedded_tls(state_dir: Path, *, valid_days: int = 365) -> EmbeddedTls:
    """A private CA and a certificate for 127.0.0.1 and localhost in ``state_dir/tls``, made on first use
    and again when the certificate is missing or expires within a day. The key is readable by its owner
    only; the CA goes into the CLI config and into every downloaded kubeconfig."""
    from cryptography import x509

    from simcloud.kube.tls import make_serving_certificate

    tls_dir = state_dir / "tls"
    tls = EmbeddedTls(cert_file=tls_dir / "api.crt", key_file=tls_dir / "api.key", ca_file=tls_dir / "ca.crt")
    if all(path.exists() for path in (tls.cert_file, tls.key_file, tls.ca_file)):
        certificate = x509.load_pem_x509_certificate(tls.cert_file.read_bytes())
        if certificate.not_valid_after_utc > datetime.now(UTC) + timedelta(days=1):
            return tls
    tls_dir.mkdir(parents=True, exist_ok=True)
    made = make_serving_certificate(valid_days=valid_days)
    fd = os.open(tls.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(made.key_pem)
    tls.cert_file.write_bytes(made.cert_pem)
    tls.ca_file.write_bytes(made.ca_pem)
    return tls
