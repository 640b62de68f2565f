"""Structured logs: ``configure_logging`` sets up structlog and the standard library's root logger.

Called once per process by the composition root (``kaas_cli``: ``kaas api``, ``worker``, ``beat``,
``tunnel`` and ``up``) before anything logs. Inner code keeps logging through ``logging.getLogger(__name__)``
(or structlog); both go through the same processors, so every line has the same shape: one JSON object per
line with ``json=True``, a readable console line otherwise.

Every line carries the request id when there is one: the API's ``current_request_id()`` while a request
runs, or the ``request_id`` a Celery task bound into structlog's context variables (``provider.tasks``).
Secrets never reach the output: values under secret-looking keys (``authorization``, ``token``,
``password``, ``secret``, ``user_data``, ``cookie``) and bearer or kaas tokens inside messages are redacted.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor

from kaas_core.request_context import current_request_id

REDACTED = "[redacted]"
_SECRET_KEY_PARTS = ("authorization", "token", "password", "secret", "user_data", "userdata", "cookie")
# "Bearer <anything>", and kaas's own token formats (kaas_..., kaasagent_...) wherever they appear
_SECRET_IN_TEXT = re.compile(r"(?i)(bearer\s+)[^\s'\",]+|\bkaas(?:agent)?_[A-Za-z0-9_-]{16,}")
_HANDLER_NAME = "kaas-structured"


def _add_request_id(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    if "request_id" not in event_dict:
        request_id = current_request_id()
        if request_id is not None:
            event_dict["request_id"] = request_id
    return event_dict


def _scrub(text: str) -> str:
    return _SECRET_IN_TEXT.sub(lambda m: (m.group(1) or "") + REDACTED, text)


def redact_secrets(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Blank values under secret-looking keys; scrub tokens out of the message and string values."""
    for key, value in list(event_dict.items()):
        lowered = key.lower()
        if any(part in lowered for part in _SECRET_KEY_PARTS):
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            event_dict[key] = _scrub(value)
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        _add_request_id,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _format_exception_then_redact(logger: Any, method: str, event_dict: EventDict) -> EventDict:
    # tracebacks can quote the failing line's arguments: render them first so they are scrubbed too
    return redact_secrets(logger, method, structlog.processors.format_exc_info(logger, method, event_dict))


def configure_logging(*, json: bool, level: str | int = "INFO", stream: TextIO | None = None) -> None:
    """Route structlog and the standard library's logging through one handler on the root logger.

    Replaces any handler an earlier call installed (so calling it again reconfigures), keeps other
    handlers (pytest's capture, for one). ``stream`` defaults to standard error.
    """
    shared = _shared_processors()
    final: list[Processor]
    if json:
        final = [_format_exception_then_redact, structlog.processors.JSONRenderer()]
    else:
        final = [redact_secrets, structlog.dev.ConsoleRenderer(colors=False)]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def unconfigure_logging() -> None:
    """Remove the handler ``configure_logging`` installed and reset structlog (for tests)."""
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)
            existing.close()
    structlog.reset_defaults()


__all__ = ["REDACTED", "configure_logging", "redact_secrets", "unconfigure_logging"]
