"""clusters: next_reconcile_at (when a pass must have started; the due-scan's index) and reconcile_ticket

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clusters") as batch:
        batch.add_column(sa.Column("next_reconcile_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("reconcile_ticket", sa.Integer(), nullable=False, server_default="0"))
        batch.create_index(
            "ix_clusters_region_id_next_reconcile_at", ["region_id", "next_reconcile_at"], unique=False
        )
    # Every live cluster is due once after the upgrade: the due-scan takes over from the old sweep, and the
    # next pass sets each cluster's own due time.
    op.execute(sa.text("UPDATE clusters SET next_reconcile_at = CURRENT_TIMESTAMP WHERE phase <> 'deleted'"))


def downgrade() -> None:
    with op.batch_alter_table("clusters") as batch:
        batch.drop_index("ix_clusters_region_id_next_reconcile_at")
        batch.drop_column("reconcile_ticket")
        batch.drop_column("next_reconcile_at")
