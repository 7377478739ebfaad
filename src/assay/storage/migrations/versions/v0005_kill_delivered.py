"""Whether a kill reached its agent, on the agent's settings row (it lived only in memory, so a killed agent
showed ``pending kill`` forever after a restart).

Revision ID: 0005_kill_delivered
Revises: 0004_c2_state
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_kill_delivered"
down_revision = "0004_c2_state"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "agent_settings",
        sa.Column("kill_delivered", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("agent_settings", "kill_delivered")
