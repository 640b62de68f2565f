"""The request id of the work at hand: one per API call, carried into every log line and every task the call
queues (the API's ``RequestIdMiddleware`` sets it per request, the workers' Celery signals per task).

Owned by ``kaas_core``: the API, the workers and the logging set and read it, so it lives below them.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

REQUEST_ID_HEADER = "x-request-id"
# a caller's id is kept only when it is short and harmless, so it can go into logs and headers unescaped
_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")

request_id_var: ContextVar[str | None] = ContextVar("kaas_request_id", default=None)


def current_request_id() -> str | None:
    return request_id_var.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


def accept_request_id(value: str | None) -> str:
    """The caller's id when it is acceptable, else a fresh one."""
    if value and _ACCEPTABLE.match(value):
        return value
    return new_request_id()
