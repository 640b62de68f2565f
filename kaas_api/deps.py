"""FastAPI dependencies as ``Annotated`` aliases: the app context, the unit of work, the current user.

``create_app`` stores an ``AppContext`` on ``app.state``; endpoints declare ``Uow``, ``CurrentUser``,
``Admin``, ``Settings``. Each dependency that can refuse a request is marked with the statuses it answers
(``kaas_api.errors.answers``), which every route using it documents (``kaas_api.openapi``).

``get_uow`` is the one commit point of a request: it commits when the endpoint returned, rolls back
when it raised, and sends the reconciles only after a successful commit. It runs with
``scope="function"`` so the commit happens before the response is sent (a failed commit is an error
response, never a 2xx for a change that was not stored).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, Request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import HTTPConnection

from kaas_api.audit.middleware import set_actor
from kaas_api.auth.principal_cache import PrincipalCache
from kaas_api.auth.service import Principal, authenticate_hash, bearer_token_hash
from kaas_api.clusters.view_cache import ClusterViewCache
from kaas_api.config import ApiSettings
from kaas_api.dispatch import TaskDispatcher, UnitOfWork
from kaas_api.errors import Conflict, Forbidden, Unauthenticated, answers
from kaas_core.db.models import ApiToken

_T = TypeVar("_T")


@dataclass(frozen=True)
class AppContext:
    settings: ApiSettings
    session_factory: sessionmaker[Session]
    dispatcher: TaskDispatcher
    read_threads: anyio.CapacityLimiter  # Caller.read's threads: no more at once than the pool's connections
    principals: PrincipalCache
    cluster_views: ClusterViewCache

    async def ensure_revocations_heard(self) -> None:
        """Start listening to the revocation feed if nothing in this event loop does yet: the principal
        cache is only used while it listens (one attribute read when it does)."""
        if not self.principals.feed.listening:
            await self.principals.feed.ensure_listening()


async def get_context(request: Request) -> AppContext:
    """``async`` although it awaits nothing: FastAPI runs every plain ``def`` dependency in a worker thread,
    and a thread hop costs more than this whole function."""
    context: AppContext = request.app.state.kaas
    return context


Context = Annotated[AppContext, Depends(get_context)]


async def get_settings(context: Context) -> ApiSettings:
    return context.settings


Settings = Annotated[ApiSettings, Depends(get_settings)]


@answers(409, writes_only=True)
async def get_uow(context: Context) -> AsyncIterator[UnitOfWork]:
    """``async``: making a session does no I/O (it connects at its first statement), so only the end of the
    unit of work takes a worker thread; as a plain generator its start took one too. The end runs shielded
    and outside the shared thread limit, as FastAPI runs a plain generator's end: a request holding a
    connection must never wait for a thread that requests waiting for a connection hold."""
    await context.ensure_revocations_heard()
    uow = UnitOfWork(context.session_factory())
    try:
        yield uow
    except BaseException:
        await _off_the_loop(_abandon, uow)
        raise
    await _off_the_loop(_commit, uow, context.dispatcher)


async def _off_the_loop(function: Callable[..., None], *args: object) -> None:
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(function, *args, limiter=anyio.CapacityLimiter(1))


def _commit(uow: UnitOfWork, dispatcher: TaskDispatcher) -> None:
    try:
        try:
            uow.commit(dispatcher)
        except IntegrityError as exc:
            uow.rollback()
            raise Conflict("the change conflicts with one made at the same time; retry") from exc
    finally:
        uow.session.close()


def _abandon(uow: UnitOfWork) -> None:
    try:
        uow.rollback()
    finally:
        uow.session.close()


Uow = Annotated[UnitOfWork, Depends(get_uow, scope="function")]


def resolve_principal(request: HTTPConnection, session: Session, principals: PrincipalCache) -> Principal:
    """Who the caller is, the one way every route finds out: the principal cache, else ``authenticate``
    (whose answer the cache keeps), then the audit log is told."""
    token_hash = bearer_token_hash(request.headers.get("authorization"))
    principal = principals.lookup(token_hash)
    if principal is None:
        generation = principals.generation()
        principal = authenticate_hash(session, token_hash)
        principals.store(token_hash, principal, generation=generation)
    set_actor(request, user_id=principal.user.id, user_name=principal.user.name)
    return principal


@answers(401)
def get_principal(request: Request, uow: Uow, context: Context) -> Principal:
    return resolve_principal(request, uow.session, context.principals)


CurrentUser = Annotated[Principal, Depends(get_principal)]


@dataclass(frozen=True)
class Caller:
    """The caller of a route that only reads, and does it in one worker thread (``read``): what
    ``CurrentUser`` and ``Uow`` give, but authenticated inside that thread instead of in one of its own, in
    a session of its own that ``read`` ends (such a route takes no ``Uow``)."""

    request: Request
    session_factory: sessionmaker[Session]
    threads: anyio.CapacityLimiter
    principals: PrincipalCache

    def cached_principal(self) -> Principal | None:
        """The caller from the principal cache, without a thread or the database, and the audit log told;
        None when it is not there (or the header is malformed: ``read`` answers that as always)."""
        authorization = self.request.headers.get("authorization")
        try:
            principal = self.principals.lookup(bearer_token_hash(authorization))
        except Unauthenticated:
            return None
        if principal is not None:
            set_actor(self.request, user_id=principal.user.id, user_name=principal.user.name)
        return principal

    async def read(self, work: Callable[[Session, Principal], _T]) -> _T:
        """``resolve_principal``, ``work`` and the end of the session in one worker thread, in autocommit:
        the API's most frequent calls (the cluster GET) are a few statements of reading, for which every
        thread hop, ``BEGIN`` and ``COMMIT`` cost more than the reading. ``work`` must only read: the one
        write allowed is the token's ``last_used_at`` (a single statement, at most once a minute); anything
        else it changed is refused at the end, before the commit (a route that writes takes ``Uow``)."""
        return await anyio.to_thread.run_sync(self._read, work, limiter=self.threads)

    def _read(self, work: Callable[[Session, Principal], _T]) -> _T:
        with self.session_factory() as session:  # closed at the end: nothing to roll back in autocommit
            session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            result = work(session, resolve_principal(self.request, session, self.principals))
            changed = [
                *session.new,
                *session.deleted,
                *(o for o in session.dirty if not isinstance(o, ApiToken)),
            ]
            if changed:
                raise RuntimeError(f"a read-only route changed {changed}")
            session.commit()
            return result


@answers(401)
async def get_caller(request: Request, context: Context) -> Caller:
    await context.ensure_revocations_heard()
    return Caller(
        request=request,
        session_factory=context.session_factory,
        threads=context.read_threads,
        principals=context.principals,
    )


ReadingCaller = Annotated[Caller, Depends(get_caller)]


@answers(403)
async def require_admin(principal: CurrentUser) -> Principal:
    if not principal.is_admin:
        raise Forbidden("only global admins may do this")
    return principal


Admin = Annotated[Principal, Depends(require_admin)]
