"""Domain errors. Each carries its HTTP status; one handler renders ``{"error": ..., "detail": ...}``.

Services raise these, never ``HTTPException``, so the same service layer serves the API, the CLI and the
admin dashboard.
"""

from __future__ import annotations

from typing import Any


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
    status_code = 422
    error = "invalid_input"


class ServiceUnavailable(KaasError):
    status_code = 503
    error = "service_unavailable"
