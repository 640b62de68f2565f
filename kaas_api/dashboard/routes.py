"""The admin dashboard's pages and form actions under ``/admin`` (global admins only).

Server-rendered with Jinja2 (autoescaped); no front-end build. Every page needs a dashboard session
(``kaas_api.dashboard.sessions``); without one the browser is sent to the login page. Every form is a POST
that carries the session's CSRF token, and every action calls the same service functions as the API
(``kaas_api.clusters.service`` and ``.upgrades``, ``kaas_api.operations.service``,
``kaas_api.regions.service``, ``kaas_api.auth.service``), inside the same unit of work, and is audited by
the audit middleware like an API call (``via="dashboard"``). The session cookie is HttpOnly,
SameSite=Strict and scoped to ``/admin``. Every POST must also come from kaas's own origin
(``check_origin``). Every response under ``/admin`` carries the headers of
``kaas_api.security_headers`` (CSP, no framing, no caching), redirects and error pages included.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import selectinload

from kaas_api.admin import service as fleet
from kaas_api.audit.middleware import add_audit_detail, set_actor
from kaas_api.audit.service import AuditQuery, search
from kaas_api.auth.service import Principal, revoke_token
from kaas_api.clusters import service as clusters
from kaas_api.clusters import upgrades
from kaas_api.clusters.endpoints import maintenance_of
from kaas_api.dashboard.sessions import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    DashboardSession,
    DashboardView,
    close_session,
    csrf_matches,
    open_session,
    resolve_session,
)
from kaas_api.deps import Settings, Uow
from kaas_api.errors import Forbidden, InvalidInput, KaasError, NotFound, Unauthenticated
from kaas_api.operations import service as operations_service
from kaas_api.regions import service as regions
from kaas_api.regions.endpoints import _fields as region_fields
from kaas_api.regions.schemas import RegionPatch
from kaas_api.security_headers import DASHBOARD_PREFIX
from kaas_core.db.models import (
    ApiToken,
    AuditEvent,
    ClusterAgent,
    ClusterPhase,
    Operation,
    OperationState,
    Project,
    ProjectMember,
    TokenKind,
    User,
)
from kaas_core.upgrades import (
    MAX_SURGE_LIMIT,
    MAX_UNAVAILABLE_LIMIT,
    UpgradeStrategy,
    pending_upgrade,
    upgrade_targets,
)

HERE = Path(__file__).resolve().parent
_templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
PHASES = ("provisioning", "running", "updating", "deleting", "deleted", "error")


class LoginRequired(KaasError):
    """No live dashboard session: the handler sends the browser to the login page."""

    status_code = 401
    error = "login_required"


class CsrfRejected(KaasError):
    status_code = 403
    error = "csrf_rejected"


class OriginRejected(KaasError):
    status_code = 403
    error = "origin_rejected"


def _age(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "never"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    seconds = max(0, int((now - value).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _when(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_templates.filters["when"] = _when


def render(
    name: str,
    *,
    request: Request,
    dashboard: DashboardSession | DashboardView | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    now = datetime.now(UTC)
    view = dashboard.view if isinstance(dashboard, DashboardSession) else dashboard
    html = _templates.get_template(name).render(
        request=request,
        admin=view,
        csrf_token=view.csrf_token if view else "",
        now=now,
        age=lambda value: _age(value, now),
        **context,
    )
    return HTMLResponse(html, status_code=status_code)  # headers: kaas_api.security_headers


def render_error(request: Request, exc: KaasError) -> Response:
    """How domain errors look on /admin: the login page for no session, else an error page."""
    if isinstance(exc, LoginRequired):
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        return RedirectResponse("/admin/login?" + urlencode({"next": target}), status_code=303)
    return render(
        "error.html",
        request=request,
        dashboard=getattr(request.state, "kaas_dashboard_view", None),
        status_code=exc.status_code,
        error=exc.error,
        message=exc.message,
    )


def get_dashboard_session(request: Request, uow: Uow) -> DashboardSession:
    dashboard = resolve_session(uow.session, request.cookies.get(SESSION_COOKIE))
    if dashboard is None:
        raise LoginRequired("log in to the dashboard")
    request.state.kaas_dashboard_view = dashboard.view
    user = dashboard.principal.user
    set_actor(request, user_id=user.id, user_name=user.name, via="dashboard")
    return dashboard


Dashboard = Annotated[DashboardSession, Depends(get_dashboard_session)]


def _origin(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL, the port only when not the default; None otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default_port = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None and port != default_port else "")


def check_origin(request: Request, settings: Settings) -> None:
    """Refuse a form POST that a page of another origin made the browser send (403).

    Besides the session's CSRF token: the browser's ``Origin`` (or, when it sent none, its ``Referer``)
    must be kaas's own, either ``KAAS_PUBLIC_URL``'s origin or the origin the request was addressed to
    (scheme and ``Host``, so ``https://localhost:8000`` works as well as ``https://127.0.0.1:8000``; a
    forging page cannot choose the Host its victim's browser sends with kaas's cookie). A POST with
    neither header, or ``Origin: null`` (a sandboxed or privacy-stripped context), is refused too: every
    browser the dashboard supports sends ``Origin`` on a form POST.
    """
    origin = request.headers.get("origin")
    source = origin if origin is not None else request.headers.get("referer")
    own = {_origin(settings.public_url), _origin(str(request.base_url))} - {None}
    if source is None or _origin(source) not in own:
        raise OriginRejected(
            "this form was not sent from a page of this dashboard (its Origin or Referer is another"
            " site's, or missing): reload the dashboard and retry"
        )


SameOrigin = Annotated[None, Depends(check_origin)]


def check_csrf(
    _same_origin: SameOrigin, dashboard: Dashboard, csrf_token: Annotated[str, Form(max_length=128)] = ""
) -> DashboardSession:
    if not csrf_matches(dashboard.csrf_token, csrf_token):
        raise CsrfRejected("the form is stale or was not sent by this dashboard: reload the page and retry")
    return dashboard


Action = Annotated[DashboardSession, Depends(check_csrf)]

router = APIRouter(prefix=DASHBOARD_PREFIX, include_in_schema=False)


def _safe_next(value: str | None) -> str:
    """Only a local dashboard path: never an open redirect."""
    if value and value.startswith("/admin") and not value.startswith("//") and "\\" not in value:
        return value
    return "/admin"


# --- login -------------------------------------------------------------------------------------------


@router.get("/static/dashboard.{ext}", name="dashboard_static")
def static_file(ext: str) -> Response:
    if ext not in ("css", "js"):
        return Response(status_code=404)
    media = "text/css" if ext == "css" else "text/javascript"
    return FileResponse(
        HERE / "static" / f"dashboard.{ext}", media_type=media, headers={"Cache-Control": "max-age=300"}
    )


@router.get("/login", name="dashboard_login_form")
def login_form(request: Request, next: Annotated[str | None, Query(max_length=512)] = None) -> Response:
    csrf = secrets.token_urlsafe(32)
    response = render("login.html", request=request, dashboard=None, login_csrf=csrf, next=_safe_next(next))
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        csrf,
        httponly=True,
        samesite="strict",
        path="/admin",
        secure=request.url.scheme == "https",
        max_age=3600,
    )
    return response


@router.post("/login", name="dashboard_login")
def login(
    request: Request,
    uow: Uow,
    settings: Settings,
    token: Annotated[str, Form(max_length=512)] = "",
    csrf_token: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=512)] = "/admin",
) -> Response:
    check_origin(request, settings)
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not csrf_matches(expected, csrf_token):
        raise CsrfRejected("the login form is stale: reload the page and retry")
    try:
        cookie, row = open_session(uow.session, token, ttl=timedelta(hours=settings.dashboard_session_hours))
    except (Unauthenticated, Forbidden) as exc:
        message = "that token is not valid" if isinstance(exc, Unauthenticated) else exc.message
        return render(
            "login.html",
            request=request,
            dashboard=None,
            login_csrf=expected,
            next=_safe_next(next),
            error=message,
            status_code=exc.status_code,
        )
    user = uow.session.get(User, row.user_id)
    if user is not None:
        set_actor(request, user_id=user.id, user_name=user.name, via="dashboard")
    redirect = RedirectResponse(_safe_next(next), status_code=303)
    redirect.set_cookie(
        SESSION_COOKIE,
        cookie,
        httponly=True,
        samesite="strict",
        path="/admin",
        secure=request.url.scheme == "https",
        max_age=settings.dashboard_session_hours * 3600,
    )
    redirect.delete_cookie(LOGIN_CSRF_COOKIE, path="/admin")
    return redirect


@router.post("/logout", name="dashboard_logout")
def logout(dashboard: Action) -> Response:
    close_session(dashboard)
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/admin")
    return response


# --- pages -------------------------------------------------------------------------------------------


@router.get("", name="dashboard_overview")
def overview(request: Request, dashboard: Dashboard, uow: Uow) -> Response:
    stats = fleet.overview(uow.session)
    live = sum(count for phase, count in stats.clusters_by_phase.items() if phase != "deleted")
    return render(
        "overview.html", request=request, dashboard=dashboard, stats=stats, phases=PHASES, live=live
    )


@router.get("/clusters", name="dashboard_clusters")
def cluster_list(
    request: Request,
    dashboard: Dashboard,
    uow: Uow,
    q: Annotated[str, Query(max_length=80)] = "",
    phase: Annotated[str, Query(max_length=16)] = "",
    region: Annotated[str, Query(max_length=63)] = "",
    project: Annotated[str, Query(max_length=63)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    result = fleet.search_clusters(
        uow.session,
        fleet.ClusterFilter(
            text=q or None, phase=phase or None, region=region or None, project=project or None, page=page
        ),
    )
    filters = {"q": q, "phase": phase, "region": region, "project": project}
    return render(
        "clusters.html",
        request=request,
        dashboard=dashboard,
        result=result,
        filters=filters,
        phases=PHASES,
        regions=[r.name for r in regions.list_regions(uow.session)],
        projects=list(uow.session.scalars(select(Project.name).order_by(Project.name))),
        page_link=lambda n: (
            "/admin/clusters?" + urlencode({**{k: v for k, v in filters.items() if v}, "page": n})
        ),
    )


def _cluster_audit(uow: Uow, cluster_id: str, name: str, project: str) -> list[AuditEvent]:
    """Audit events naming the cluster by id, or by name within its project."""
    return list(
        uow.session.scalars(
            select(AuditEvent)
            .where(
                or_(
                    AuditEvent.cluster_id == cluster_id,
                    and_(AuditEvent.cluster_id == name, AuditEvent.project_id == project),
                )
            )
            .order_by(AuditEvent.at.desc())
            .limit(50)
        )
    )


@router.get("/clusters/{cluster_id}", name="dashboard_cluster")
def cluster_page(
    request: Request,
    cluster_id: str,
    dashboard: Dashboard,
    uow: Uow,
    done: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    cluster = clusters.get_any_cluster(uow.session, cluster_id)
    nodes = clusters.list_nodes(uow.session, cluster)
    operations = operations_service.list_cluster_operations(uow.session, cluster, limit=50)
    # an unfinished operation is always the newest one (a new operation supersedes the unfinished)
    latest = operations[0] if operations else None
    window, next_window = maintenance_of(cluster)
    live = cluster.phase not in (ClusterPhase.DELETING.value, ClusterPhase.DELETED.value)
    agent = uow.session.get(ClusterAgent, cluster.id)
    events = sorted(
        (c for c in cluster.conditions or [] if c.get("last_transition_time")),
        key=lambda c: str(c.get("last_transition_time")),
        reverse=True,
    )
    return render(
        "cluster.html",
        request=request,
        dashboard=dashboard,
        cluster=cluster,
        nodes=nodes,
        operations=operations,
        agent=agent,
        events=events,
        audit=_cluster_audit(uow, cluster.id, cluster.name, cluster.project.name),
        latest_failed=bool(latest and latest.state == OperationState.FAILED.value),
        latest=latest,
        controls=operations_service.allowed_controls(latest) if latest else [],
        upgrade_targets=upgrade_targets(cluster) if live else [],
        strategy=UpgradeStrategy(),
        limits={"max_surge": MAX_SURGE_LIMIT, "max_unavailable": MAX_UNAVAILABLE_LIMIT},
        window=window,
        next_window=next_window,
        pending_upgrade=pending_upgrade(cluster),
        done=done,
    )


def _back_to(cluster_id: str, done: str) -> Response:
    return RedirectResponse(f"/admin/clusters/{cluster_id}?done={done}", status_code=303)


@router.post("/clusters/{cluster_id}/pause", name="dashboard_pause_cluster")
def pause(cluster_id: str, dashboard: Action, uow: Uow) -> Response:
    cluster = clusters.pause_cluster(clusters.get_any_cluster(uow.session, cluster_id))
    return _back_to(cluster.id, "paused")


@router.post("/clusters/{cluster_id}/resume", name="dashboard_resume_cluster")
def resume(cluster_id: str, dashboard: Action, uow: Uow) -> Response:
    cluster = clusters.resume_cluster(uow, clusters.get_any_cluster(uow.session, cluster_id))
    return _back_to(cluster.id, "resumed")


@router.post("/clusters/{cluster_id}/retry", name="dashboard_retry_cluster")
def retry(cluster_id: str, dashboard: Action, uow: Uow) -> Response:
    cluster = clusters.get_any_cluster(uow.session, cluster_id)
    clusters.retry_cluster(uow, cluster, requested_by=dashboard.principal.user.id)
    return _back_to(cluster.id, "retried")


@router.post("/clusters/{cluster_id}/delete", name="dashboard_delete_cluster")
def delete(
    cluster_id: str,
    dashboard: Action,
    uow: Uow,
    confirm_name: Annotated[str, Form(max_length=63)] = "",
    force: Annotated[bool, Form()] = False,
) -> Response:
    cluster = clusters.get_any_cluster(uow.session, cluster_id)
    if confirm_name != cluster.name:
        raise InvalidInput(f"type the cluster's name ({cluster.name}) to confirm its deletion")
    if force:
        clusters.force_delete_cluster(uow, cluster, requested_by=dashboard.principal.user.id)
    else:
        clusters.delete_cluster(uow, cluster, requested_by=dashboard.principal.user.id)
    return _back_to(cluster.id, "force-deleted" if force else "deleted")


@router.post("/clusters/{cluster_id}/upgrade", name="dashboard_upgrade_cluster")
def upgrade(
    request: Request,
    cluster_id: str,
    dashboard: Action,
    uow: Uow,
    kubernetes_version: Annotated[str, Form(max_length=32)] = "",
    max_surge: Annotated[int, Form()] = UpgradeStrategy.max_surge,
    max_unavailable: Annotated[int, Form()] = UpgradeStrategy.max_unavailable,
) -> Response:
    """The API's cluster upgrade (``PATCH .../clusters/{c}`` with ``kubernetes_version``): its pre-flight's
    refusals are the error page's message (422, or 409 naming the unfinished operation). The strategy's
    bounds are checked there too, so they are stated once."""
    cluster = clusters.get_any_cluster(uow.session, cluster_id)
    operation = upgrades.upgrade_cluster(
        uow,
        cluster,
        to_version=kubernetes_version.strip(),
        strategy=UpgradeStrategy(max_surge=max_surge, max_unavailable=max_unavailable),
        requested_by=dashboard.principal.user.id,
    )
    add_audit_detail(request, operation=operation.id)
    return _back_to(cluster.id, "upgrade-started")


# each control: the service that does it, and what the flash says once it is done
_CONTROLS: dict[operations_service.Control, tuple[Callable[[Uow, Principal, str], Operation], str]] = {
    "pause": (operations_service.pause_operation, "operation-paused"),
    "resume": (operations_service.resume_operation, "operation-resumed"),
    "rollback": (operations_service.rollback_operation, "rolling-back"),
    "cancel": (operations_service.cancel_operation, "cancel-requested"),
}


def _control(
    uow: Uow,
    dashboard: DashboardSession,
    *,
    cluster_id: str,
    operation_id: str,
    control: operations_service.Control,
) -> Response:
    """One of the operation controls of ``kaas_api.operations.service``, on an operation of this cluster; a
    state that does not allow it is the service's 409, shown on the error page."""
    cluster = clusters.get_any_cluster(uow.session, cluster_id)
    operation = operations_service.get_visible_operation(uow.session, dashboard.principal, operation_id)
    if operation.cluster_id != cluster.id:  # a form of another cluster's page: never act on the wrong one
        raise NotFound(f"cluster {cluster.name!r} has no operation {operation_id[:80]!r}")
    act, done = _CONTROLS[control]
    act(uow, dashboard.principal, operation.id)
    return _back_to(cluster.id, done)


