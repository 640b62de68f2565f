"""A cluster's PKI and join tokens in the database: created on the cluster's first pass, stored encrypted.

Called by the reconcile pass (``provider.reconciler.reconcile``) before any server is rendered. Unlike the
rest of a pass, new material is committed in its own short transaction at once (``ensure_cluster_pki``,
``current_join_token``): a server built from it exists in the cloud from the moment it is created, so the
material must outlive a pass that dies before its own commit, or the next pass would generate another CA
and build the rest of the cluster from it. The pass holds the cluster's lease, so no other pass writes these
rows meanwhile.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import BootstrapToken, ClusterAuthority, as_utc
from kaas_core.security import SecretBox
from provider.bootstrap.pki import (
    ALL_KINDS,
    CLUSTER_CA,
    ETCD_CA,
    FRONT_PROXY_CA,
    SERVICE_ACCOUNT,
    ClusterPki,
    KeyPair,
    PkiError,
    check_pair,
    generate_cluster_pki,
)

# kubeadm's token alphabet: [a-z0-9]{6}.[a-z0-9]{16}
_TOKEN_ALPHABET = string.ascii_lowercase + string.digits
# A join wave's token lives hours, not days: long enough for a slow cloud to boot a wave of servers
# (kubeadm's own default is 24 h), short enough that a leaked user-data is soon worth nothing.
JOIN_TOKEN_TTL = timedelta(hours=4)
# a token is not handed to a new server when less than this is left: the server must boot and join first
JOIN_TOKEN_MIN_LEFT = timedelta(hours=1)


@dataclass(frozen=True)
class JoinToken:
    """A bootstrap token as kubeadm writes it: ``<id>.<secret>``."""

    token_id: str
    secret: str
    expires_at: datetime
    published: bool = False  # its Secret is in the cluster (see BootstrapToken.published_at)

    @property
    def value(self) -> str:
        return f"{self.token_id}.{self.secret}"

    def __repr__(self) -> str:
        return f"JoinToken(token_id={self.token_id!r}, expires_at={self.expires_at!r})"


def _decrypt(box: SecretBox, ciphertext: str, what: str) -> str:
    try:
        return box.decrypt(ciphertext)
    except ValueError as exc:
        raise PkiError(f"the cluster's {what} cannot be decrypted: {exc}") from exc


def load_cluster_pki(session: Session, cluster_id: str, *, box: SecretBox) -> ClusterPki | None:
    """The cluster's current PKI (the newest row of each kind not retired), or None before it has one."""
    rows = session.scalars(
        select(ClusterAuthority)
        .where(ClusterAuthority.cluster_id == cluster_id, ClusterAuthority.retired_at.is_(None))
        .order_by(ClusterAuthority.created_at.desc(), ClusterAuthority.id)
    ).all()
    current: dict[str, KeyPair] = {}
    for row in rows:
        kind = next((k for k in ALL_KINDS if k.name == row.kind), None)
        if kind is None or kind.name in current:
            continue
        pair = KeyPair(
            kind=kind,
            public_pem=row.public_pem,
            key_pem=_decrypt(box, row.key_encrypted, kind.name),
            not_after=as_utc(row.not_after),
        )
        check_pair(pair)
        current[kind.name] = pair
    if not current:
        return None
    missing = [k.name for k in ALL_KINDS if k.name not in current]
    if missing:
        raise PkiError(f"the cluster's PKI is incomplete: no {', '.join(missing)}")
    return ClusterPki(
        cluster_ca=current[CLUSTER_CA.name],
        etcd_ca=current[ETCD_CA.name],
        front_proxy_ca=current[FRONT_PROXY_CA.name],
        service_account=current[SERVICE_ACCOUNT.name],
    )


