"""``kaas_api.deps``: the unit of work of a request, and the routes that read in one worker thread
(``Caller.read``: authentication, the read and the end of the unit of work in one thread, in autocommit)."""

from __future__ import annotations

import anyio
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request

from kaas_api.auth.principal_cache import PrincipalCache
from kaas_api.auth.service import Principal
from kaas_api.deps import Caller
from kaas_api.errors import Unauthenticated
from kaas_core.credential_cache import InProcessRevocationFeed
from kaas_core.db.models import ApiToken, Project
from kaas_core.security import hash_token
from tests.kaas_api.conftest import World, bearer

CLUSTER = "/v1/projects/alpha/clusters/c1"


def _request(authorization: dict[str, str]) -> Request:
    headers = [(name.lower().encode(), value.encode()) for name, value in authorization.items()]
    return Request({"type": "http", "method": "GET", "path": CLUSTER, "headers": headers, "state": {}})


def _caller(authorization: dict[str, str], session_factory: sessionmaker[Session]) -> Caller:
    return Caller(
        request=_request(authorization),
        session_factory=session_factory,
        threads=anyio.CapacityLimiter(1),
        principals=PrincipalCache(InProcessRevocationFeed(), ttl_seconds=5.0),
    )


def _last_used(session_factory: sessionmaker[Session], token: str) -> object:
    with session_factory() as session:
        return session.scalars(
            select(ApiToken.last_used_at).where(ApiToken.token_hash == hash_token(token))
        ).one()


@pytest.mark.committing
def test_the_cluster_get_records_the_tokens_last_use_in_autocommit(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    before = _last_used(session_factory, world.tokens["viewer"])
    response = world.call("viewer", "GET", CLUSTER)
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "c1"
    assert before is None
    assert _last_used(session_factory, world.tokens["viewer"]) is not None


@pytest.mark.committing
async def test_a_read_in_one_thread_that_changes_a_row_is_refused_and_stores_nothing(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    def rename_the_project(session: Session, principal: Principal) -> None:
        project = session.scalars(select(Project).where(Project.name == "alpha")).one()
        project.description = "changed by a read"

    with pytest.raises(RuntimeError, match="read-only"):
        await _caller(bearer(world.tokens["viewer"]), session_factory).read(rename_the_project)
    with session_factory() as session:
        assert session.scalars(select(Project.description).where(Project.name == "alpha")).one() == ""


async def test_a_read_in_one_thread_authenticates_before_it_reads(
    world: World, session_factory: sessionmaker[Session]
) -> None:
    reads: list[Principal] = []

    def read(session: Session, principal: Principal) -> None:
        reads.append(principal)

    with pytest.raises(Unauthenticated):
        await _caller(bearer("kaas_not-a-token"), session_factory).read(read)
    assert reads == []