@router.post("/clusters/{cluster_id}/operations/{operation_id}/pause", name="dashboard_pause_operation")
def pause_operation(cluster_id: str, operation_id: str, dashboard: Action, uow: Uow) -> Response:
    return _control(uow, dashboard, cluster_id=cluster_id, operation_id=operation_id, control="pause")


@router.post("/clusters/{cluster_id}/operations/{operation_id}/resume", name="dashboard_resume_operation")
def resume_operation(cluster_id: str, operation_id: str, dashboard: Action, uow: Uow) -> Response:
    return _control(uow, dashboard, cluster_id=cluster_id, operation_id=operation_id, control="resume")


@router.post("/clusters/{cluster_id}/operations/{operation_id}/rollback", name="dashboard_rollback_operation")
def rollback_operation(cluster_id: str, operation_id: str, dashboard: Action, uow: Uow) -> Response:
    return _control(uow, dashboard, cluster_id=cluster_id, operation_id=operation_id, control="rollback")


@router.post("/clusters/{cluster_id}/operations/{operation_id}/cancel", name="dashboard_cancel_operation")
def cancel_operation(cluster_id: str, operation_id: str, dashboard: Action, uow: Uow) -> Response:
    return _control(uow, dashboard, cluster_id=cluster_id, operation_id=operation_id, control="cancel")


