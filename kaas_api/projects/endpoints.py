"""HTTP endpoints of ``/v1/projects``: projects, members and quotas. The path takes the project name."""

from __future__ import annotations

from fastapi import APIRouter, status

from kaas_api.auth.service import authorize_project
from kaas_api.clusters.quota import project_usage
from kaas_api.deps import CurrentUser, Settings, Uow
from kaas_api.projects import service
from kaas_api.projects.schemas import MemberOut, MemberPut, ProjectCreate, ProjectOut, QuotaOut, QuotaUsage
from kaas_api.projects.schemas import Quota as QuotaBody
from kaas_core.db.models import Project, ProjectMember, Quota, Role

router = APIRouter(prefix="/v1/projects", tags=["projects"])


def project_out(project: Project, role: Role | None) -> ProjectOut:
    return ProjectOut(
        id=project.id,
        name=project.name,
        description=project.description,
        created_at=project.created_at,
        role=role,
    )


def member_out(member: ProjectMember, user_name: str) -> MemberOut:
    return MemberOut(user=user_name, role=Role(member.role), created_at=member.created_at)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ProjectOut)
def create_project(body: ProjectCreate, principal: CurrentUser, uow: Uow, settings: Settings) -> ProjectOut:
    """Create a project; you become its owner.

    Who may is the operator's choice (``KAAS_PROJECT_CREATION``: anyone, admins only, or up to
    ``KAAS_MAX_PROJECTS_PER_USER`` per user; admins always may): 403 or 409 ``quota_exceeded`` otherwise.
    A taken name answers 409: ``conflict`` to its members and admins, ``name_unavailable`` to others.
    """
    project = service.create_project(
        uow.session,
        name=body.name,
        description=body.description,
        owner=principal.user_row(uow.session),
        policy=settings.project_creation_policy,
    )
    return project_out(project, Role.OWNER)


@router.get("", response_model=list[ProjectOut])
def list_projects(principal: CurrentUser, uow: Uow) -> list[ProjectOut]:
    return [project_out(p, role) for p, role in service.visible_projects(uow.session, principal)]


@router.get("/{project}", response_model=ProjectOut)
def get_project(project: str, principal: CurrentUser, uow: Uow) -> ProjectOut:
    access = authorize_project(uow.session, principal, project, need=Role.VIEWER)
    return project_out(access.project, access.role)


@router.delete("/{project}", status_code=status.HTTP_204_NO_CONTENT)
def delete_project(project: str, principal: CurrentUser, uow: Uow) -> None:
    """Delete a project without clusters (owners and admins)."""
    access = authorize_project(uow.session, principal, project, need=Role.OWNER)
    service.delete_project(uow.session, access.project)


@router.get("/{project}/members", response_model=list[MemberOut])
def list_members(project: str, principal: CurrentUser, uow: Uow) -> list[MemberOut]:
    access = authorize_project(uow.session, principal, project, need=Role.VIEWER)
    return [member_out(m, name) for m, name in service.list_members(uow.session, access.project)]


@router.get("/{project}/members/{user}", response_model=MemberOut)
def get_member(project: str, user: str, principal: CurrentUser, uow: Uow) -> MemberOut:
    access = authorize_project(uow.session, principal, project, need=Role.VIEWER)
    return member_out(service.get_member(uow.session, access.project, user), user)


@router.put("/{project}/members/{user}", response_model=MemberOut)
def put_member(project: str, user: str, body: MemberPut, principal: CurrentUser, uow: Uow) -> MemberOut:
    """Add a user to the project or change their role (owners and admins)."""
    access = authorize_project(uow.session, principal, project, need=Role.OWNER)
    return member_out(service.set_member(uow.session, access.project, user, body.role), user)


@router.delete("/{project}/members/{user}", status_code=status.HTTP_204_NO_CONTENT)
def delete_member(project: str, user: str, principal: CurrentUser, uow: Uow) -> None:
    access = authorize_project(uow.session, principal, project, need=Role.OWNER)
    service.remove_member(uow.session, access.project, user)


def quota_out(quota: Quota, usage: QuotaUsage) -> QuotaOut:
    return QuotaOut(
        quota=QuotaBody(
            max_clusters=quota.max_clusters,
            max_nodes=quota.max_nodes,
            max_vcpus=quota.max_vcpus,
            max_ram_mb=quota.max_ram_mb,
        ),
        usage=usage,
    )


def _usage(uow: Uow, project: Project) -> QuotaUsage:
    used = project_usage(uow.session, project.id)
    return QuotaUsage(clusters=used.clusters, nodes=used.nodes, vcpus=used.vcpus, ram_mb=used.ram_mb)


@router.get("/{project}/quota", response_model=QuotaOut)
def get_quota(project: str, principal: CurrentUser, uow: Uow) -> QuotaOut:
    access = authorize_project(uow.session, principal, project, need=Role.VIEWER)
    return quota_out(service.get_quota(uow.session, access.project), _usage(uow, access.project))


@router.put("/{project}/quota", response_model=QuotaOut)
def put_quota(project: str, body: QuotaBody, principal: CurrentUser, uow: Uow) -> QuotaOut:
    """Replace the project's limits (admins only); null means unlimited."""
    access = authorize_project(uow.session, principal, project, need=Role.VIEWER)
    quota = service.set_quota(
        uow.session,
        principal,
        access.project,
        max_clusters=body.max_clusters,
        max_nodes=body.max_nodes,
        max_vcpus=body.max_vcpus,
        max_ram_mb=body.max_ram_mb,
    )
    return quota_out(quota, _usage(uow, access.project))
