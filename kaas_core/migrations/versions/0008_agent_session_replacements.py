"""cluster_agents: count agent sessions replaced by newer ones (logged, rate-limited, on the conditions)

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cluster_agents") as batch:
        batch.add_column(sa.Column("replacements", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_replaced_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("replacement_window_started_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(
            sa.Column("replacements_in_window", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("cluster_agents") as batch:
        batch.drop_column("replacements_in_window")
        batch.drop_column("replacement_window_started_at")
        batch.drop_column("last_replaced_at")
        batch.drop_column("replacements")