@router.get("/regions", name="dashboard_regions")
def region_list(
    request: Request, dashboard: Dashboard, uow: Uow, done: Annotated[str, Query(max_length=63)] = ""
) -> Response:
    return render(
        "regions.html", request=request, dashboard=dashboard, regions=fleet.region_use(uow.session), done=done
    )


def _parse_flavors(text: str) -> list[dict[str, Any]]:
    """One flavor a line: ``name vcpus ram_mb``."""
    flavors = []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            raise InvalidInput(f"flavors, line {number}: write 'name vcpus ram_mb', e.g. 'm1.large 4 8192'")
        flavors.append({"name": parts[0], "vcpus": int(parts[1]), "ram_mb": int(parts[2])})
    return flavors


@router.post("/regions/{region}", name="dashboard_update_region")
def update_region(
    region: str,
    dashboard: Action,
    uow: Uow,
    kubernetes_versions: Annotated[str, Form(max_length=2000)] = "",
    default_kubernetes_version: Annotated[str, Form(max_length=32)] = "",
    flavors: Annotated[str, Form(max_length=20000)] = "",
) -> Response:
    row = regions.get_region(uow.session, region)
    versions = [v.strip() for v in kubernetes_versions.replace("\n", ",").split(",") if v.strip()]
    try:
        patch = RegionPatch(
            kubernetes_versions=versions,
            default_kubernetes_version=default_kubernetes_version.strip() or None,
            flavors=_parse_flavors(flavors),
        )
    except ValueError as exc:
        raise InvalidInput(f"region {region!r}: {exc}") from exc
    regions.update_region(uow.session, row, **region_fields(patch))
    return RedirectResponse(f"/admin/regions?done={row.name}", status_code=303)


