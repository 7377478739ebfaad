"""Emulation (issue 3): operation modes and settings, link scores and jitter, facts, relationships, and
content created through the API.

Revision ID: 0002_emulation
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002_emulation"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.add_column(sa.Column("autonomous", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch.add_column(sa.Column("obfuscator", sa.String(32), nullable=False, server_default="plain-text"))
        batch.add_column(sa.Column("visibility", sa.Integer(), nullable=False, server_default="50"))
        batch.add_column(sa.Column("max_safety", sa.String(16), nullable=False, server_default="safe"))
        batch.add_column(sa.Column("source_id", sa.String(128), nullable=False, server_default=""))
        batch.add_column(sa.Column("cleanup_deadline", sa.Double(), nullable=True))
        batch.add_column(sa.Column("adversary", JSON, nullable=True))
        batch.add_column(sa.Column("settings", JSON, nullable=True))
    with op.batch_alter_table("links") as batch:
        batch.add_column(sa.Column("plaintext_command", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("score", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("visibility", sa.Integer(), nullable=False, server_default="50"))
        batch.add_column(sa.Column("jitter", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("available_at", sa.Double(), nullable=True))
    op.create_table(
        "facts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "operation_id", sa.String(64), sa.ForeignKey("operations.id", ondelete="CASCADE"), nullable=True
        ),
        sa.Column("trait", sa.String(255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("origin_type", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("links", JSON, nullable=False),
        sa.Column("collected_by", JSON, nullable=False),
        sa.Column("technique_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
    )
    op.create_index("ix_facts_operation_id", "facts", ["operation_id"])
    op.create_index("ix_facts_trait", "facts", ["trait"])
    op.create_table(
        "relationships",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "operation_id", sa.String(64), sa.ForeignKey("operations.id", ondelete="CASCADE"), nullable=True
        ),
        sa.Column("source_trait", sa.String(255), nullable=False),
        sa.Column("source_value", sa.Text(), nullable=False),
        sa.Column("edge", sa.String(255), nullable=True),
        sa.Column("target_trait", sa.String(255), nullable=True),
        sa.Column("target_value", sa.Text(), nullable=True),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("origin", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
    )
    op.create_index("ix_relationships_operation_id", "relationships", ["operation_id"])
    op.create_table(
        "content",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("data", JSON, nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
    )


def downgrade() -> None:
    for table in ("content", "relationships", "facts"):
        op.drop_table(table)
    with op.batch_alter_table("links") as batch:
        for column in ("available_at", "jitter", "visibility", "score", "plaintext_command"):
            batch.drop_column(column)
    with op.batch_alter_table("operations") as batch:
        columns = ("settings", "adversary", "cleanup_deadline", "source_id", "max_safety", "visibility")
        for column in (*columns, "obfuscator", "autonomous"):
            batch.drop_column(column)
