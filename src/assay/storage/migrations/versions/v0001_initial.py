"""Initial schema: credentials, agents, operations, links, results, events, alerts.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "credentials",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("digest", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
    )
    op.create_table(
        "agents",
        sa.Column("paw", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("executors", JSON, nullable=False),
        sa.Column("privilege", sa.String(16), nullable=False),
        sa.Column("group_name", sa.String(64), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("architecture", sa.String(64), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("ppid", sa.Integer(), nullable=True),
        sa.Column("server", sa.String(255), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("exe_name", sa.String(255), nullable=False),
        sa.Column("contact", sa.String(32), nullable=False),
        sa.Column("trusted", sa.Boolean(), nullable=False),
        sa.Column("key_digest", sa.String(128), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("last_seen", sa.Double(), nullable=False),
    )
    op.create_table(
        "operations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("adversary_id", sa.String(128), nullable=False),
        sa.Column("planner_id", sa.String(64), nullable=False),
        sa.Column("group_name", sa.String(64), nullable=False),
        sa.Column("auto_close", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("close_requested", sa.Boolean(), nullable=False),
        sa.Column("facts", JSON, nullable=False),
        sa.Column("agents", JSON, nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("finished_at", sa.Double(), nullable=True),
    )
    op.create_index("ix_operations_state", "operations", ["state"])
    op.create_table(
        "links",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "operation_id", sa.String(64), sa.ForeignKey("operations.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("paw", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("ability_id", sa.String(128), nullable=False),
        sa.Column("ability_name", sa.String(255), nullable=False),
        sa.Column("technique_id", sa.String(32), nullable=False),
        sa.Column("technique_name", sa.String(255), nullable=False),
        sa.Column("tactic", sa.String(64), nullable=False),
        sa.Column("executor", sa.String(32), nullable=False),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("cleanup", sa.Boolean(), nullable=False),
        sa.Column("cleanup_of", sa.String(64), nullable=True),
        sa.Column("timeout", sa.Integer(), nullable=False),
        sa.Column("planned_at", sa.Double(), nullable=False),
        sa.Column("delegated_at", sa.Double(), nullable=True),
        sa.Column("started_at", sa.Double(), nullable=True),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("stdout", sa.Text(), nullable=False),
        sa.Column("stderr", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("start_ticks", sa.BigInteger(), nullable=True),
        sa.Column("skip_reason", sa.Text(), nullable=True),
        sa.Column("skip_reason_id", sa.Integer(), nullable=True),
        sa.Column("facts", JSON, nullable=False),
    )
    op.create_index("ix_links_operation_seq", "links", ["operation_id", "seq"])
    op.create_index("ix_links_paw", "links", ["paw"])
    op.create_table(
        "results",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("link_id", sa.String(64), nullable=False),
        sa.Column("paw", sa.String(64), nullable=False),
        sa.Column("received_at", sa.Double(), nullable=False),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("data", JSON, nullable=False),
    )
    op.create_index("ix_results_link_id", "results", ["link_id"])
    op.create_table(
        "events",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("timestamp", sa.Double(), nullable=False),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("entity_id", sa.String(64), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("data", JSON, nullable=False),
    )
    for column in ("timestamp", "host", "action", "entity_id", "pid"):
        op.create_index(f"ix_events_{column}", "events", [column])
    op.create_table(
        "alerts",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.String(64), nullable=False, unique=True),
        sa.Column("timestamp", sa.Double(), nullable=False),
        sa.Column("rule_id", sa.String(128), nullable=False),
        sa.Column("entity_id", sa.String(64), nullable=True),
        sa.Column("suppressed", sa.Boolean(), nullable=False),
        sa.Column("data", JSON, nullable=False),
    )
    for column in ("timestamp", "rule_id", "entity_id", "suppressed"):
        op.create_index(f"ix_alerts_{column}", "alerts", [column])


def downgrade() -> None:
    for table in ("alerts", "events", "results", "links", "operations", "agents", "credentials"):
        op.drop_table(table)
