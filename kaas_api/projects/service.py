"""Projects, their members and quotas: create, list, delete, manage roles, read and set limits.

Called by ``kaas_api.projects.endpoints`` and by the CLI. Flushes only; the caller commits.
Quota usage counting lives in ``kaas_api.clusters.quota`` (it needs cluster sizes).
"""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kaas_api.auth.service import Principal
from kaas_api.errors import Conflict, Forbidden, InvalidInput, NotFound, QuotaExceeded
from kaas_api.projects.policy import CreationPolicy, ProjectCreation
from kaas_api.validation import check_dns_label, is_dns_label
from kaas_core.db.models import Cluster, Project, ProjectMember, Quota, Role, User


class NameUnavailable(Conflict):
    """A project name that cannot be had; says no more than that (see ``create_project``)."""

    error = "name_unavailable"


def create_project(
    session: Session, *, name: str, description: str = "", owner: User, policy: CreationPolicy
) -> Project:
    """Create a project with the default quota; ``owner`` (the caller) becomes its owner.

    ``policy`` says who may create projects (``KAAS_PROJECT_CREATION``); it is applied before the name is
    looked at, so a caller who may not create projects learns nothing about which names exist.

    What a taken name tells a caller: names are globally unique, because they are the projects' address
    (``/v1/projects/{name}``), so creating a taken name must fail, and that failure alone tells the caller
    the name is in use. That one bit cannot be hidden without per-owner namespaces. Everything beyond it
    is: an admin or a member of the existing project is told it exists (they can see it anyway); anyone
    else gets ``name_unavailable``, "not available: choose another", and nothing about the project (not
    that it is a project they cannot see, its id, owners or clusters), the same answer whichever way the
    name was taken, even by a concurrent create. Probing names this way is visible in the audit log
    (refused ``create_project`` events), and reading any project's routes still answers 404 to outsiders.
    """
    try:
        check_dns_label(name)
    except ValueError as exc:
        raise InvalidInput(f"project name: {exc}", field="name") from None
    _check_may_create(session, owner, policy)
    existing = session.scalar(select(Project).where(Project.name == name))
    if existing is not None:
        raise _name_taken(session, name, owner, existing)
    project = Project(name=name, description=description, created_by=owner.id)
    session.add(project)
    try:
        session.flush()
    except IntegrityError:
        # a concurrent create took the name between our look-up and our insert
        raise _name_taken(session, name, owner, None) from None
    session.add(ProjectMember(project_id=project.id, user_id=owner.id, role=Role.OWNER.value))
    session.add(Quota(project_id=project.id))
    session.flush()
    return project


def _check_may_create(session: Session, user: User, policy: CreationPolicy) -> None:
    """Apply ``policy`` to ``user`` (global admins always may)."""
    if user.is_admin or policy.who == ProjectCreation.ANYONE:
        return
    if policy.who == ProjectCreation.ADMINS:
        raise Forbidden("only global admins may create projects here: ask one to create it and add you")
    # The user's row lock serialises two concurrent creates of the same user, which would otherwise both
    # count one place left (PostgreSQL; SQLite serialises writers by itself).
    session.execute(select(User.id).where(User.id == user.id).with_for_update())
    created = (
        session.scalar(select(func.count()).select_from(Project).where(Project.created_by == user.id)) or 0
    )
    if created >= policy.max_per_user:
        raise QuotaExceeded(
            f"you have created {created} project(s), the most allowed per user here "
            f"({policy.max_per_user}): delete one, or ask an admin",
            detail={"projects_created": created, "max_projects_per_user": policy.max_per_user},
        )


def _name_taken(session: Session, name: str, caller: User, existing: Project | None) -> Conflict:
    """The refusal of a taken name: plain to those who may see the project, minimal to everyone else."""
    if existing is not None and (
        caller.is_admin or session.get(ProjectMember, (existing.id, caller.id)) is not None
    ):
        return Conflict(f"project {name!r} already exists")
    return NameUnavailable(f"the project name {name!r} is not available: choose another")