@router.get("/projects", name="dashboard_projects")
def project_list(request: Request, dashboard: Dashboard, uow: Uow) -> Response:
    projects = list(uow.session.scalars(select(Project).order_by(Project.name)))
    members: dict[str, list[tuple[str, str]]] = {p.id: [] for p in projects}
    for member, name in uow.session.execute(
        select(ProjectMember, User.name).join(User, User.id == ProjectMember.user_id).order_by(User.name)
    ):
        members.setdefault(member.project_id, []).append((name, member.role))
    use = {u.project: u for u in fleet.overview(uow.session).quota_use}
    return render(
        "projects.html", request=request, dashboard=dashboard, projects=projects, members=members, use=use
    )


@router.get("/users", name="dashboard_users")
def user_list(
    request: Request,
    dashboard: Dashboard,
    uow: Uow,
    user: Annotated[str, Query(max_length=63)] = "",
    done: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    users = list(uow.session.scalars(select(User).order_by(User.name)))
    query = (
        select(ApiToken)
        .options(selectinload(ApiToken.user))
        .where(ApiToken.kind.in_([TokenKind.USER.value, TokenKind.KUBECONFIG.value]))
        .order_by(ApiToken.created_at.desc())
        .limit(500)
    )
    if user:
        query = query.join(User, User.id == ApiToken.user_id).where(User.name == user)
    tokens = list(uow.session.scalars(query))
    return render(
        "users.html",
        request=request,
        dashboard=dashboard,
        users=users,
        tokens=tokens,
        selected=user,
        done=done,
        current_token_id=dashboard.principal.token.id,
    )


@router.post("/tokens/{token_id}/revoke", name="dashboard_revoke_token")
def revoke(token_id: str, dashboard: Action, uow: Uow) -> Response:
    row = revoke_token(uow.session, dashboard.principal, token_id)
    return RedirectResponse(f"/admin/users?done={row.prefix}", status_code=303)


AUDIT_PAGE = 50


@router.get("/audit", name="dashboard_audit")
def audit_page(
    request: Request,
    dashboard: Dashboard,
    uow: Uow,
    user: Annotated[str, Query(max_length=63)] = "",
    project: Annotated[str, Query(max_length=63)] = "",
    cluster: Annotated[str, Query(max_length=63)] = "",
    action: Annotated[str, Query(max_length=128)] = "",
    since: Annotated[str, Query(max_length=32)] = "",
    until: Annotated[str, Query(max_length=32)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    def parse(value: str, field: str) -> datetime | None:
        if not value:
            return None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInput(f"{field}: write a date and time such as 2026-12-01T09:30") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    query = AuditQuery(
        user=user or None,
        project=project or None,
        cluster=cluster or None,
        action=action or None,
        since=parse(since, "since"),
        until=parse(until, "until"),
        limit=AUDIT_PAGE + 1,
        offset=(page - 1) * AUDIT_PAGE,
    )
    found = search(uow.session, query)
    filters = {
        "user": user,
        "project": project,
        "cluster": cluster,
        "action": action,
        "since": since,
        "until": until,
    }
    return render(
        "audit.html",
        request=request,
        dashboard=dashboard,
        events=found[:AUDIT_PAGE],
        has_next=len(found) > AUDIT_PAGE,
        page=page,
        filters=filters,
        page_link=lambda n: (
            "/admin/audit?" + urlencode({**{k: v for k, v in filters.items() if v}, "page": n})
        ),
        ceil=math.ceil,
    )
