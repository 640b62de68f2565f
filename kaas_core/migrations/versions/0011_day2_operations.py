"""Day 2: upgrades, drains, self-healing, autoscaling and maintenance windows (issue 12).

operations.params / nodes / paused_reason / cancel_requested / rolling_back; node_pools.kubernetes_version /
min_count / max_count / nodes_to_remove; nodes.kubernetes_version / not_ready_since / draining_since /
empty_since; clusters.maintenance_window; regions.automatic_upgrades. Expand only: every column is new and
nullable or defaulted, so the previous release runs on this schema unchanged.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.add_column(sa.Column("params", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch.add_column(sa.Column("nodes", sa.JSON(), nullable=False, server_default=sa.text("'[]'")))
        batch.add_column(sa.Column("paused_reason", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.text("false"))
        )
        batch.add_column(
            sa.Column("rolling_back", sa.Boolean(), nullable=False, server_default=sa.text("false"))
        )
    with op.batch_alter_table("node_pools") as batch:
        batch.add_column(sa.Column("kubernetes_version", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("min_count", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_count", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("nodes_to_remove", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("kubernetes_version", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("not_ready_since", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("draining_since", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("empty_since", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("clusters") as batch:
        batch.add_column(sa.Column("maintenance_window", sa.JSON(), nullable=True))
    with op.batch_alter_table("regions") as batch:
        batch.add_column(
            sa.Column("automatic_upgrades", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )


def downgrade() -> None:
    with op.batch_alter_table("regions") as batch:
        batch.drop_column("automatic_upgrades")
    with op.batch_alter_table("clusters") as batch:
        batch.drop_column("maintenance_window")
    with op.batch_alter_table("nodes") as batch:
        for column in ("empty_since", "draining_since", "not_ready_since", "kubernetes_version"):
            batch.drop_column(column)
    with op.batch_alter_table("node_pools") as batch:
        for column in ("nodes_to_remove", "max_count", "min_count", "kubernetes_version"):
            batch.drop_column(column)
    with op.batch_alter_table("operations") as batch:
        for column in ("rolling_back", "cancel_requested", "paused_reason", "nodes", "params"):
            batch.drop_column(column)
