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

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from kaas_api.audit.middleware import set_actor
from kaas_api.auth.service import Principal, authenticate
from kaas_api.config import ApiSettings
from kaas_api.dispatch import TaskDispatcher, UnitOfWork
from kaas_api.errors import Conflict, Forbidden, answers


@dataclass(frozen=True)
class AppContext:
    settings: ApiSettings
    session_factory: sessionmaker[Session]
    dispatcher: TaskDispatcher


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
def get_uow(context: Context) -> Iterator[UnitOfWork]:
    uow = UnitOfWork(context.session_factory())
    try:
        try:
            yield uow
        except BaseException:
            uow.rollback()
            raise
        try:
            uow.commit(context.dispatcher)
        except IntegrityError as exc:
            uow.rollback()
            raise Conflict("the change conflicts with one made at the same time; retry") from exc
    finally:
        uow.session.close()


Uow = Annotated[UnitOfWork, Depends(get_uow, scope="function")]


@answers(401)
def get_principal(request: Request, uow: Uow) -> Principal:
    principal = authenticate(uow.session, request.headers.get("authorization"))
    set_actor(request, user_id=principal.user.id, user_name=principal.user.name)
    return principal


CurrentUser = Annotated[Principal, Depends(get_principal)]


@answers(403)
async def require_admin(principal: CurrentUser) -> Principal:
    if not principal.is_admin:
        raise Forbidden("only global admins may do this")
    return principal


Admin = Annotated[Principal, Depends(require_admin)]
