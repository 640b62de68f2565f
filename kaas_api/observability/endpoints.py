"""``GET /metrics``: the app's Prometheus registry in the text exposition format, for admins and scrapers.

Included by ``create_app``, which stores the app's ``ApiMetrics`` on ``app.state.kaas_metrics``. Like every
kaas endpoint it is authenticated: either the dedicated scrape token (``ApiSettings.metrics_token``,
``KAAS_METRICS_TOKEN``, compared in constant time) or a global admin's API token; no or an unknown token
is 401, a valid token of a non-admin 403. A sync endpoint on purpose: the scrape queries the database
(``KaasStateCollector``) in a worker thread, never on the event loop.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kaas_api.auth.service import authenticate
from kaas_api.deps import Settings, Uow
from kaas_api.errors import Forbidden
from kaas_api.observability.metrics import ApiMetrics
from kaas_api.openapi import errors

router = APIRouter(tags=["observability"])


def _is_scrape_token(authorization: str | None, expected: str | None) -> bool:
    if not authorization or not expected:
        return False
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), expected.encode())


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "the text exposition format"},
        **errors(401, 403),
    },
)
def metrics(request: Request, uow: Uow, settings: Settings) -> Response:
    """Scrape with `Authorization: Bearer <KAAS_METRICS_TOKEN>` or an admin's API token."""
    authorization = request.headers.get("authorization")
    expected = settings.metrics_token.get_secret_value() if settings.metrics_token is not None else None
    if not _is_scrape_token(authorization, expected):
        principal = authenticate(uow.session, authorization)
        if not principal.is_admin:
            raise Forbidden("only admins and the metrics scrape token may read /metrics")
    api_metrics: ApiMetrics = request.app.state.kaas_metrics
    return Response(content=generate_latest(api_metrics.registry), media_type=CONTENT_TYPE_LATEST)