def visible_projects(session: Session, principal: Principal) -> list[tuple[Project, Role | None]]:
    """Every project for an admin; the projects the caller is a member of otherwise."""
    rows = session.execute(
        select(ProjectMember.project_id, ProjectMember.role).where(ProjectMember.user_id == principal.user.id)
    )
    roles: dict[str, str] = dict(rows.all())
    query = select(Project).order_by(Project.name)
    if not principal.is_admin:
        query = query.where(Project.id.in_(roles))
    return [(p, Role(roles[p.id]) if p.id in roles else None) for p in session.scalars(query)]


def delete_project(session: Session, project: Project) -> None:
    """Delete a project that has no live clusters; records of deleted clusters go with it."""
    live = session.scalar(
        select(func.count())
        .select_from(Cluster)
        .where(Cluster.project_id == project.id, Cluster.deleted_at.is_(None))
    )
    if live:
        raise Conflict(
            f"project {project.name!r} still has {live} cluster(s): delete them first",
            detail={"clusters": live},
        )
    session.execute(delete(Cluster).where(Cluster.project_id == project.id))
    session.delete(project)
    session.flush()


def list_members(session: Session, project: Project) -> list[tuple[ProjectMember, str]]:
    return [
        (member, name)
        for member, name in session.execute(
            select(ProjectMember, User.name)
            .join(User, User.id == ProjectMember.user_id)
            .where(ProjectMember.project_id == project.id)
            .order_by(User.name)
        )
    ]


def _user_by_name(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name)) if is_dns_label(name) else None
    if user is None:
        raise NotFound(f"user {name[:80]!r} not found")
    return user


def _owner_count(session: Session, project: Project) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(ProjectMember)
            .where(ProjectMember.project_id == project.id, ProjectMember.role == Role.OWNER.value)
        )
        or 0
    )


def get_member(session: Session, project: Project, user_name: str) -> ProjectMember:
    user = _user_by_name(session, user_name)
    member = session.get(ProjectMember, (project.id, user.id))
    if member is None:
        raise NotFound(f"user {user_name!r} is not a member of project {project.name!r}")
    return member


def set_member(session: Session, project: Project, user_name: str, role: Role) -> ProjectMember:
    """Add a user to the project or change their role. The last owner cannot be demoted."""
    user = _user_by_name(session, user_name)
    member = session.get(ProjectMember, (project.id, user.id))
    if member is None:
        member = ProjectMember(project_id=project.id, user_id=user.id, role=role.value)
        session.add(member)
    else:
        if member.role == Role.OWNER.value and role != Role.OWNER and _owner_count(session, project) <= 1:
            raise Conflict(
                f"{user_name!r} is the last owner of project {project.name!r}: add another owner first"
            )
        member.role = role.value
    session.flush()
    return member


def remove_member(session: Session, project: Project, user_name: str) -> None:
    member = get_member(session, project, user_name)
    if member.role == Role.OWNER.value and _owner_count(session, project) <= 1:
        raise Conflict(
            f"{user_name!r} is the last owner of project {project.name!r}: add another owner first"
        )
    session.delete(member)
    session.flush()


def get_quota(session: Session, project: Project) -> Quota:
    quota = session.get(Quota, project.id)
    if quota is None:
        quota = Quota(project_id=project.id)
        session.add(quota)
        session.flush()
    return quota


def set_quota(
    session: Session,
    principal: Principal,
    project: Project,
    *,
    max_clusters: int | None,
    max_nodes: int | None,
    max_vcpus: int | None,
    max_ram_mb: int | None,
) -> Quota:
    """Replace a project's limits (admins only)."""
    if not principal.is_admin:
        raise Forbidden("only admins may change quotas")
    quota = get_quota(session, project)
    quota.max_clusters = max_clusters
    quota.max_nodes = max_nodes
    quota.max_vcpus = max_vcpus
    quota.max_ram_mb = max_ram_mb
    session.flush()
    return quota
