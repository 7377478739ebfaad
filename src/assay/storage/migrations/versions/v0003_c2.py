"""C2: agent settings (sleep, watchdog, pending kill, Caldera profile extras) and the audit trail.

Revision ID: 0003_c2
Revises: 0002_emulation
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003_c2"
down_revision = "0002_emulation"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "agent_settings",
        sa.Column("paw", sa.String(64), primary_key=True),
        sa.Column("sleep_min", sa.Integer(), nullable=False),
        sa.Column("sleep_max", sa.Integer(), nullable=False),
        sa.Column("watchdog", sa.Integer(), nullable=False),
        sa.Column("pending_kill", sa.Boolean(), nullable=False),
        sa.Column("profile", JSON, nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
    )
    op.create_table(
        "audit",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("principal", sa.String(128), nullable=True),
        sa.Column("operation_id", sa.String(64), nullable=True),
        sa.Column("link_id", sa.String(64), nullable=True),
        sa.Column("paw", sa.String(64), nullable=True),
        sa.Column("data", JSON, nullable=False),
    )
    for column in ("at", "kind", "operation_id", "link_id", "paw"):
        op.create_index(f"ix_audit_{column}", "audit", [column])


def downgrade() -> None:
    op.drop_table("audit")
    op.drop_table("agent_settings")
