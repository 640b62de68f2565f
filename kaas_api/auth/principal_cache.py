"""The API's short-lived memory of who each bearer token is, emptied by revocations.

Used by ``kaas_api.deps.resolve_principal`` (every authenticated route), built by ``kaas_api.app`` on the
app's ``RevocationFeed`` (``kaas_core.credential_cache``: the same feed the k8s proxies' caches listen to).

The token look-up was the largest single cost of the API's most frequent call, the cluster GET (a query,
two ORM rows and a check, for an answer that changes a few times in a token's life). ``PrincipalCache``
keeps the ``Principal`` of a token hash for ``ttl_seconds`` (a few), and only while its feed listens, so a
revocation is never hidden by it for longer than the feed takes to deliver it (milliseconds, on every
replica):

- what a ``Principal`` holds changes only by a commit the revocation hooks see: a token revoked, deleted
  or given another expiry (``token``), a user disabled, deleted, renamed or made or unmade admin
  (``user``). A project or cluster revocation concerns no principal (a membership is checked per request,
  in the route's own query).
- an entry never outlives its token's ``expires_at``;
- a look-up that started before an invalidation never stores its answer (a generation counter);
- refusals are never kept: a bad token costs its query every time, as before.

``last_used_at`` keeps its rule (written at most once a minute per token, in the request that finds it
due): an entry whose token is due is not used, so that request reads the row and writes the time, and
stores the new entry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from kaas_api.auth.service import Principal
from kaas_core import cluster_access
from kaas_core.credential_cache import RevocableEntries, Revocation, RevocationFeed, expiry
from kaas_core.db.models import utcnow


class PrincipalCache:
    """Token hash → ``Principal``, kept in ``RevocableEntries`` (the k8s proxies' cache keeps its
    identities the same way). Thread-safe: routes authenticate in worker threads, and invalidations come
    from whichever thread committed or from the feed's event loop."""

    def __init__(
        self,
        feed: RevocationFeed,
        *,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._feed = feed
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: RevocableEntries[str, Principal] = RevocableEntries()
        self.hits = 0
        self.misses = 0
        feed.attach(self)

    @property
    def feed(self) -> RevocationFeed:
        return self._feed

    @property
    def enabled(self) -> bool:
        """Whether entries may be used and stored now: a TTL, and a feed that is listening."""
        return self._ttl > 0 and self._feed.listening

    def lookup(self, token_hash: str) -> Principal | None:
        """The cached principal of ``token_hash``, or None (not cached, expired, its use due to be
        written, or the cache not usable now)."""
        if not self.enabled:
            return None
        principal = self._entries.get(token_hash, now=self._clock())
        if principal is None or cluster_access.last_use_due(principal.token.last_used_at, now=utcnow()):
            self.misses += 1
            return None
        self.hits += 1
        return principal

    def generation(self) -> int:
        """Take before a look-up in the database; ``store`` refuses the answer if a revocation came since."""
        return self._entries.generation()

    def store(self, token_hash: str, principal: Principal, *, generation: int) -> None:
        if not self.enabled:
            return
        now = self._clock()
        expires = expiry(now, self._ttl, principal.token.expires_at)
        self._entries.put(token_hash, principal, expires=expires, generation=generation, now=now)

    def invalidate(self, revocations: Iterable[Revocation]) -> None:
        """Forget every principal a revocation concerns, and every look-up in flight."""
        self._entries.invalidate(revocations)

    def __len__(self) -> int:
        return len(self._entries)
