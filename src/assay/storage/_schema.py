"""Tables. Times are epoch seconds in double precision, the same clock as ``Event.timestamp``.

The schema is owned by Alembic migrations (``migrations/versions``); these models must match them, which
``tests/test_storage.py`` checks by comparing the migrated database with this metadata.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Double, ForeignKey, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# JSONB on PostgreSQL (indexable, compact); plain JSON text elsewhere.
JsonType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity for telemetry volume.
RowId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class CredentialRow(Base):
    """Hashes of the admin API key and the enrolment token (never the secrets themselves)."""

    __tablename__ = "credentials"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    digest: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[float] = mapped_column(Double)


class AgentRow(Base):
    __tablename__ = "agents"
    paw: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), default="")
    platform: Mapped[str] = mapped_column(String(32), default="linux")
    executors: Mapped[list[str]] = mapped_column(JsonType)
    privilege: Mapped[str] = mapped_column(String(16), default="User")
    group: Mapped[str] = mapped_column("group_name", String(64), default="red")
    username: Mapped[str] = mapped_column(String(255), default="")
    architecture: Mapped[str] = mapped_column(String(64), default="")
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ppid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    server: Mapped[str] = mapped_column(String(255), default="")
    location: Mapped[str] = mapped_column(Text, default="")
    exe_name: Mapped[str] = mapped_column(String(255), default="")
    contact: Mapped[str] = mapped_column(String(32), default="native")
    trusted: Mapped[bool] = mapped_column(Boolean, default=True)
    key_digest: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[float] = mapped_column(Double)
    last_seen: Mapped[float] = mapped_column(Double)
    # 0006_rounds: the id of the sandbox the agent runs in (from its profile), None on the host.
    sandbox: Mapped[str | None] = mapped_column(String(64), nullable=True)


class OperationRow(Base):
    __tablename__ = "operations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    adversary_id: Mapped[str] = mapped_column(String(128))
    planner_id: Mapped[str] = mapped_column(String(64))
    group: Mapped[str] = mapped_column("group_name", String(64), default="")
    auto_close: Mapped[bool] = mapped_column(Boolean, default=True)
    state: Mapped[str] = mapped_column(String(32), index=True)
    close_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    facts: Mapped[dict[str, Any]] = mapped_column(JsonType)
    agents: Mapped[list[str]] = mapped_column(JsonType)  # paws taking part
    created_at: Mapped[float] = mapped_column(Double)
    finished_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    # Issue 3 (migration 0002_emulation): modes, the adversary as it was at start, and the rest of the
    # operation's settings (jitter, rules, adjustments, planner state) as JSON.
    autonomous: Mapped[bool] = mapped_column(Boolean, default=True)
    obfuscator: Mapped[str] = mapped_column(String(32), default="plain-text")
    visibility: Mapped[int] = mapped_column(Integer, default=50)
    max_safety: Mapped[str] = mapped_column(String(16), default="safe")
    source_id: Mapped[str] = mapped_column(String(128), default="")
    cleanup_deadline: Mapped[float | None] = mapped_column(Double, nullable=True)
    adversary: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)
    settings: Mapped[dict[str, Any] | None] = mapped_column(JsonType, nullable=True)
    # 0006_rounds: a sandboxed operation runs only on sandboxed agents, and may run what the host may not.
    sandbox: Mapped[bool] = mapped_column(Boolean, default=False)


class LinkRow(Base):
    __tablename__ = "links"
    __table_args__ = (Index("ix_links_operation_seq", "operation_id", "seq"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    operation_id: Mapped[str] = mapped_column(ForeignKey("operations.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    paw: Mapped[str] = mapped_column(String(64), index=True)
    host: Mapped[str] = mapped_column(String(255), default="")
    ability_id: Mapped[str] = mapped_column(String(128))
    ability_name: Mapped[str] = mapped_column(String(255), default="")
    technique_id: Mapped[str] = mapped_column(String(32), default="")
    technique_name: Mapped[str] = mapped_column(String(255), default="")
    tactic: Mapped[str] = mapped_column(String(64), default="")
    executor: Mapped[str] = mapped_column(String(32), default="")
    command: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[int] = mapped_column(Integer)
    cleanup: Mapped[bool] = mapped_column(Boolean, default=False)
    cleanup_of: Mapped[str | None] = mapped_column(String(64), nullable=True)
    timeout: Mapped[int] = mapped_column(Integer, default=60)
    planned_at: Mapped[float] = mapped_column(Double)
    delegated_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    stdout: Mapped[str] = mapped_column(Text, default="")
    stderr: Mapped[str] = mapped_column(Text, default="")
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    start_ticks: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    skip_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    skip_reason_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    facts: Mapped[dict[str, Any]] = mapped_column(JsonType)
    plaintext_command: Mapped[str] = mapped_column(Text, default="")  # 0002_emulation
    score: Mapped[int] = mapped_column(Integer, default=0)
    visibility: Mapped[int] = mapped_column(Integer, default=50)
    jitter: Mapped[int] = mapped_column(Integer, default=0)
    available_at: Mapped[float | None] = mapped_column(Double, nullable=True)


class ResultRow(Base):
    """Every result as an agent delivered it (the audit trail; issue 4 de-duplicates re-sent ones by link)."""

    __tablename__ = "results"
    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    link_id: Mapped[str] = mapped_column(String(64), index=True)
    paw: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[float] = mapped_column(Double)
    accepted: Mapped[bool] = mapped_column(Boolean)  # False: the link already had a result
    data: Mapped[dict[str, Any]] = mapped_column(JsonType)


class EventRow(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    timestamp: Mapped[float] = mapped_column(Double, index=True)
    host: Mapped[str | None] = mapped_column(String(255), index=True, nullable=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    entity_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, index=True, nullable=True)
    source: Mapped[str] = mapped_column(String(32), default="")
    data: Mapped[dict[str, Any]] = mapped_column(JsonType)  # the nested ECS object, as on the wire


class AlertRow(Base):
    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(String(64), unique=True)
    timestamp: Mapped[float] = mapped_column(Double, index=True)
    rule_id: Mapped[str] = mapped_column(String(128), index=True)
    entity_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    suppressed: Mapped[bool] = mapped_column(Boolean, index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JsonType)
