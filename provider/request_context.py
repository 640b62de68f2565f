"""The request id inside provider workers: read from the task's message, bound for its log lines, passed on.

Owned by ``provider``; ``provider.celery_app.make_celery`` calls ``connect_request_id_signals()``. The API
sends a reconcile with the Celery message header ``kaas_request_id`` (``kaas_api.dispatch``). Before a
task runs (``task_prerun``), its request id (or a fresh one, for work beat started) is bound into
structlog's context variables and ``kaas_core.request_context.request_id_var``, so every log line
of the task carries ``request_id`` (``kaas_core.logs``); after it (``task_postrun``) both are
cleared. Every task published meanwhile (``before_task_publish``: the re-queued continuation of a
reconcile chain, the reconciles a sweep queues, webhook deliveries) gets the same header, so a whole
chain shows one request id.

Celery signals are process-wide and a receiver is connected once however often this is called.
"""

from __future__ import annotations

from typing import Any

import structlog
from celery import signals

from kaas_core.request_context import accept_request_id, current_request_id, request_id_var
from kaas_core.tasks import REQUEST_ID_TASK_HEADER


def task_request_id(task: Any) -> str | None:
    """The request id the task's message carries, if any."""
    request = getattr(task, "request", None)
    value = getattr(request, REQUEST_ID_TASK_HEADER, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(REQUEST_ID_TASK_HEADER)
    return value if isinstance(value, str) and value else None


def _bind_before_task(task: Any = None, **_: Any) -> None:
    # the header came over the broker: keep it only when it is well-formed, as the API does with its callers'
    request_id = accept_request_id(task_request_id(task))
    structlog.contextvars.bind_contextvars(request_id=request_id)
    request_id_var.set(request_id)


def _unbind_after_task(**_: Any) -> None:
    # a pool thread runs one task after another in the same context: leave nothing behind for the next
    structlog.contextvars.unbind_contextvars("request_id")
    request_id_var.set(None)


def _pass_request_id_on(headers: dict[str, Any] | None = None, **_: Any) -> None:
    request_id = current_request_id()
    if request_id is not None and headers is not None:
        headers.setdefault(REQUEST_ID_TASK_HEADER, request_id)


def connect_request_id_signals() -> None:
    """Connect the three receivers (idempotent: Celery keeps one connection per receiver)."""
    signals.task_prerun.connect(_bind_before_task, weak=False, dispatch_uid="kaas-request-id-prerun")
    signals.task_postrun.connect(_unbind_after_task, weak=False, dispatch_uid="kaas-request-id-postrun")
    signals.before_task_publish.connect(
        _pass_request_id_on, weak=False, dispatch_uid="kaas-request-id-publish"
    )
