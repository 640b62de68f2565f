"""The k8s proxies' short-lived memory of who may reach which cluster, and how revocations empty it.

Owned by ``kaas_core``; used by both k8s proxies (the tunnel server's ``kaas_tunnel.k8s_proxy`` and the
API's ``kaas_api.k8s.proxy``), built by their composition roots (``kaas_tunnel.main``, ``kaas_cli``,
``kaas_api.app``), which also call ``install_revocation_hooks`` on their session factories.

kubectl sends a request for nearly every line it prints; with one database round trip each, the check cost
more than the rest of the proxy. ``CredentialCache`` keeps an authorized ``ProxyIdentity`` for
``ttl_seconds`` (a few), keyed by (token hash, cluster id); refusals are never kept. It is only used while
its ``RevocationFeed`` is listening, so that a change is never hidden by the cache for longer than the
feed takes to deliver it:

- ``install_revocation_hooks`` watches every session of a factory: a commit that revokes or deletes a
  token, disables or deletes a user or changes their admin flag, changes or removes a membership, or
  deletes a cluster or project publishes what it touched, after the commit (a rollback publishes
  nothing). A bulk ``UPDATE`` the ORM does not see names its events with ``note_revocation``.
- ``RedisRevocationFeed`` carries them to every process over Redis pub/sub (channel ``REVOCATION_CHANNEL``),
  typically within milliseconds; a process whose subscription is down uses no cache until it is back,
  and empties it when it is. ``InProcessRevocationFeed`` is the embedded mode's (one process).
- A lookup that started before an invalidation never stores its (possibly stale) answer (a generation
  counter).

``last_used_at`` stays at most one write a minute per token: ``LastUsedRecorder`` batches them (one
UPDATE for every due token, in a worker thread, every few seconds), off the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from redis.asyncio import Redis
from sqlalchemy import event, inspect, or_, update
from sqlalchemy.orm import Session, sessionmaker

from kaas_core.cluster_access import ProxyIdentity, authorize_cluster, last_use_due
from kaas_core.db.models import ApiToken, Cluster, Project, ProjectMember, User, utcnow

log = logging.getLogger(__name__)

REVOCATION_CHANNEL = "kaas:credentials:revoked"
DEFAULT_TTL_SECONDS = 5.0
_PENDING_KEY = "kaas_revocations"


class Revocable(Protocol):
    """What a cache keeps, as far as revocations go: the token, user, project and cluster it stands for
    (``""`` for none). A ``ProxyIdentity`` here; the API's ``Principal`` too."""

    @property
    def token_id(self) -> str: ...

    @property
    def user_id(self) -> str: ...

    @property
    def project_id(self) -> str: ...

    @property
    def cluster_id(self) -> str: ...


class RevocationListener(Protocol):
    """A cache a feed delivers revocations to."""

    def invalidate(self, revocations: Iterable[Revocation]) -> None: ...


@dataclass(frozen=True)
class Revocation:
    """What changed: ``kind`` is ``token`` (id), ``user``, ``project``, ``cluster`` or ``all``."""

    kind: str
    id: str = ""

    def concerns(self, identity: Revocable) -> bool:
        if self.kind == "token":
            return self.id == identity.token_id
        if self.kind == "user":
            return self.id == identity.user_id
        if self.kind == "project":
            return bool(identity.project_id) and self.id == identity.project_id
        if self.kind == "cluster":
            return bool(identity.cluster_id) and self.id == identity.cluster_id
        return True  # "all", or a kind a newer release sends: forget everything

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "id": self.id}


def encode_revocations(revocations: Sequence[Revocation]) -> str:
    return json.dumps([revocation.to_json() for revocation in revocations], separators=(",", ":"))


def decode_revocations(payload: bytes | str) -> list[Revocation]:
    """The revocations of one message; anything unreadable means "forget everything"."""
    try:
        items = json.loads(payload)
        return [Revocation(kind=str(item["kind"]), id=str(item.get("id", ""))) for item in items]
    except (ValueError, TypeError, KeyError):
        return [Revocation("all")]


# --- the feed: revocations from every process to every cache --------------------------------------------


