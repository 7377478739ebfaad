"""Validation rounds: every `assay demo` / `assay validate` run stored with its rule set's and content's
hashes, its summary and full report; every alert stored with the link(s) it belongs to (so a round can be
re-scored from storage); operations and agents say whether they run in the sandbox.

Revision ID: 0006_rounds
Revises: 0005_kill_delivered
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006_rounds"
down_revision = "0005_kill_delivered"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "rounds",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("operation_id", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=False, server_default=""),
        sa.Column("adversary_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("sandbox", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("rules_hash", sa.String(64), nullable=False, server_default=""),
        sa.Column("content_hash", sa.String(64), nullable=False, server_default=""),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("rescored_from", sa.String(64), nullable=True),
        sa.Column("summary", JSON, nullable=False),
        sa.Column("report", JSON, nullable=False),
    )
    op.create_index("ix_rounds_operation_id", "rounds", ["operation_id"])
    op.create_index("ix_rounds_started_at", "rounds", ["started_at"])
    op.create_table(
        "alert_links",
        sa.Column("alert_id", sa.String(64), primary_key=True),
        sa.Column("link_id", sa.String(64), primary_key=True),
        sa.Column("operation_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_alert_links_operation_id", "alert_links", ["operation_id"])
    with op.batch_alter_table("operations") as batch:
        batch.add_column(sa.Column("sandbox", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("sandbox", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("sandbox")
    with op.batch_alter_table("operations") as batch:
        batch.drop_column("sandbox")
    op.drop_table("alert_links")
    op.drop_table("rounds")
