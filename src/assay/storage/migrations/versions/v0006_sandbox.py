"""The sandbox an agent runs in (``agents.sandbox``: its ``ASSAY_SANDBOX`` id, NULL on the bare host).

Revision ID: 0006_sandbox
Revises: 0005_kill_delivered
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_sandbox"
down_revision = "0005_kill_delivered"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("agents", sa.Column("sandbox", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("agents", "sandbox")
