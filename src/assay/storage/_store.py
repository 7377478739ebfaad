"""Repositories over the tables: what the server writes as things happen and what validation reads.

Every write commits before it returns, so state is in the database as it changes (never only on shutdown).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select

from assay.content import Privilege
from assay.emulation import (
    Agent,
    Fact,
    Link,
    LinkStatus,
    Operation,
    OperationState,
    Relationship,
    Result,
    SkipReason,
)
from assay.errors import StorageError
from assay.events import Alert, Event, alert_from_dict, alert_to_dict, event_from_dict, event_to_dict
from assay.storage._database import Database
from assay.storage._facts import FactRow, RelationshipRow
from assay.storage._operations import EmulationRepository, fact_row, operation_row, relationship_row
from assay.storage._rounds import RoundRepository
from assay.storage._schema import (
    AgentRow,
    AlertRow,
    CredentialRow,
    EventRow,
    LinkRow,
    OperationRow,
    ResultRow,
)


@dataclass(frozen=True, slots=True)
class OperationRecord:
    """An operation as stored (the live :class:`Operation` also holds its adversary and planner)."""

    id: str
    name: str
    adversary_id: str
    planner_id: str
    group: str
    auto_close: bool
    state: OperationState
    created_at: float
    finished_at: float | None
    agents: tuple[str, ...]
    facts: dict[str, str]
    close_requested: bool = False


_LINK_FIELDS = [
    "id",
    "operation_id",
    "seq",
    "paw",
    "host",
    "ability_id",
    "ability_name",
    "technique_id",
    "technique_name",
    "tactic",
    "executor",
    "command",
    "cleanup",
    "cleanup_of",
    "timeout",
    "planned_at",
    "delegated_at",
    "started_at",
    "finished_at",
    "exit_code",
    "stdout",
    "stderr",
    "pid",
    "start_ticks",
    "skip_reason",
    "plaintext_command",
    "score",
    "visibility",
    "jitter",
    "available_at",
]


def _link_row(link: Link) -> LinkRow:
    row = LinkRow(**{name: getattr(link, name) for name in _LINK_FIELDS})
    row.status = int(link.status)
    row.skip_reason_id = None if link.skip_reason_id is None else int(link.skip_reason_id)
    row.facts = dict(link.facts)
    return row


def _link(row: LinkRow) -> Link:
    link = Link(**{name: getattr(row, name) for name in _LINK_FIELDS})
    link.status = LinkStatus(row.status)
    link.skip_reason_id = None if row.skip_reason_id is None else SkipReason(row.skip_reason_id)
    link.facts = dict(row.facts or {})
    return link


_AGENT_FIELDS = [
    "paw",
    "host",
    "platform",
    "group",
    "username",
    "architecture",
    "pid",
    "ppid",
    "server",
    "location",
    "exe_name",
    "contact",
    "trusted",
    "created_at",
    "last_seen",
    "sandbox",
]


def _agent(row: AgentRow) -> Agent:
    agent = Agent(**{name: getattr(row, name) for name in _AGENT_FIELDS})
    agent.executors = tuple(row.executors)
    agent.privilege = Privilege(row.privilege)
    return agent


def _operation_record(row: OperationRow) -> OperationRecord:
    return OperationRecord(
        id=row.id,
        name=row.name,
        adversary_id=row.adversary_id,
        planner_id=row.planner_id,
        group=row.group,
        auto_close=row.auto_close,
        state=OperationState(row.state),
        created_at=row.created_at,
        finished_at=row.finished_at,
        agents=tuple(row.agents),
        facts=dict(row.facts),
        close_requested=row.close_requested,
    )


def _event_row(event: Event) -> EventRow:
    return EventRow(
        timestamp=event.timestamp,
        host=event.host,
        action=event.action,
        entity_id=event.entity_id,
        pid=event.pid,
        source=event.source,
        data=event_to_dict(event),
    )


def agent_row(agent: Agent, key_digest: str | None) -> AgentRow:
    row = AgentRow(**{name: getattr(agent, name) for name in _AGENT_FIELDS})
    row.executors = list(agent.executors)
    row.privilege = str(agent.privilege)
    row.key_digest = key_digest
    return row


def result_row(result: Result, paw: str, received_at: float, *, accepted: bool) -> ResultRow:
    """A result as the agent delivered it (also used for agent tasks outside operations, ``_c2``)."""
    data = {
        "status": int(result.status),
        "exit_code": result.exit_code,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "pid": result.pid,
        "start_ticks": result.start_ticks,
        "started_at": result.started_at,
        "ended_at": result.ended_at,
    }
    return ResultRow(link_id=result.link_id, paw=paw, received_at=received_at, accepted=accepted, data=data)


class Store(EmulationRepository, RoundRepository):
    """The repositories, over one :class:`Database`. Thread-safe: each call uses its own session."""

    def __init__(self, database: Database) -> None:
        self.db = database

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Store:
        db = Database(url)
        if migrate:
            db.migrate()
        return cls(db)

    def close(self) -> None:
        self.db.dispose()

    def _write(self, rows: Sequence[Any], *, merge: bool = True) -> None:
        self.db.write(rows, merge=merge)

    # -- credentials ---------------------------------------------------------------------------------------
    def set_credential(self, name: str, digest: str) -> None:
        self._write([CredentialRow(name=name, digest=digest, created_at=time.time())])

    def credential(self, name: str) -> str | None:
        with self.db.session() as session:
            row = session.get(CredentialRow, name)
            return row.digest if row else None

    # -- agents --------------------------------------------------------------------------------------------
    def save_agent(self, agent: Agent, key_digest: str | None = None) -> None:
        if key_digest is None:
            with self.db.session() as session:
                old = session.get(AgentRow, agent.paw)
                key_digest = old.key_digest if old else None
        self._write([agent_row(agent, key_digest)])

    def agent(self, paw: str) -> Agent | None:
        with self.db.session() as session:
            row = session.get(AgentRow, paw)
            return _agent(row) if row else None

    def agent_key_digest(self, paw: str) -> str | None:
        with self.db.session() as session:
            row = session.get(AgentRow, paw)
            return row.key_digest if row else None

    def agents(self) -> list[Agent]:
        with self.db.session() as session:
            return [_agent(r) for r in session.scalars(select(AgentRow).order_by(AgentRow.created_at))]

    # -- operations and links ------------------------------------------------------------------------------
    def save_operation(
        self,
        op: Operation,
        links: Iterable[Link] = (),
        *,
        facts: Iterable[Fact] = (),
        relationships: Iterable[Relationship] = (),
    ) -> None:
        """Write the operation's state, the given links, facts and relationships in one transaction."""
        self._write(
            [
                operation_row(op),
                *(_link_row(lk) for lk in links),
                *(fact_row(op.id, f) for f in facts),
                *(relationship_row(op.id, r) for r in relationships),
            ]
        )

    def save_links(self, links: Iterable[Link]) -> None:
        self._write([_link_row(lk) for lk in links])

    def operation(self, operation_id: str) -> OperationRecord | None:
        with self.db.session() as session:
            row = session.get(OperationRow, operation_id)
            return _operation_record(row) if row else None

    def operations(self, *, states: Iterable[OperationState] | None = None) -> list[OperationRecord]:
        query = select(OperationRow).order_by(OperationRow.created_at)
        if states is not None:
            query = query.where(OperationRow.state.in_([str(s) for s in states]))
        with self.db.session() as session:
            return [_operation_record(r) for r in session.scalars(query)]

    def links(self, operation_id: str) -> list[Link]:
        """Every link of an operation in plan order: executed, skipped (DISCARD) and cleanup links."""
        query = select(LinkRow).where(LinkRow.operation_id == operation_id).order_by(LinkRow.seq)
        with self.db.session() as session:
            return [_link(r) for r in session.scalars(query)]

    def link(self, link_id: str) -> Link | None:
        with self.db.session() as session:
            row = session.get(LinkRow, link_id)
            return _link(row) if row else None

    def save_result(
        self,
        result: Result,
        paw: str,
        received_at: float,
        *,
        accepted: bool,
        operation: Operation | None = None,
        links: Iterable[Link] = (),
        facts: Iterable[Fact] = (),
        relationships: Iterable[Relationship] = (),
    ) -> None:
        """Record a result as delivered, and with it what it changed (the link, the links planned next, the
        facts it taught) in the same transaction: a crash keeps all of it or none."""
        row = result_row(result, paw, received_at, accepted=accepted)
        changes: list[Any] = [] if operation is None else [operation_row(operation)]
        changes += [_link_row(lk) for lk in links]
        if operation is not None:
            changes += [fact_row(operation.id, f) for f in facts]
            changes += [relationship_row(operation.id, r) for r in relationships]
        with self.db.transaction() as session:
            session.add(row)
            for change in changes:
                session.merge(change)

    def results(self, link_id: str) -> list[dict[str, Any]]:
        query = select(ResultRow).where(ResultRow.link_id == link_id).order_by(ResultRow.id)
        with self.db.session() as session:
            return [
                {"paw": r.paw, "received_at": r.received_at, "accepted": r.accepted, **r.data}
                for r in session.scalars(query)
            ]

    # -- telemetry -----------------------------------------------------------------------------------------
    def add_telemetry(self, events: Sequence[Event], alerts: Sequence[Alert]) -> tuple[int, int]:
        """Store a batch in one transaction; alerts already stored (same id) are not stored twice."""
        with self.db.transaction("telemetry write") as session:
            session.add_all([_event_row(e) for e in events])
            ids = [a.id for a in alerts]
            known = (
                set(session.scalars(select(AlertRow.alert_id).where(AlertRow.alert_id.in_(ids))))
                if ids
                else set()
            )
            fresh: dict[str, Alert] = {}
            for alert in alerts:
                if alert.id not in known:
                    fresh.setdefault(alert.id, alert)
            session.add_all(
                AlertRow(
                    alert_id=a.id,
                    timestamp=a.timestamp,
                    rule_id=a.rule_id,
                    entity_id=a.entity_id,
                    suppressed=a.suppressed,
                    data=alert_to_dict(a),
                )
                for a in fresh.values()
            )
        return len(events), len(fresh)

    def events(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        host: str | None = None,
        action: str | None = None,
        entity_ids: Iterable[str] | None = None,
    ) -> list[Event]:
        query = select(EventRow.data).order_by(EventRow.timestamp, EventRow.id)
        if since is not None:
            query = query.where(EventRow.timestamp >= since)
        if until is not None:
            query = query.where(EventRow.timestamp <= until)
        if host is not None:
            query = query.where(EventRow.host == host)
        if action is not None:
            query = query.where(EventRow.action == action)
        if entity_ids is not None:
            query = query.where(EventRow.entity_id.in_(list(entity_ids)))
        with self.db.session() as session:
            return [event_from_dict(data) for data in session.scalars(query)]

    def newest_event_at(self) -> float | None:
        """The newest stored event's time: a watcher ships in order, so all it saw before is stored too."""
        with self.db.session() as session:
            return session.scalar(select(func.max(EventRow.timestamp)))

    def alerts(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        rule_id: str | None = None,
        suppressed: bool | None = None,
    ) -> list[Alert]:
        query = select(AlertRow.data).order_by(AlertRow.timestamp, AlertRow.id)
        if since is not None:
            query = query.where(AlertRow.timestamp >= since)
        if until is not None:
            query = query.where(AlertRow.timestamp <= until)
        if rule_id is not None:
            query = query.where(AlertRow.rule_id == rule_id)
        if suppressed is not None:
            query = query.where(AlertRow.suppressed == suppressed)
        with self.db.session() as session:
            return [alert_from_dict(data) for data in session.scalars(query)]

    def operation_window(self, operation_id: str, margin: float = 0.0) -> tuple[float, float | None]:
        """From the operation's start to its end (``None`` while it runs), widened by ``margin`` seconds."""
        record = self.operation(operation_id)
        if record is None:
            raise StorageError(f"no operation {operation_id!r}")
        end = record.finished_at
        links = self.links(operation_id)
        ends = [lk.finished_at for lk in links if lk.finished_at is not None]
        if end is not None and ends:
            end = max(end, *ends)
        return record.created_at - margin, None if end is None else end + margin

    def telemetry_for_operation(
        self, operation_id: str, margin: float = 2.0
    ) -> tuple[list[Event], list[Alert]]:
        """Events and alerts recorded while an operation ran (validation joins them to links by lineage)."""
        since, until = self.operation_window(operation_id, margin)
        return self.events(since=since, until=until), self.alerts(since=since, until=until)

    def delete_operation(self, operation_id: str) -> None:
        with self.db.session() as session, session.begin():
            session.execute(delete(LinkRow).where(LinkRow.operation_id == operation_id))
            session.execute(delete(FactRow).where(FactRow.operation_id == operation_id))
            session.execute(delete(RelationshipRow).where(RelationshipRow.operation_id == operation_id))
            session.execute(delete(OperationRow).where(OperationRow.id == operation_id))
