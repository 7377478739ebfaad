"""Validation rounds as stored: one row per `assay demo` / `assay validate` run (or re-scoring of one), and
the alert → link attribution of every round, so a round can be re-scored from storage without re-running it.

A round keeps its full report JSON (what `assay-report.json` holds), its summary apart (lists stay cheap),
the hashes of the rule set and of the content it ran, and whether it ran in the sandbox. Mixed into
:class:`~assay.storage.Store`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, Double, String, select
from sqlalchemy.orm import Mapped, mapped_column

from assay.storage._schema import Base, JsonType

if TYPE_CHECKING:
    from assay.storage._database import Database


class RoundRow(Base):
    __tablename__ = "rounds"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    operation_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    kind: Mapped[str] = mapped_column(String(16))  # demo | validate | rescore
    name: Mapped[str] = mapped_column(String(255), default="")
    adversary_id: Mapped[str] = mapped_column(String(128), default="")
    sandbox: Mapped[bool] = mapped_column(Boolean, default=False)
    rules_hash: Mapped[str] = mapped_column(String(64), default="")
    content_hash: Mapped[str] = mapped_column(String(64), default="")
    started_at: Mapped[float] = mapped_column(Double, index=True)
    finished_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    rescored_from: Mapped[str | None] = mapped_column(String(64), nullable=True)
    summary: Mapped[dict[str, Any]] = mapped_column(JsonType)
    report: Mapped[dict[str, Any]] = mapped_column(JsonType)


class AlertLinkRow(Base):
    """An alert and a link it belongs to (a correlation alert has one row per contributing link)."""

    __tablename__ = "alert_links"
    alert_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    link_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    operation_id: Mapped[str] = mapped_column(String(64), index=True)


@dataclass(frozen=True, slots=True)
class RoundRecord:
    id: str
    kind: str
    started_at: float
    summary: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict)  # empty in lists (see Store.rounds)
    operation_id: str | None = None
    name: str = ""
    adversary_id: str = ""
    sandbox: bool = False
    rules_hash: str = ""
    content_hash: str = ""
    finished_at: float | None = None
    rescored_from: str | None = None

    def to_dict(self, *, report: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "operation_id": self.operation_id,
            "name": self.name,
            "adversary_id": self.adversary_id,
            "sandbox": self.sandbox,
            "rules_hash": self.rules_hash,
            "content_hash": self.content_hash,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "rescored_from": self.rescored_from,
            "summary": self.summary,
        }
        if report:
            out["report"] = self.report
        return out


_COLUMNS = (
    "id",
    "kind",
    "started_at",
    "summary",
    "operation_id",
    "name",
    "adversary_id",
    "sandbox",
    "rules_hash",
    "content_hash",
    "finished_at",
    "rescored_from",
)


def _record(row: RoundRow, *, report: bool) -> RoundRecord:
    values = {name: getattr(row, name) for name in _COLUMNS}
    return RoundRecord(**values, report=dict(row.report) if report else {})


class RoundRepository:
    db: Database

    def save_round(self, record: RoundRecord, alert_links: Iterable[tuple[str, str]] = ()) -> None:
        """Store a round and its alert → link attribution in one transaction (all of it or none)."""
        row = RoundRow(**{name: getattr(record, name) for name in _COLUMNS}, report=record.report)
        with self.db.transaction("round write") as session:
            session.merge(row)
            if record.operation_id:
                for alert_id, link_id in dict.fromkeys(alert_links):
                    session.merge(
                        AlertLinkRow(alert_id=alert_id, link_id=link_id, operation_id=record.operation_id)
                    )

    def rounds(self, limit: int | None = None) -> list[RoundRecord]:
        """Stored rounds, oldest first (the newest ``limit``), without their reports."""
        query = select(RoundRow).order_by(RoundRow.started_at.desc(), RoundRow.id)
        if limit is not None:
            query = query.limit(limit)
        with self.db.session() as session:
            rows = list(session.scalars(query))
            return [_record(r, report=False) for r in reversed(rows)]

    def round(self, round_id: str) -> RoundRecord | None:
        """A round by its id, or the newest round of the operation with that id."""
        with self.db.session() as session:
            row = session.get(RoundRow, round_id)
            if row is None:
                query = (
                    select(RoundRow)
                    .where(RoundRow.operation_id == round_id)
                    .order_by(RoundRow.started_at.desc())
                    .limit(1)
                )
                row = session.scalars(query).first()
            return _record(row, report=True) if row else None

    def alert_links(self, operation_id: str) -> dict[str, list[str]]:
        """Alert id → the ids of the links it belongs to, for one operation."""
        query = select(AlertLinkRow).where(AlertLinkRow.operation_id == operation_id)
        out: dict[str, list[str]] = defaultdict(list)
        with self.db.session() as session:
            for row in session.scalars(query.order_by(AlertLinkRow.alert_id, AlertLinkRow.link_id)):
                out[row.alert_id].append(row.link_id)
        return dict(out)
