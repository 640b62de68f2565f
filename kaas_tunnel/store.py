"""The tunnel server's database work: authenticating agent tokens, admitting sessions (the per-cluster
limit on replacements) and writing ``cluster_agents``.

Owned by ``kaas_tunnel``; called by ``kaas_tunnel.server`` (in a worker thread: the database layer
is synchronous), through ``kaas_tunnel.group_commit`` for the ``..._many`` and ``apply_changes``
forms, which do the work of many handshakes in one transaction. The tunnel server is the only writer of
``cluster_agents``. Each function opens one session and commits once.
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
    """The token's live cluster, then ``admit_session``, in one transaction: what a dial costs the database.
    ``(None, None)`` for a token of no live cluster. The server does this for many dials at once
    (``authenticate_and_admit_many``)."""
    return authenticate_and_admit_many(factory, [token], limit=limit, window=window, now=now)[0]


def authenticate_and_admit_many(
    factory: sessionmaker[Session],
    tokens: list[str],
    *,
    limit: int,
    window: timedelta,
    now: datetime | None = None,
) -> list[tuple[str | None, Admission | None]]:
    """``authenticate_and_admit`` for many dials in one transaction, one result per token in order: two
    queries whatever their number (the clusters by token hash, then their agents' rows locked in id order,
    so that two batches never wait for each other in a cycle). Dials of one cluster in one batch are
    admitted in order, as one after the other would be."""
    now = now or utcnow()
    hashes = [hash_token(token) if token else "" for token in tokens]
    with factory() as session:
        found = {
            str(token_hash): str(cluster_id)
            for token_hash, cluster_id in session.execute(
                sa.select(Cluster.agent_token_hash, Cluster.id).where(
                    Cluster.agent_token_hash.in_({h for h in hashes if h}),
                    Cluster.deleted_at.is_(None),
                    Cluster.phase != ClusterPhase.DELETED.value,
                )
            )
        }
        cluster_ids = sorted({found[h] for h in hashes if h in found})
        rows = {
            row.cluster_id: row
            for row in session.scalars(
                sa.select(ClusterAgent)
                .where(ClusterAgent.cluster_id.in_(cluster_ids))
                .order_by(ClusterAgent.cluster_id)
                .with_for_update()
            )
        }
        results: list[tuple[str | None, Admission | None]] = []
        for token_hash in hashes:
            cluster_id = found.get(token_hash)
            if cluster_id is None:
                results.append((None, None))
                continue
            admission = _admit_row(rows.get(cluster_id), limit=limit, window=window, now=now)
            results.append((cluster_id, admission))
        session.commit()
        return results


def _admit(session: Session, *, cluster_id: str, limit: int, window: timedelta, now: datetime) -> Admission:
    row = session.get(ClusterAgent, cluster_id, with_for_update=True)
    return _admit_row(row, limit=limit, window=window, now=now)


def _admit_row(row: ClusterAgent | None, *, limit: int, window: timedelta, now: datetime) -> Admission:
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


@dataclass(frozen=True)
class AgentRowChange:
    """One change of a ``cluster_agents`` row; with ``only_session``, only while that session owns it."""

    cluster_id: str
    values: dict[str, Any]
    only_session: str | None = None


def connected(
    *, cluster_id: str, session_id: str, address: str, now: datetime | None = None
) -> AgentRowChange:
    now = now or utcnow()
    return AgentRowChange(
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


def disconnected(*, cluster_id: str, session_id: str) -> AgentRowChange:
    """The agent gone, unless a newer session of the cluster already took the row over."""
    return AgentRowChange(
        cluster_id, {"connected": False, "disconnected_at": utcnow()}, only_session=session_id
    )


def status(
    *, cluster_id: str, session_id: str, report: ClusterStatusReport, seen_at: datetime | None = None
) -> AgentRowChange:
    return AgentRowChange(
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


def apply_changes(factory: sessionmaker[Session], changes: list[AgentRowChange]) -> list[None]:
    """Every change in one transaction, in order (the rows locked in id order first); ``IntegrityError``
    when a row to insert names a cluster that is gone (the group commit then writes the changes one by one,
    and only that one fails)."""
    ids = sorted({change.cluster_id for change in changes})
    for attempt in range(3):
        with factory() as session:
            rows = {
                row.cluster_id: row
                for row in session.scalars(
                    sa.select(ClusterAgent)
                    .where(ClusterAgent.cluster_id.in_(ids))
                    .order_by(ClusterAgent.cluster_id)
                    .with_for_update()
                )
            }
            for change in changes:
                row = rows.get(change.cluster_id)
                if row is None:
                    if change.only_session is not None:
                        continue
                    row = rows[change.cluster_id] = ClusterAgent(cluster_id=change.cluster_id, nodes=[])
                    session.add(row)
                elif change.only_session is not None and row.session_id != change.only_session:
                    continue  # a newer session owns the row now
                for key, value in change.values.items():
                    setattr(row, key, value)
            try:
                session.commit()
                return [None] * len(changes)
            except IntegrityError:
                session.rollback()  # a row was inserted concurrently: update it instead
                if attempt == 2:
                    raise
    raise AssertionError("unreachable")


def record_connected(
    factory: sessionmaker[Session], *, cluster_id: str, session_id: str, address: str
) -> None:
    apply_changes(factory, [connected(cluster_id=cluster_id, session_id=session_id, address=address)])


def record_disconnected(factory: sessionmaker[Session], *, cluster_id: str, session_id: str) -> None:
    """Mark the agent gone, unless a newer session of the cluster already took the row over."""
    apply_changes(factory, [disconnected(cluster_id=cluster_id, session_id=session_id)])


def record_status(
    factory: sessionmaker[Session],
    *,
    cluster_id: str,
    session_id: str,
    report: ClusterStatusReport,
    seen_at: datetime | None = None,
) -> None:
    apply_changes(
        factory, [status(cluster_id=cluster_id, session_id=session_id, report=report, seen_at=seen_at)]
    )
