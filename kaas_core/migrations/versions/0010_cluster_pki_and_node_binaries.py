"""cluster_authorities (a cluster's CAs and service-account key, several per kind), cluster_bootstrap_tokens,
cluster_addons, clusters.cloud_credential_*, regions.node_binaries / node_images / package_mirror_*

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cluster_authorities",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("cluster_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("public_pem", sa.Text(), nullable=False),
        sa.Column("key_encrypted", sa.Text(), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["clusters.id"],
            name=op.f("fk_cluster_authorities_cluster_id_clusters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cluster_authorities")),
    )
    op.create_index("ix_cluster_authorities_cluster_id_kind", "cluster_authorities", ["cluster_id", "kind"])
    op.create_table(
        "cluster_bootstrap_tokens",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("cluster_id", sa.String(length=36), nullable=False),
        sa.Column("token_id", sa.String(length=6), nullable=False),
        sa.Column("secret_encrypted", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["clusters.id"],
            name=op.f("fk_cluster_bootstrap_tokens_cluster_id_clusters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cluster_bootstrap_tokens")),
        sa.UniqueConstraint("cluster_id", "token_id", name="uq_cluster_bootstrap_tokens_token_id"),
    )
    op.create_index(
        op.f("ix_cluster_bootstrap_tokens_cluster_id"), "cluster_bootstrap_tokens", ["cluster_id"]
    )
    op.create_table(
        "cluster_addons",
        sa.Column("cluster_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["clusters.id"],
            name=op.f("fk_cluster_addons_cluster_id_clusters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("cluster_id", "name", name=op.f("pk_cluster_addons")),
    )
    with op.batch_alter_table("clusters") as batch:
        batch.add_column(sa.Column("cloud_credential_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("cloud_credential_secret_encrypted", sa.Text(), nullable=True))
    with op.batch_alter_table("regions") as batch:
        batch.add_column(sa.Column("node_binaries", sa.String(length=16), nullable=False, server_default="image"))
        batch.add_column(sa.Column("node_images", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch.add_column(sa.Column("package_mirror_url", sa.String(length=2048), nullable=True))
        batch.add_column(sa.Column("package_mirror_key", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("regions") as batch:
        batch.drop_column("package_mirror_key")
        batch.drop_column("package_mirror_url")
        batch.drop_column("node_images")
        batch.drop_column("node_binaries")
    with op.batch_alter_table("clusters") as batch:
        batch.drop_column("cloud_credential_secret_encrypted")
        batch.drop_column("cloud_credential_id")
    op.drop_table("cluster_addons")
    op.drop_index(op.f("ix_cluster_bootstrap_tokens_cluster_id"), table_name="cluster_bootstrap_tokens")
    op.drop_table("cluster_bootstrap_tokens")
    op.drop_index("ix_cluster_authorities_cluster_id_kind", table_name="cluster_authorities")
    op.drop_table("cluster_authorities")