def ensure_cluster_pki(
    session_factory: sessionmaker[Session], cluster_id: str, *, box: SecretBox, now: datetime
) -> ClusterPki:
    """The cluster's PKI; generated and committed (its own transaction) on the cluster's first pass."""
    with session_factory() as session:
        existing = load_cluster_pki(session, cluster_id, box=box)
        if existing is not None:
            return existing
        pki = generate_cluster_pki(now=now)
        for pair in pki.pairs():
            session.add(
                ClusterAuthority(
                    cluster_id=cluster_id,
                    kind=pair.kind.name,
                    public_pem=pair.public_pem,
                    key_encrypted=box.encrypt(pair.key_pem),
                    not_after=pair.not_after,
                    created_at=now,
                )
            )
        session.commit()
        return pki


def _new_join_token(now: datetime) -> JoinToken:
    return JoinToken(
        token_id="".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(6)),
        secret="".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(16)),
        expires_at=now + JOIN_TOKEN_TTL,
    )


def current_join_token(
    session_factory: sessionmaker[Session], cluster_id: str, *, box: SecretBox, now: datetime
) -> JoinToken:
    """The token of the current join wave: the newest live one with time enough left, else a new one
    (committed in its own transaction). A new token starts a new wave; the older ones are retired once
    their nodes joined or they ran out (``retire_join_tokens``)."""
    with session_factory() as session:
        rows = session.scalars(
            select(BootstrapToken)
            .where(BootstrapToken.cluster_id == cluster_id, BootstrapToken.retired_at.is_(None))
            .order_by(BootstrapToken.expires_at.desc(), BootstrapToken.id)
        ).all()
        for row in rows:
            expires_at = as_utc(row.expires_at)
            assert expires_at is not None
            if expires_at - now >= JOIN_TOKEN_MIN_LEFT:
                return JoinToken(
                    token_id=row.token_id,
                    secret=_decrypt(box, row.secret_encrypted, "bootstrap token"),
                    expires_at=expires_at,
                    published=row.published_at is not None,
                )
        token = _new_join_token(now)
        session.add(
            BootstrapToken(
                cluster_id=cluster_id,
                token_id=token.token_id,
                secret_encrypted=box.encrypt(token.secret),
                created_at=now,
                expires_at=token.expires_at,
            )
        )
        session.commit()
        return token


def unpublished_join_tokens(
    session_factory: sessionmaker[Session], cluster_id: str, *, box: SecretBox, now: datetime
) -> list[JoinToken]:
    """Live tokens whose Secret is not in the cluster yet."""
    with session_factory() as session:
        rows = session.scalars(
            select(BootstrapToken).where(
                BootstrapToken.cluster_id == cluster_id,
                BootstrapToken.retired_at.is_(None),
                BootstrapToken.published_at.is_(None),
            )
        ).all()
        tokens = []
        for row in rows:
            expires_at = as_utc(row.expires_at)
            assert expires_at is not None
            if expires_at > now:
                secret = _decrypt(box, row.secret_encrypted, "bootstrap token")
                tokens.append(JoinToken(token_id=row.token_id, secret=secret, expires_at=expires_at))
        return tokens


def mark_published(
    session_factory: sessionmaker[Session], cluster_id: str, token_ids: list[str], *, now: datetime
) -> None:
    """Record that these tokens' Secrets are in the cluster (its own transaction, as the tokens')."""
    if not token_ids:
        return
    with session_factory() as session:
        for row in session.scalars(
            select(BootstrapToken).where(
                BootstrapToken.cluster_id == cluster_id, BootstrapToken.token_id.in_(token_ids)
            )
        ):
            row.published_at = now
        session.commit()


def retire_join_tokens(session: Session, cluster_id: str, *, now: datetime, all_joined: bool) -> list[str]:
    """Retire the tokens kaas will not hand out again: all of them once every node joined, else the ones
    that ran out. Returns their ids (the cluster's copies are deleted through the tunnel by whoever holds it).
    """
    retired = []
    for row in session.scalars(
        select(BootstrapToken).where(
            BootstrapToken.cluster_id == cluster_id, BootstrapToken.retired_at.is_(None)
        )
    ):
        expires_at = as_utc(row.expires_at)
        if all_joined or (expires_at is not None and expires_at <= now):
            row.retired_at = now
            retired.append(row.token_id)
    return retired
