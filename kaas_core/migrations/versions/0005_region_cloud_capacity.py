"""regions.cloud_capacity and regions.cloud_capacity_at: the cloud's compute limits and use, as observed

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("regions") as batch:
        batch.add_column(sa.Column("cloud_capacity", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("cloud_capacity_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("regions") as batch:
        batch.drop_column("cloud_capacity_at")
        batch.drop_column("cloud_capacity")
