"""Liveness and readiness: ``/healthz`` (the process answers) and ``/readyz`` (database and broker).

Unauthenticated on purpose (load balancers and orchestrators call them); they reveal only ok/failed.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from kaas_api.deps import Context
from kaas_api.openapi import errors
from kaas_api.schemas import ErrorBody

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses=errors(503))
def readyz(context: Context) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with context.session_factory() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:  # readiness reports a failure, it never raises one
        log.warning("readiness: database check failed", exc_info=True)
        checks["database"] = "failed"
    try:
        checks["broker"] = "ok" if context.dispatcher.ping() else "failed"
    except Exception:
        log.warning("readiness: broker check failed", exc_info=True)
        checks["broker"] = "failed"
    failed = sorted(name for name, state in checks.items() if state != "ok")
    if failed:
        return JSONResponse(
            status_code=503,
            content=ErrorBody(
                error="service_unavailable",
                message="not ready: " + ", ".join(failed) + " failed",
                detail={"checks": checks, "failed": failed},
            ).model_dump(mode="json"),
        )
    return JSONResponse({"status": "ok", "checks": checks})
