"""Domain errors. Each carries its HTTP status; one handler renders ``{"error", "message", "detail"}``
(``kaas_api.schemas.ErrorBody``, the documented body of every error).

Services raise these, never ``HTTPException``, so the same service layer serves the API, the CLI and the
admin dashboard. ``answers`` marks a FastAPI dependency with the statuses it can raise, so that every route
using it documents them (``kaas_api.openapi``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

_Dependency = TypeVar("_Dependency", bound=Callable[..., Any])

# ``detail[].type`` of the 422 rules a JSON Schema cannot state: they depend on the state of other resources
# (a flavor the region offers) or relate several fields (overlapping CIDRs). Every other 422 means the
# request broke its operation's documented schema.
RULES_BEYOND_SCHEMA = frozenset(
    {
        "cidr_host_bits",
        "cidr_overlap",
        "conflicting_changes",
        "duplicate",
        "egress_refused",
        "label_prefix_too_long",
        "not_in_list",
        "not_offered",
        "nothing_to_change",
        "out_of_range",
        "required_with",
        "single_control_plane",
        "too_large",
        "unknown_node",
        "unknown_node_pool",
        "unknown_region",
        "unknown_time_zone",
        "version_skew",
    }
)


class KaasError(Exception):
    status_code = 400
    error = "bad_request"

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class Unauthenticated(KaasError):
    status_code = 401
    error = "unauthenticated"


class Forbidden(KaasError):
    status_code = 403
    error = "forbidden"


class NotFound(KaasError):
    status_code = 404
    error = "not_found"


class Conflict(KaasError):
    status_code = 409
    error = "conflict"


class QuotaExceeded(KaasError):
    status_code = 409
    error = "quota_exceeded"


class InvalidInput(KaasError):
    """A 422 whose ``detail`` is, like request validation's, a list of ``{"field", "message", "type"}``
    (plus what else helps, e.g. ``allowed``); ``field`` is a path into the request, ``""`` the whole of it;
    ``rule`` becomes the ``type``."""

    status_code = 422
    error = "invalid_input"

    def __init__(
        self,
        message: str,
        *,
        field: str = "",
        rule: str = "value_error",
        detail: list[dict[str, Any]] | None = None,
        **context: Any,
    ) -> None:
        if detail is None:
            detail = [{"field": field, "message": message, "type": rule, **context}]
        super().__init__(message, detail=detail)


class ServiceUnavailable(KaasError):
    status_code = 503
    error = "service_unavailable"


def answers(*statuses: int, writes_only: bool = False) -> Callable[[_Dependency], _Dependency]:
    """Mark a dependency with the error statuses it raises (``writes_only``: on POST, PUT, PATCH, DELETE)."""

    def mark(dependency: _Dependency) -> _Dependency:
        dependency.__kaas_answers__ = (frozenset(statuses), writes_only)  # type: ignore[attr-defined]
        return dependency

    return mark