class RevocationFeed(Protocol):
    """Delivers revocations to the caches attached to it, from this process and (Redis) every other."""

    @property
    def listening(self) -> bool:
        """Whether revocations published anywhere now reach this process's caches."""

    def attach(self, cache: RevocationListener) -> None: ...

    def publish(self, revocations: Sequence[Revocation]) -> None:
        """Send ``revocations`` (synchronous: called after a commit, in whatever thread committed)."""

    async def ensure_listening(self) -> None:
        """Start listening in the running event loop if nothing does yet."""

    async def aclose(self) -> None: ...


class InProcessRevocationFeed:
    """One process (the embedded mode, tests): a publish invalidates the attached caches directly."""

    def __init__(self) -> None:
        self._caches: list[RevocationListener] = []

    @property
    def listening(self) -> bool:
        return True

    def attach(self, cache: RevocationListener) -> None:
        self._caches.append(cache)

    def publish(self, revocations: Sequence[Revocation]) -> None:
        for cache in list(self._caches):
            cache.invalidate(revocations)

    async def ensure_listening(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class RedisRevocationFeed:
    """Every process of a deployment: Redis pub/sub on ``REVOCATION_CHANNEL``.

    ``publish`` uses a synchronous client (it runs in the committing worker thread); the subscription runs
    as a task in the event loop that first calls ``ensure_listening`` and reconnects after a second when
    it breaks. The caches are bypassed while it is not subscribed and emptied when it subscribes again:
    nothing published while it was away can be missed.
    """

    def __init__(self, url: str, *, reconnect_seconds: float = 1.0) -> None:
        import redis  # the synchronous client, only for publishing

        self._url = url
        self._publisher = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._reconnect = reconnect_seconds
        self._caches: list[RevocationListener] = []
        self._listening = False
        self._task: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        return self._listening

    def attach(self, cache: RevocationListener) -> None:
        self._caches.append(cache)

    def publish(self, revocations: Sequence[Revocation]) -> None:
        if not revocations:
            return
        payload = encode_revocations(revocations)
        try:
            self._publisher.publish(REVOCATION_CHANNEL, payload)
        except Exception:
            # the caches' TTL still bounds how long a revoked credential works (a few seconds)
            log.warning("could not publish %d credential revocations", len(revocations), exc_info=True)
        for cache in list(self._caches):  # this process's own caches at once, whatever Redis does
            cache.invalidate(revocations)

    async def ensure_listening(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen(), name="kaas-revocation-feed")

    async def _listen(self) -> None:
        while True:
            client = Redis.from_url(self._url, socket_connect_timeout=2.0, health_check_interval=10)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(REVOCATION_CHANNEL)
                async for message in pubsub.listen():
                    if message["type"] == "subscribe":
                        for cache in list(self._caches):
                            cache.invalidate([Revocation("all")])
                        self._listening = True
                    elif message["type"] == "message":
                        revocations = decode_revocations(message["data"])
                        for cache in list(self._caches):
                            cache.invalidate(revocations)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("the credential revocation feed broke; reconnecting", exc_info=True)
            finally:
                self._listening = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(self._reconnect)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._listening = False
        self._publisher.close()


# --- what a commit revoked -------------------------------------------------------------------------------


def note_revocation(session: Session, revocation: Revocation) -> None:
    """Publish ``revocation`` when ``session`` commits (for changes the ORM does not track: bulk UPDATEs)."""
    session.info.setdefault(_PENDING_KEY, []).append(revocation)


def _changed(instance: object, *names: str) -> bool:
    state = inspect(instance)
    return any(state.attrs[name].history.has_changes() for name in names)


def _revocations_of_flush(session: Session) -> list[Revocation]:
    found: list[Revocation] = []
    for instance in session.deleted:
        if isinstance(instance, ApiToken):
            found.append(Revocation("token", instance.id))
        elif isinstance(instance, User | ProjectMember):
            found.append(Revocation("user", instance.id if isinstance(instance, User) else instance.user_id))
        elif isinstance(instance, Cluster):
            found.append(Revocation("cluster", instance.id))
        elif isinstance(instance, Project):
            found.append(Revocation("project", instance.id))
    for instance in session.dirty:
        if isinstance(instance, ApiToken) and _changed(instance, "revoked_at", "expires_at"):
            found.append(Revocation("token", instance.id))
        elif isinstance(instance, User) and _changed(instance, "disabled_at", "is_admin", "name"):
            found.append(Revocation("user", instance.id))
        elif isinstance(instance, ProjectMember) and _changed(instance, "role"):
            found.append(Revocation("user", instance.user_id))
        elif isinstance(instance, Cluster) and _changed(instance, "deleted_at", "name", "project_id"):
            found.append(Revocation("cluster", instance.id))
        elif isinstance(instance, Project) and _changed(instance, "name"):
            found.append(Revocation("project", instance.id))
    return found


_HOOKED: weakref.WeakKeyDictionary[sessionmaker[Session], weakref.WeakSet[Any]] = weakref.WeakKeyDictionary()
_HOOKED_LOCK = threading.Lock()


def install_revocation_hooks(factory: sessionmaker[Session], feed: RevocationFeed) -> None:
    """Publish to ``feed``, after each commit of a session of ``factory``, the credentials and access it
    changed. Idempotent; one set of listeners per factory, whatever the number of feeds (tests build many
    apps on one factory), each feed held weakly."""
    with _HOOKED_LOCK:
        feeds = _HOOKED.get(factory)
        if feeds is not None:
            feeds.add(feed)
            return
        feeds = weakref.WeakSet([feed])
        _HOOKED[factory] = feeds

    def after_flush(session: Session, _context: Any) -> None:
        found = _revocations_of_flush(session)
        if found:
            session.info.setdefault(_PENDING_KEY, []).extend(found)

    def after_commit(session: Session) -> None:
        pending: list[Revocation] = session.info.pop(_PENDING_KEY, [])
        if pending:
            unique = list(dict.fromkeys(pending))
            for target in list(feeds):
                target.publish(unique)

    def after_rollback(session: Session) -> None:
        session.info.pop(_PENDING_KEY, None)

    event.listen(factory, "after_flush", after_flush)
    event.listen(factory, "after_commit", after_commit)
    event.listen(factory, "after_rollback", after_rollback)


# --- last_used_at, batched --------------------------------------------------------------------------------


class LastUsedRecorder:
    """Collects the tokens whose ``last_used_at`` is due and writes them in one UPDATE per ``flush``."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._due: dict[str, datetime] = {}  # token id -> when it was used
        self._written: dict[str, float] = {}  # token id -> monotonic time it was last queued

    def used(self, identity: ProxyIdentity, *, now: datetime) -> None:
        """Note a use; cheap, and a token queued less than a minute ago is not queued again."""
        if not last_use_due(identity.last_used_at, now=now):
            return
        moment = time.monotonic()
        with self._lock:
            queued = self._written.get(identity.token_id)
            if queued is not None and moment - queued < 60.0:
                return
            self._written[identity.token_id] = moment
            self._due[identity.token_id] = now

    def flush(self) -> int:
        """Write what is due (synchronous: run it in a worker thread); returns how many tokens."""
        with self._lock:
            due, self._due = self._due, {}
            horizon = time.monotonic() - 60.0
            self._written = {key: at for key, at in self._written.items() if at >= horizon}
        if not due:
            return 0
        now = max(due.values())
        with self._factory() as session:
            session.execute(
                update(ApiToken)
                .where(ApiToken.id.in_(list(due)))
                .where(or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < now))
                .values(last_used_at=now)
            )
            session.commit()
        return len(due)

    async def run(self, *, interval_seconds: float = 5.0) -> None:
        """Flush every ``interval_seconds`` until cancelled, and once more then."""
        try:
            while True:
                await asyncio.sleep(interval_seconds)
                await self._flush_logged()
        finally:
            await asyncio.shield(self._flush_logged())

    async def _flush_logged(self) -> None:
        try:
            await asyncio.to_thread(self.flush)
        except Exception:
            log.warning("could not record when tokens were last used", exc_info=True)


# --- what a cache keeps -----------------------------------------------------------------------------------

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V", bound=Revocable)

MAX_ENTRIES = 100_000  # past this, expired entries are dropped at the next store


def expiry(now: float, ttl_seconds: float, token_expires_at: datetime | None) -> float:
    """When an entry stored ``now`` (monotonic) ends: ``ttl_seconds`` later, never after its token expires."""
    expires = now + ttl_seconds
    if token_expires_at is not None:
        expires = min(expires, now + (token_expires_at - utcnow()).total_seconds())
    return expires


class RevocableEntries(Generic[_K, _V]):
    """Entries kept until their deadline and dropped by the revocations that concern them: the memory of
    every credential cache (``CredentialCache`` here, the API's ``kaas_api.auth.principal_cache``).

    Take ``generation()`` before a look-up in the database and give it to ``put``: an answer read while a
    revocation arrived is not stored. Thread-safe: invalidations come from other threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[_K, tuple[_V, float]] = {}
        self._generation = 0

    def get(self, key: _K, *, now: float) -> _V | None:
        entry = self._entries.get(key)
        if entry is None or entry[1] <= now:
            return None
        return entry[0]

    def generation(self) -> int:
        return self._generation

    def put(self, key: _K, value: _V, *, expires: float, generation: int, now: float) -> None:
        with self._lock:
            if generation != self._generation:  # a revocation came while we looked
                return
            self._entries[key] = (value, expires)
            if len(self._entries) > MAX_ENTRIES:
                self._entries = {k: entry for k, entry in self._entries.items() if entry[1] > now}

    def invalidate(self, revocations: Iterable[Revocation]) -> None:
        """Forget every entry a revocation concerns, and every look-up in flight."""
        revocations = list(revocations)
        with self._lock:
            self._generation += 1
            if any(
                revocation.kind not in ("token", "user", "project", "cluster") for revocation in revocations
            ):
                self._entries = {}
                return
            self._entries = {
                key: entry
                for key, entry in self._entries.items()
                if not any(revocation.concerns(entry[0]) for revocation in revocations)
            }

    def __len__(self) -> int:
        return len(self._entries)


# --- the cache --------------------------------------------------------------------------------------------


class CredentialCache:
    """``authorize`` of the k8s proxies, remembered for ``ttl_seconds`` while the feed listens.

    ``on_miss`` runs after each database check in its worker thread, with the session and the identity
    (the API writes ``last_used_at`` there, as before); ``recorder`` notes every use instead (the tunnel
    server). Thread-safe: invalidations come from other threads.
    """

    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        feed: RevocationFeed,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        recorder: LastUsedRecorder | None = None,
        on_miss: Callable[[Session, ProxyIdentity], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self._feed = feed
        self._ttl = ttl_seconds
        self._recorder = recorder
        self._on_miss = on_miss
        self._clock = clock
        self._entries: RevocableEntries[tuple[str, str], ProxyIdentity] = RevocableEntries()
        self.hits = 0
        self.misses = 0
        feed.attach(self)

    @property
    def feed(self) -> RevocationFeed:
        return self._feed

    async def authorize(self, authorization: str | None, cluster_id: str) -> ProxyIdentity:
        """The caller's identity on ``cluster_id``; ``AccessRefused`` (401/404) as ``authorize_cluster``."""
        from kaas_core.cluster_access import bearer_token_hash

        token_hash = bearer_token_hash(authorization)  # a malformed header never reaches the database
        key = (token_hash, cluster_id)
        use_cache = self._ttl > 0 and self._feed.listening
        if not use_cache:
            await self._feed.ensure_listening()
        now_mono = self._clock()
        if use_cache:
            kept = self._entries.get(key, now=now_mono)
            if kept is not None:
                self.hits += 1
                if self._recorder is not None:
                    self._recorder.used(kept, now=utcnow())
                return kept
        self.misses += 1
        generation = self._entries.generation()
        identity = await asyncio.to_thread(self._check, authorization, cluster_id)
        if self._recorder is not None:
            self._recorder.used(identity, now=utcnow())
        if use_cache:
            expires = expiry(now_mono, self._ttl, identity.token_expires_at)
            self._entries.put(key, identity, expires=expires, generation=generation, now=now_mono)
        return identity

    def _check(self, authorization: str | None, cluster_id: str) -> ProxyIdentity:
        """The database part, in a worker thread: one query in autocommit (a transaction would only add a
        BEGIN and a COMMIT round trip)."""
        with self._factory() as session:
            session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            identity = authorize_cluster(session, authorization, cluster_id)
            if self._on_miss is not None:
                self._on_miss(session, identity)
            session.commit()
            return identity

    def invalidate(self, revocations: Iterable[Revocation]) -> None:
        """Forget every identity a revocation concerns, and every lookup in flight."""
        self._entries.invalidate(revocations)

    def __len__(self) -> int:
        return len(self._entries)
