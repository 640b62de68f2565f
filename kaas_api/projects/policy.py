"""Who may create projects: the operator's choice, as a value the settings hold and the service applies.

Owned by ``kaas_api.projects``. Pure (no database): ``kaas_api.config.ApiSettings`` builds a
``CreationPolicy`` from ``KAAS_PROJECT_CREATION`` and ``KAAS_MAX_PROJECTS_PER_USER``; the project service
(``kaas_api.projects.service.create_project``) applies it. A project's quota bounds what its clusters may
take, so a user free to create projects could multiply that quota at will: the limit is what stops it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ProjectCreation(enum.StrEnum):
    """Who may create projects. Global admins always may, whatever the choice."""

    ANYONE = "anyone"  # every user, without a limit
    ADMINS = "admins"  # global admins only: they create projects and add the users
    LIMITED = "limited"  # every user, up to ``max_per_user`` projects they created that still exist


@dataclass(frozen=True)
class CreationPolicy:
    who: ProjectCreation = ProjectCreation.LIMITED
    max_per_user: int = 3  # used only by ``LIMITED``
