"""Where a cluster's agent went, for the k8s proxies that meet it between two sessions.

Owned by ``kaas_core``; called by the API's k8s proxy (``kaas_api.k8s.proxy``) and the tunnel server's
(``kaas_tunnel.k8s_proxy``). When a tunnel process dies, its agents dial a live one at once, but for a moment
the registry names the dead process (its claim outlives it until the new session's replaces it) or nothing
at all (the claim ran out first). A request without a body sent in that moment waits for the agent's new
session, within the hop's connect timeout, instead of answering 503; an agent that has been away for longer
(``disconnected_recently``: its ``cluster_agents`` row says so) answers 503 at once, so that a request for a
cluster whose agent is really gone never hangs.
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy.orm import Session, sessionmaker

from kaas_core.db.models import ClusterAgent, as_utc, utcnow
from kaas_core.tunnel_registry import SessionLocation, TunnelRegistry

REROUTE_POLL_SECONDS = 0.1  # how often a request whose tunnel process died asks where the agent went
RECENT_DISCONNECT_SECONDS = 30.0  # an agent gone this recently is dialling again: requests wait for it


def disconnected_recently(
    session_factory: sessionmaker[Session], cluster_id: str, *, within: float = RECENT_DISCONNECT_SECONDS
) -> bool:
    """Whether the cluster's agent was connected a moment ago (its ``cluster_agents`` row): a blip (its
    tunnel process went, it is dialling another), not an agent that is away. Synchronous: run it in a
    thread."""
    with session_factory() as session:
        agent = session.get(ClusterAgent, cluster_id)
        if agent is None or agent.connected_at is None:
            return False
        if agent.connected:
            return True  # the row still says so: the session ended a moment ago
        gone = as_utc(agent.disconnected_at)
        return gone is not None and (utcnow() - gone).total_seconds() < within


async def new_session(
    registry: TunnelRegistry,
    cluster_id: str,
    *,
    started: float,
    timeout: float,
    unlike: SessionLocation | None = None,
) -> SessionLocation | None:
    """The cluster's session in the registry (one other than ``unlike``), polled until ``timeout`` seconds
    after ``started`` (``time.monotonic()``); None if none came."""
    while time.monotonic() - started < timeout:
        await asyncio.sleep(REROUTE_POLL_SECONDS)
        location = await registry.lookup(cluster_id)
        if location is not None and (unlike is None or location.session_id != unlike.session_id):
            return location
    return None
