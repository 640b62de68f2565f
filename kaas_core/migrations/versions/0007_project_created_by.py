"""projects.created_by: who created a project, so the per-user creation limit can count it

Existing projects are attributed to their earliest owner (the creator, unless ownership moved since).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("created_by", sa.String(length=36), nullable=True))
        batch.create_index(batch.f("ix_projects_created_by"), ["created_by"], unique=False)
        batch.create_foreign_key(
            batch.f("fk_projects_created_by_users"), "users", ["created_by"], ["id"], ondelete="SET NULL"
        )
    op.execute(
        """
        UPDATE projects SET created_by = (
            SELECT m.user_id FROM project_members m
            WHERE m.project_id = projects.id AND m.role = 'owner'
            ORDER BY m.created_at, m.user_id
            LIMIT 1
        )
        """
    )


def downgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.drop_constraint(batch.f("fk_projects_created_by_users"), type_="foreignkey")
        batch.drop_index(batch.f("ix_projects_created_by"))
        batch.drop_column("created_by")
