"""The cluster GET answered from memory: each cluster's JSON kept a second, and who may read it.

Used by ``kaas_api.clusters.endpoints.get_cluster``; built by ``kaas_api.app``, which also calls
``install_view_hooks`` on its session factory and attaches the cache to its ``RevocationFeed``.

The cluster GET is the API's most frequent call (every client and dashboard polls it) and was a database
round trip in a worker thread each time: a thread hop, a connection checkout, one query and its ORM rows,
1.2 ms of the API's CPU where ``/healthz`` costs 0.3. Kubernetes answers its GETs from a watch cache; this
is the same idea at the scale of one API process: a hit costs no thread and no database.

What is kept, and why it cannot show what the caller may not see:

- ``views``: per (project reference, cluster reference) as the URL gives them, the project's id and the
  cluster's answer (``ClusterOut`` as JSON bytes), for ``ttl_seconds`` (``KAAS_CLUSTER_VIEW_CACHE_SECONDS``,
  1 s). Writes this process commits drop the views they touch at once (``install_view_hooks``: clusters,
  node pools, nodes, regions, projects), so a client reads its own writes; a change committed by another
  process (a provider worker's status, another API replica) shows within ``ttl_seconds``, as a watch
  cache's does.
- ``roles``: per (user id, project id), the caller's project role, learnt by the same database read that
  filled a view. Only what grants access is kept (a non-member's refusal always reads the database), and
  it is dropped by the revocations that drop a credential (``kaas_core.credential_cache``: a membership
  changed or removed, a user disabled or changed, a project or cluster deleted), pushed to every replica.
- A hit needs the caller's ``Principal`` from ``kaas_api.auth.principal_cache`` (the same rules), a view,
  and a kept role strong enough (or a global admin): anything missing is the database path, which then
  fills what it read. Both caches are used only while the revocation feed listens.
- A database read that started before an invalidation never stores its answer (a generation counter).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.credential_cache import Revocation, RevocationFeed
from kaas_core.db.models import Cluster, Node, NodePool, Project, ProjectMember, Region, Role, User

MAX_VIEWS = 100_000
_TOUCHED_KEY = "kaas_cluster_views_touched"
_ALL = "*"  # a touched "cluster id" meaning every view


@dataclass(frozen=True)
class ClusterView:
    """One cluster's answer as the GET serves it, and the project it belongs to (for the role check)."""

    project_id: str
    cluster_id: str
    body: bytes


class ClusterViewCache:
    """Thread-safe: views are stored by worker threads, dropped by whichever thread commits, and read on
    the event loop."""

    def __init__(
        self, feed: RevocationFeed, *, ttl_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._feed = feed
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._views: dict[tuple[str, str], tuple[ClusterView, float]] = {}
        self._roles: dict[tuple[str, str], tuple[Role, float]] = {}
        self._generation = 0
        self.hits = 0
        self.misses = 0
        feed.attach(self)

    @property
    def enabled(self) -> bool:
        return self._ttl > 0 and self._feed.listening

    def generation(self) -> int:
        """Take before a database read; ``store`` refuses its answer if anything was dropped since."""
        return self._generation

    def answer(
        self, user_id: str, is_admin: bool, project_ref: str, cluster_ref: str, need: Role
    ) -> bytes | None:
        """The kept answer for this caller, or None (the database path decides, refusals included)."""
        if not self.enabled:
            return None
        now = self._clock()
        entry = self._views.get((project_ref, cluster_ref))
        if entry is None or entry[1] <= now:
            self.misses += 1
            return None
        view = entry[0]
        if not is_admin:
            role = self._roles.get((user_id, view.project_id))
            if role is None or role[1] <= now or role[0].rank < need.rank:
                self.misses += 1
                return None
        self.hits += 1
        return view.body

    def store(
        self,
        *,
        generation: int,
        project_ref: str,
        cluster_ref: str,
        view: ClusterView,
        user_id: str,
        role: Role | None,
    ) -> None:
        """Keep what a database read found: the view, and the caller's role in its project (if any)."""
        if not self.enabled:
            return
        expires = self._clock() + self._ttl
        with self._lock:
            if generation != self._generation:
                return
            if len(self._views) >= MAX_VIEWS or len(self._roles) >= MAX_VIEWS:
                self._views, self._roles = {}, {}
            self._views[(project_ref, cluster_ref)] = (view, expires)
            if role is not None:
                self._roles[(user_id, view.project_id)] = (role, expires)

    def invalidate(self, revocations: Iterable[Revocation]) -> None:
        """The revocation feed's: access changed somewhere (a membership, a user, a project or cluster
        deleted). Rare enough to drop every role and view rather than pick."""
        if list(revocations):
            self.forget({_ALL})

    def forget(self, cluster_ids: set[str]) -> None:
        """Drop the views of these clusters (``"*"``: every view and every role), and every read in flight."""
        with self._lock:
            self._generation += 1
            if _ALL in cluster_ids:
                self._views, self._roles = {}, {}
                return
            self._views = {
                key: entry for key, entry in self._views.items() if entry[0].cluster_id not in cluster_ids
            }

    def __len__(self) -> int:
        return len(self._views)


def _touched(session: Session) -> set[str]:
    """The clusters whose answer this flush changed; ``"*"`` when it may have changed many."""
    touched: set[str] = set()
    for instance in (*session.new, *session.dirty, *session.deleted):
        if isinstance(instance, Cluster):
            touched.add(instance.id)
        elif isinstance(instance, NodePool | Node):
            touched.add(instance.cluster_id)
        elif isinstance(instance, Region | Project | ProjectMember | User):
            touched.add(_ALL)
    return touched


_HOOKED: weakref.WeakKeyDictionary[sessionmaker[Session], weakref.WeakSet[ClusterViewCache]] = (
    weakref.WeakKeyDictionary()
)
_HOOKED_LOCK = threading.Lock()


def install_view_hooks(factory: sessionmaker[Session], cache: ClusterViewCache) -> None:
    """Drop, after each commit of a session of ``factory``, the views its flushes touched (a rollback drops
    nothing: nothing changed). Bulk statements the ORM does not see are covered by the views' TTL.
    One set of listeners per factory, whatever the number of caches (tests build many apps on one
    factory), each cache held weakly."""
    with _HOOKED_LOCK:
        caches = _HOOKED.get(factory)
        if caches is not None:
            caches.add(cache)
            return
        caches = weakref.WeakSet([cache])
        _HOOKED[factory] = caches

    def after_flush(session: Session, _context: Any) -> None:
        touched = _touched(session)
        if touched:
            session.info.setdefault(_TOUCHED_KEY, set()).update(touched)

    def after_commit(session: Session) -> None:
        touched: set[str] = session.info.pop(_TOUCHED_KEY, set())
        if touched:
            for each in list(caches):
                each.forget(touched)

    def after_rollback(session: Session) -> None:
        session.info.pop(_TOUCHED_KEY, None)

    event.listen(factory, "after_flush", after_flush)
    event.listen(factory, "after_commit", after_commit)
    event.listen(factory, "after_rollback", after_rollback)
