"""What the C2 server keeps beside agents and links: agent settings, the audit trail, last-seen times.

- ``agent_settings``: per agent, what an operator changed (sleep, watchdog, a pending kill, and whether that
  kill reached the agent) and the parts of a Caldera profile Assay stores as given (``proxy_receivers``,
  ``host_ip_addrs``...).
- ``audit``: every dispatched command and every state-changing API call, with who (which key) and when.
  Append-only; the server never updates or deletes a row.
- ``agent_tasks``: commands for an agent outside any operation (Caldera's deadman abilities), queued in the
  transaction that stores the agent (:meth:`C2Records.register_agent`: never an agent without its tasks), then
  delivered (handed out once, never again) to finished (its result stored in ``results`` in the same
  transaction), so a ``kill -9`` neither loses one nor hands it out twice.
- ``server_settings``: server-wide settings changed through the API, by name (``agents``: the agent defaults
  of ``PATCH /api/v2/config/agents``), kept across restarts.
- Last-seen times change on every beacon; the server writes them in batches (:meth:`C2Records.touch`), never
  once per beacon.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    Double,
    Integer,
    String,
    Table,
    bindparam,
    delete,
    false,
    func,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from assay.c2._model import AgentDefaults, AgentSettings, AuditEntry, Instruction
from assay.emulation import Agent, Result
from assay.errors import StorageError
from assay.storage._database import Database, storage_error
from assay.storage._schema import AgentRow, AlertRow, Base, CredentialRow, EventRow, JsonType, RowId
from assay.storage._store import agent_row, result_row

AGENT_DEFAULTS = "agents"  # the server_settings row of PATCH /api/v2/config/agents


class AgentSettingsRow(Base):
    __tablename__ = "agent_settings"
    paw: Mapped[str] = mapped_column(String(64), primary_key=True)
    sleep_min: Mapped[int] = mapped_column(Integer)
    sleep_max: Mapped[int] = mapped_column(Integer)
    watchdog: Mapped[int] = mapped_column(Integer)
    pending_kill: Mapped[bool] = mapped_column(Boolean)
    kill_delivered: Mapped[bool] = mapped_column(Boolean, server_default=false())  # the agent got the kill
    profile: Mapped[dict[str, Any]] = mapped_column(JsonType)  # Caldera profile fields kept as given
    updated_at: Mapped[float] = mapped_column(Double)


class AuditRow(Base):
    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Double, index=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    principal: Mapped[str | None] = mapped_column(String(128), nullable=True)
    operation_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    link_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    paw: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JsonType)


class AgentTaskRow(Base):
    __tablename__ = "agent_tasks"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    paw: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "deadman"
    ability_id: Mapped[str] = mapped_column(String(128))
    instruction: Mapped[dict[str, Any]] = mapped_column(JsonType)  # the Instruction as handed out
    queued_at: Mapped[float] = mapped_column(Double)
    delivered_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Double, index=True, nullable=True)


class ServerSettingRow(Base):
    __tablename__ = "server_settings"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JsonType)
    updated_at: Mapped[float] = mapped_column(Double)


def _instruction_data(i: Instruction) -> dict[str, Any]:
    return {
        "operation_id": i.operation_id,
        "executor": i.executor,
        "command": i.command,
        "timeout": i.timeout,
        "cleanup": i.cleanup,
        "payloads": list(i.payloads),
        "uploads": list(i.uploads),
        "deadman": i.deadman,
        "delete_payload": i.delete_payload,
        "sleep": i.sleep,
    }


def _instruction(row: AgentTaskRow) -> Instruction:
    d = row.instruction
    return Instruction(
        id=row.id,
        operation_id=str(d.get("operation_id", "")),
        executor=str(d["executor"]),
        command=str(d["command"]),
        timeout=int(d["timeout"]),
        cleanup=bool(d.get("cleanup", False)),
        payloads=tuple(d.get("payloads", ())),
        uploads=tuple(d.get("uploads", ())),
        deadman=bool(d.get("deadman", False)),
        delete_payload=bool(d.get("delete_payload", True)),
        sleep=int(d.get("sleep", 0)),
    )


def _settings_row(paw: str, settings: AgentSettings, now: float) -> AgentSettingsRow:
    return AgentSettingsRow(
        paw=paw,
        sleep_min=settings.sleep_min,
        sleep_max=settings.sleep_max,
        watchdog=settings.watchdog,
        pending_kill=settings.pending_kill,
        kill_delivered=settings.kill_delivered,
        profile=dict(settings.profile),
        updated_at=now,
    )


def _task_rows(paw: str, tasks: Iterable[tuple[str, Instruction]], now: float) -> list[AgentTaskRow]:
    return [
        AgentTaskRow(
            id=i.id,
            paw=paw,
            kind="deadman" if i.deadman else "task",
            ability_id=ability_id,
            instruction=_instruction_data(i),
            queued_at=now,
        )
        for ability_id, i in tasks
    ]


class C2Records:
    """Repository of the C2 tables over a :class:`Database` (the server's, shared with :class:`Store`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _commit(self, rows: Iterable[Any], *, merge: bool) -> None:
        self.db.write(rows, merge=merge, what="C2 write")

    # -- agents joining ------------------------------------------------------------------------------------
    def register_agent(
        self,
        agent: Agent,
        key_digest: str | None,
        settings: AgentSettings | None,
        tasks: Iterable[tuple[str, Instruction]],
        now: float,
    ) -> None:
        """Store a (re-)registered agent, its settings (if given) and its queued tasks (deadman) in one
        transaction: a crash keeps all or none, never an agent without its tasks. ``key_digest`` ``None``
        keeps the stored key."""
        with self.db.transaction("agent registration") as session:
            if key_digest is None:
                old = session.get(AgentRow, agent.paw)
                key_digest = old.key_digest if old else None
            session.merge(agent_row(agent, key_digest))
            if settings is not None:
                session.merge(_settings_row(agent.paw, settings, now))
            session.add_all(_task_rows(agent.paw, tasks, now))

    # -- agent settings ------------------------------------------------------------------------------------
    def save_settings(self, paw: str, settings: AgentSettings, now: float) -> None:
        self._commit([_settings_row(paw, settings, now)], merge=True)

    def settings(self) -> dict[str, AgentSettings]:
        with self.db.session() as session:
            return {
                r.paw: AgentSettings(
                    r.sleep_min, r.sleep_max, r.watchdog, r.pending_kill, dict(r.profile), r.kill_delivered
                )
                for r in session.scalars(select(AgentSettingsRow))
            }

    # -- agent tasks outside operations (deadman) ----------------------------------------------------------
    def open_tasks(self) -> list[tuple[str, Instruction, bool]]:
        """Every task without a result: ``(paw, instruction, delivered)``, oldest first."""
        query = select(AgentTaskRow).where(AgentTaskRow.finished_at.is_(None))
        with self.db.session() as session:
            rows = session.scalars(query.order_by(AgentTaskRow.queued_at, AgentTaskRow.id))
            return [(r.paw, _instruction(r), r.delivered_at is not None) for r in rows]

    def deliver_tasks(self, task_ids: Iterable[str], now: float) -> None:
        """Mark tasks handed out (before the reply leaves: a task is delivered once, never again)."""
        ids = list(task_ids)
        if not ids:
            return
        statement = update(AgentTaskRow).where(AgentTaskRow.id.in_(ids)).values(delivered_at=now)
        self._execute([statement], "task delivery")

    def finish_task(self, result: Result, paw: str, received_at: float) -> None:
        """Store a task's result and mark the task finished, in one transaction (a crash keeps both or
        neither, so a re-sent result is accepted exactly once)."""
        with self.db.transaction("task result write") as session:
            session.add(result_row(result, paw, received_at, accepted=True))
            session.execute(
                update(AgentTaskRow)
                .where(AgentTaskRow.id == result.link_id)
                .values(
                    finished_at=received_at,
                    delivered_at=func.coalesce(AgentTaskRow.delivered_at, received_at),
                )
            )

    def task_owner(self, task_id: str) -> tuple[str, bool] | None:
        """``(paw, finished)`` of a stored task, or ``None``."""
        with self.db.session() as session:
            row = session.get(AgentTaskRow, task_id)
            return (row.paw, row.finished_at is not None) if row else None

    # -- agents --------------------------------------------------------------------------------------------
    def delete_agent(self, paw: str) -> bool:
        """Remove an agent, its settings and its tasks in one transaction (its links, results and audit
        rows stay: they are the record of what ran). Returns whether the agent existed."""
        with self.db.transaction("agent delete") as session:
            found = session.get(AgentRow, paw) is not None
            session.execute(delete(AgentTaskRow).where(AgentTaskRow.paw == paw))
            session.execute(delete(AgentSettingsRow).where(AgentSettingsRow.paw == paw))
            session.execute(delete(AgentRow).where(AgentRow.paw == paw))
        return found

    # -- server-wide settings ------------------------------------------------------------------------------
    def save_agent_defaults(self, defaults: AgentDefaults, now: float) -> None:
        row = ServerSettingRow(name=AGENT_DEFAULTS, value=defaults.to_dict(), updated_at=now)
        self._commit([row], merge=True)

    def agent_defaults(self) -> AgentDefaults | None:
        """The defaults last set through the API, or ``None`` if never changed."""
        with self.db.session() as session:
            row = session.get(ServerSettingRow, AGENT_DEFAULTS)
            return AgentDefaults.from_dict(row.value) if row else None

    def _execute(self, statements: Iterable[Any], what: str) -> None:
        try:
            with self.db.engine.begin() as conn:
                for statement in statements:
                    conn.execute(statement)
        except SQLAlchemyError as exc:
            raise storage_error(what, exc) from exc

    # -- last seen, in batches -----------------------------------------------------------------------------
    def touch(self, last_seen: Mapping[str, float]) -> None:
        """Write many agents' last-seen times in one statement (executemany) and one transaction."""
        if not last_seen:
            return
        table = cast(Table, AgentRow.__table__)
        statement = update(table).where(table.c.paw == bindparam("p")).values(last_seen=bindparam("seen"))
        try:
            with self.db.engine.begin() as conn:
                conn.execute(statement, [{"p": paw, "seen": seen} for paw, seen in last_seen.items()])
        except SQLAlchemyError as exc:
            raise StorageError(f"last-seen write failed: {exc.__class__.__name__}: {exc}") from exc

    # -- audit trail ---------------------------------------------------------------------------------------
    def audit(self, entries: Iterable[AuditEntry]) -> None:
        rows = [
            AuditRow(
                at=e.at,
                kind=e.kind,
                principal=e.principal,
                operation_id=e.operation_id,
                link_id=e.link_id,
                paw=e.paw,
                data=dict(e.data),
            )
            for e in entries
        ]
        if rows:
            self._commit(rows, merge=False)

    def audit_trail(
        self,
        *,
        operation_id: str | None = None,
        paw: str | None = None,
        kind: str | None = None,
        since: float | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[AuditEntry]:
        query = select(AuditRow).order_by(AuditRow.id)
        if operation_id is not None:
            query = query.where(AuditRow.operation_id == operation_id)
        if paw is not None:
            query = query.where(AuditRow.paw == paw)
        if kind is not None:
            query = query.where(AuditRow.kind == kind)
        if since is not None:
            query = query.where(AuditRow.at >= since)
        query = query.offset(offset).limit(limit)
        with self.db.session() as session:
            return [
                AuditEntry(
                    at=r.at,
                    kind=r.kind,
                    principal=r.principal,
                    operation_id=r.operation_id,
                    link_id=r.link_id,
                    paw=r.paw,
                    data=dict(r.data),
                    id=r.id,
                )
                for r in session.scalars(query)
            ]

    # -- credentials (hashes of API keys and the enrolment token; the table is in ``_schema``) ------------
    def credentials(self) -> dict[str, str]:
        with self.db.session() as session:
            return {r.name: r.digest for r in session.scalars(select(CredentialRow))}

    def delete_credential(self, name: str) -> bool:
        with self.db.session() as session, session.begin():
            row = session.get(CredentialRow, name)
            if row is None:
                return False
            session.delete(row)
            return True

    # -- what the sensor has shipped (``GET /api/v2/sensor``) ---------------------------------------------
    def telemetry_summary(self) -> dict[str, Any]:
        """Events per source and host, the newest event time, and the loss the sources reported."""
        with self.db.session() as session:
            rows = session.execute(
                select(EventRow.source, EventRow.host, func.count(), func.max(EventRow.timestamp))
                .where(EventRow.action != "loss")
                .group_by(EventRow.source, EventRow.host)
            ).all()
            losses = session.scalars(select(EventRow.data).where(EventRow.action == "loss")).all()
            alerts = session.execute(
                select(AlertRow.suppressed, func.count()).group_by(AlertRow.suppressed)
            ).all()
        dropped = 0
        for data in losses:
            loss = data.get("loss") if isinstance(data, dict) else None
            count = loss.get("count") if isinstance(loss, dict) else None
            if isinstance(count, int):
                dropped += count
        return {
            "sources": [
                {"source": source, "host": host, "events": count, "last_event_at": last}
                for source, host, count, last in rows
            ],
            "events": sum(r[2] for r in rows),
            "loss_records": len(losses),
            "events_dropped": dropped,
            "alerts": {("suppressed" if s else "raised"): n for s, n in alerts},
        }
