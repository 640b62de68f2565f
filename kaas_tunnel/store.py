"""The tunnel server's database work: authenticating agent tokens, admitting sessions (the per-cluster
limit on replacements) and writing ``cluster_agents``.

Owned by ``kaas_tunnel``; called by ``kaas_tunnel.server`` (in a worker thread: the database layer
is synchronous). The tunnel server is the only writer of ``cluster_agents``. Each function opens one
session and commits once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from agents.tunnel.status_report import ClusterStatusReport
from kaas_core.db.models import Cluster, ClusterAgent, ClusterPhase, as_utc, utcnow
from kaas_core.security import hash_token


def authenticate_agent(factory: sessionmaker[Session], token: str) -> str | None:
    """The id of the live cluster whose agent token this is, or None (unknown, rotated, deleted)."""
    with factory() as session:
        return _authenticate(session, token)


def _authenticate(session: Session, token: str) -> str | None:
    if not token:
        return None
    row = session.execute(
        sa.select(Cluster.id).where(
            Cluster.agent_token_hash == hash_token(token),
            Cluster.deleted_at.is_(None),
            Cluster.phase != ClusterPhase.DELETED.value,
        )
    ).first()
    return None if row is None else str(row[0])


@dataclass(frozen=True)
class Admission:
    """Whether a new agent session of a cluster may start, and which live session it would replace."""

    replaces: str | None  # the live session's id; None when no session of the cluster is live
    refused: bool = False  # too many replacements in the window: the dial gets 429
    replacements: int = 0  # in total, this one included when admitted
    retry_after_seconds: int = 0  # when refused: until the window ends


def admit_session(
    factory: sessionmaker[Session],
    *,
    cluster_id: str,
    limit: int,
    window: timedelta,
    now: datetime | None = None,
) -> Admission:
    """Admit a new agent session of ``cluster_id``, counting it when it replaces a live one.

    A replacement is a session dialling while ``cluster_agents`` says another session of the cluster is
    connected: the agent restarted before the old connection was noticed dead, or a second holder of the
    agent token is dialling. At most ``limit`` replacements are admitted per fixed ``window``; beyond that
    the newer dial is refused and the live session keeps the cluster. The count lives in the database,
    so it holds across every tunnel server process; the row lock makes concurrent dials count one by one.
    A first connection, or one after the old session was recorded as gone, is never limited.
    """
    with factory() as session:
        admission = _admit(session, cluster_id=cluster_id, limit=limit, window=window, now=now or utcnow())
        session.commit()
        return admission


def authenticate_and_admit(
    factory: sessionmaker[Session],
    token: str,
    *,
    limit: int,
    window: timedelta,
    now: datetime | None = None,
) -> tuple[str | None, Admission | None]:
    """``authenticate_agent`` then ``admit_session`` in one transaction: what every dial costs the
    database, once (a connection checkout and a commit fewer; a herd of reconnecting agents pays it
    thousands of times). ``(None, None)`` for a token of no live cluster."""
    with factory() as session:
        cluster_id = _authenticate(session, token)
        if cluster_id is None:
            return None, None
        admission = _admit(session, cluster_id=cluster_id, limit=limit, window=window, now=now or utcnow())
        session.commit()
        return cluster_id, admission


def _admit(session: Session, *, cluster_id: str, limit: int, window: timedelta, now: datetime) -> Admission:
    row = session.get(ClusterAgent, cluster_id, with_for_update=True)
    if row is None or not row.connected or row.session_id is None:
        return Admission(replaces=None)
    started = as_utc(row.replacement_window_started_at)
    if started is None or now - started >= window or started > now:
        started = now
        row.replacement_window_started_at = now
        row.replacements_in_window = 0
    if row.replacements_in_window >= limit:
        remaining = (started + window - now).total_seconds()
        return Admission(
            replaces=row.session_id,
            refused=True,
            replacements=row.replacements,
            retry_after_seconds=max(1, math.ceil(remaining)),
        )
    row.replacements_in_window += 1
    row.replacements += 1
    row.last_replaced_at = now
    return Admission(replaces=row.session_id, replacements=row.replacements)


def _upsert(
    factory: sessionmaker[Session],
    cluster_id: str,
    values: dict[str, Any],
    *,
    only_session: str | None = None,
) -> None:
    for _ in range(3):
        with factory() as session:
            row = session.get(ClusterAgent, cluster_id, with_for_update=True)
            if row is None:
                if only_session is not None:
                    return
                row = ClusterAgent(cluster_id=cluster_id, nodes=[])
                session.add(row)
            elif only_session is not None and row.session_id != only_session:
                return  # a newer session owns the row now
            for key, value in values.items():
                setattr(row, key, value)
            try:
                session.commit()
                return
            except IntegrityError:
                session.rollback()  # the row was inserted concurrently: update it instead


def record_connected(
    factory: sessionmaker[Session], *, cluster_id: str, session_id: str, address: str
) -> None:
    now = utcnow()
    _upsert(
        factory,
        cluster_id,
        {
            "connected": True,
            "session_id": session_id,
            "tunnel_address": address,
            "connected_at": now,
            "last_seen_at": now,
            "disconnected_at": None,
        },
    )


def record_disconnected(factory: sessionmaker[Session], *, cluster_id: str, session_id: str) -> None:
    """Mark the agent gone, unless a newer session of the cluster already took the row over."""
    _upsert(factory, cluster_id, {"connected": False, "disconnected_at": utcnow()}, only_session=session_id)


def record_status(
    factory: sessionmaker[Session],
    *,
    cluster_id: str,
    session_id: str,
    report: ClusterStatusReport,
    seen_at: datetime | None = None,
) -> None:
    _upsert(
        factory,
        cluster_id,
        {
            "last_seen_at": seen_at or utcnow(),
            "kubernetes_version": report.kubernetes_version,
            "nodes_ready": report.nodes_ready,
            "nodes_total": report.nodes_total,
            "nodes": [
                {
                    "name": n.name,
                    "ready": n.ready,
                    "roles": list(n.roles),
                    "kubelet_version": n.kubelet_version,
                }
                for n in report.nodes
            ],
            "last_error": report.error,
        },
        only_session=session_id,
    )
