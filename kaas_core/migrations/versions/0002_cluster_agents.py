"""cluster_agents: the live state of each cluster's agent (written by the tunnel server)

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cluster_agents",
        sa.Column("cluster_id", sa.String(length=36), nullable=False),
        sa.Column("connected", sa.Boolean(), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=True),
        sa.Column("tunnel_address", sa.String(length=255), nullable=True),
        sa.Column("connected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disconnected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("kubernetes_version", sa.String(length=64), nullable=True),
        sa.Column("nodes_ready", sa.Integer(), nullable=True),
        sa.Column("nodes_total", sa.Integer(), nullable=True),
        sa.Column("nodes", sa.JSON(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["cluster_id"], ["clusters.id"], name=op.f("fk_cluster_agents_cluster_id_clusters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("cluster_id", name=op.f("pk_cluster_agents")),
    )


def downgrade() -> None:
    op.drop_table("cluster_agents")
