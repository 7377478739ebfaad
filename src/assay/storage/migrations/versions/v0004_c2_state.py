"""C2 state that lived only in memory: agent tasks outside operations (deadman) and server-wide settings.

Revision ID: 0004_c2_state
Revises: 0003_c2
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004_c2_state"
down_revision = "0003_c2"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "agent_tasks",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("paw", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ability_id", sa.String(128), nullable=False),
        sa.Column("instruction", JSON, nullable=False),
        sa.Column("queued_at", sa.Double(), nullable=False),
        sa.Column("delivered_at", sa.Double(), nullable=True),
        sa.Column("finished_at", sa.Double(), nullable=True),
    )
    op.create_index("ix_agent_tasks_paw", "agent_tasks", ["paw"])
    op.create_index("ix_agent_tasks_finished_at", "agent_tasks", ["finished_at"])
    op.create_table(
        "server_settings",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", JSON, nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("server_settings")
    op.drop_table("agent_tasks")
