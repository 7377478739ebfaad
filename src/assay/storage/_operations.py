"""Repository of the emulation domain: whole operations in and out (for restarts and reports), facts,
relationships, and content created through the API. Mixed into :class:`~assay.storage.Store`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import delete, select

from assay.content import (
    DEFAULT_OBJECTIVE,
    Adjustment,
    Adversary,
    FactRule,
    Goal,
    Objective,
    RuleAction,
    Safety,
)
from assay.emulation import (
    Agent,
    Fact,
    FactBase,
    Link,
    Operation,
    OperationState,
    OriginType,
    Relationship,
    planner,
)
from assay.errors import EmulationError, StorageError
from assay.storage._facts import ContentRow, FactRow, RelationshipRow, row_key
from assay.storage._schema import OperationRow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from assay.storage._database import Database

FINISHED_STATES = (OperationState.FINISHED, OperationState.OUT_OF_TIME)


class _StoreLike(Protocol):
    db: Database

    def links(self, operation_id: str) -> list[Link]: ...
    def agent(self, paw: str) -> Agent | None: ...


# -- rows ----------------------------------------------------------------------------------------------------
def adversary_dict(adversary: Adversary) -> dict[str, Any]:
    return {
        "id": adversary.id,
        "name": adversary.name,
        "description": adversary.description,
        "atomic_ordering": list(adversary.atomic_ordering),
        "objective": adversary.objective,
        "tags": list(adversary.tags),
    }


def operation_row(op: Operation) -> OperationRow:
    return OperationRow(
        id=op.id,
        name=op.name,
        adversary_id=op.adversary.id,
        planner_id=op.planner.name,
        group=op.group,
        auto_close=op.auto_close,
        state=str(op.state),
        close_requested=op.close_requested,
        facts=op.knowledge.summary(),
        agents=list(op.agents),
        created_at=op.created_at,
        finished_at=op.finished_at,
        autonomous=op.autonomous,
        obfuscator=op.obfuscator,
        visibility=op.visibility,
        max_safety=op.max_safety.value,
        sandbox=op.sandbox,
        source_id=op.source_id,
        cleanup_deadline=op.cleanup_deadline,
        adversary=adversary_dict(op.adversary),
        settings={
            "jitter": list(op.jitter),
            "link_grace": op.link_grace,
            "collect_timeout": op.collect_timeout,
            "rules": [{"action": r.action.value, "trait": r.trait, "match": r.match} for r in op.rules],
            "adjustments": [
                {"ability_id": a.ability_id, "trait": a.trait, "value": a.value, "offset": a.offset}
                for a in op.adjustments
            ],
            "planner_state": dict(op.planner_state),
            "planner_params": dict(op.planner.params),
            "stopping_conditions": [list(c) for c in op.stopping_conditions],
            "objective": objective_dict(op.objective),
            "use_learning_parsers": op.use_learning_parsers,
            "end_reason": op.end_reason,
        },
    )


def objective_dict(objective: Objective) -> dict[str, Any]:
    return {
        "id": objective.id,
        "name": objective.name,
        "description": objective.description,
        "goals": [
            {"target": g.target, "value": g.value, "count": g.count, "operator": g.operator}
            for g in objective.goals
        ],
    }


def objective_from(stored: Mapping[str, Any] | None) -> Objective:
    if not stored:
        return DEFAULT_OBJECTIVE  # stored before issue 12: Caldera's default objective
    goals = tuple(
        Goal(str(g["target"]), str(g.get("value", "")), int(g.get("count", 1)), str(g.get("operator", "==")))
        for g in stored.get("goals") or ()
    )
    return Objective(str(stored["id"]), str(stored.get("name") or stored["id"]), goals,
                     str(stored.get("description") or ""))  # fmt: skip


def fact_row(operation_id: str | None, fact: Fact) -> FactRow:
    return FactRow(
        id=row_key(operation_id, fact.trait, fact.value),
        operation_id=operation_id,
        trait=fact.trait,
        value=fact.value,
        score=fact.score,
        origin_type=int(fact.origin_type),
        source=fact.source,
        links=list(fact.links),
        collected_by=list(fact.collected_by),
        technique_id=fact.technique_id,
        created_at=fact.created_at,
    )


def relationship_row(operation_id: str | None, rel: Relationship) -> RelationshipRow:
    target = rel.target or (None, None)
    return RelationshipRow(
        id=row_key(operation_id, *rel.source, rel.edge, *target),
        operation_id=operation_id,
        source_trait=rel.source[0],
        source_value=rel.source[1],
        edge=rel.edge,
        target_trait=target[0],
        target_value=target[1],
        score=rel.score,
        origin=rel.origin,
        created_at=time.time(),
    )


def _fact(row: FactRow) -> Fact:
    return Fact(
        row.trait,
        row.value,
        row.score,
        OriginType(row.origin_type),
        source=row.source,
        links=list(row.links or []),
        collected_by=list(row.collected_by or []),
        technique_id=row.technique_id,
        created_at=row.created_at,
    )


def _relationship(row: RelationshipRow) -> Relationship:
    target = (row.target_trait, row.target_value or "") if row.target_trait is not None else None
    return Relationship((row.source_trait, row.source_value), row.edge, target, row.score, row.origin)


def _operation(
    row: OperationRow,
    links: list[Link],
    facts: list[Fact],
    relationships: list[Relationship],
    agents: list[Agent],
    library: Mapping[str, Adversary],
) -> Operation:
    stored = row.adversary
    if stored:
        adversary = Adversary(
            id=str(stored["id"]),
            name=str(stored.get("name") or stored["id"]),
            atomic_ordering=tuple(stored.get("atomic_ordering") or ()),
            description=str(stored.get("description") or ""),
            objective=stored.get("objective"),
            tags=tuple(stored.get("tags") or ()),
        )
    else:  # written before migration 0002: the library's copy, if it still has one
        adversary = library.get(row.adversary_id) or Adversary(row.adversary_id, row.adversary_id, ())
    settings = row.settings or {}
    try:
        chosen = planner(row.planner_id, settings.get("planner_params") or None)
    except EmulationError as exc:
        raise StorageError(f"operation {row.id}: {exc.message}") from exc
    knowledge = FactBase()
    for fact in facts:
        knowledge.add(fact)
    for rel in relationships:
        knowledge.relate(rel)
    jitter = settings.get("jitter") or [0, 0]
    return Operation(
        id=row.id,
        name=row.name,
        adversary=adversary,
        planner=chosen,
        group=row.group,
        auto_close=row.auto_close,
        state=OperationState(row.state),
        created_at=row.created_at,
        finished_at=row.finished_at,
        agents={a.paw: a for a in agents},
        links=links,
        knowledge=knowledge,
        close_requested=row.close_requested,
        autonomous=row.autonomous,
        obfuscator=row.obfuscator,
        jitter=(int(jitter[0]), int(jitter[1])),
        visibility=row.visibility,
        max_safety=Safety(row.max_safety),
        sandbox=bool(row.sandbox),
        source_id=row.source_id,
        rules=tuple(
            FactRule(RuleAction(r["action"]), r["trait"], r["match"]) for r in settings.get("rules", [])
        ),
        adjustments=tuple(
            Adjustment(a["ability_id"], a["trait"], a["value"], int(a["offset"]))
            for a in settings.get("adjustments", [])
        ),
        link_grace=float(settings.get("link_grace", 30.0)),
        collect_timeout=float(settings.get("collect_timeout", 300.0)),
        cleanup_deadline=row.cleanup_deadline,
        planner_state=dict(settings.get("planner_state") or {}),
        objective=objective_from(settings.get("objective")),
        stopping_conditions=tuple((str(t), str(v)) for t, v in settings.get("stopping_conditions") or ()),
        use_learning_parsers=bool(settings.get("use_learning_parsers", True)),
        end_reason=str(settings.get("end_reason") or ""),
    )


def _load(
    store: _StoreLike, session: Session, row: OperationRow, adversaries: Mapping[str, Adversary]
) -> Operation:
    facts = [_fact(r) for r in session.scalars(select(FactRow).where(FactRow.operation_id == row.id))]
    rels = [
        _relationship(r)
        for r in session.scalars(select(RelationshipRow).where(RelationshipRow.operation_id == row.id))
    ]
    facts.sort(key=lambda f: f.created_at)
    agents = [a for a in (store.agent(p) for p in row.agents) if a is not None]
    return _operation(row, store.links(row.id), facts, rels, agents, adversaries)


class EmulationRepository:
    """Operations as wholes, facts, relationships and API-created content."""

    # -- operations ----------------------------------------------------------------------------------------
    def load_operation(
        self: _StoreLike, operation_id: str, adversaries: Mapping[str, Adversary] | None = None
    ) -> Operation | None:
        """An operation with its links, facts, relationships and agents (the caller attaches abilities)."""
        with self.db.session() as session:
            row = session.get(OperationRow, operation_id)
            if row is None:
                return None
            return _load(self, session, row, adversaries or {})

    def live_operations(
        self: _StoreLike, adversaries: Mapping[str, Adversary] | None = None
    ) -> list[Operation]:
        """Every operation not finished, oldest first: what a restarted server takes back."""
        query = (
            select(OperationRow)
            .where(OperationRow.state.not_in([str(s) for s in FINISHED_STATES]))
            .order_by(OperationRow.created_at)
        )
        with self.db.session() as session:
            rows = list(session.scalars(query))
            return [_load(self, session, r, adversaries or {}) for r in rows]

    # -- facts and relationships ---------------------------------------------------------------------------
    def facts(
        self: _StoreLike, operation_id: str | None = None, *, any_operation: bool = False
    ) -> list[tuple[str | None, Fact]]:
        """(operation id, fact) pairs: of one operation, of none (global user facts), or of all."""
        query = select(FactRow).order_by(FactRow.created_at)
        if not any_operation:
            query = query.where(
                FactRow.operation_id == operation_id if operation_id else FactRow.operation_id.is_(None)
            )
        with self.db.session() as session:
            return [(r.operation_id, _fact(r)) for r in session.scalars(query)]

    def relationships(
        self: _StoreLike, operation_id: str | None = None, *, any_operation: bool = False
    ) -> list[tuple[str | None, Relationship]]:
        query = select(RelationshipRow).order_by(RelationshipRow.created_at)
        if not any_operation:
            query = query.where(
                RelationshipRow.operation_id == operation_id
                if operation_id
                else RelationshipRow.operation_id.is_(None)
            )
        with self.db.session() as session:
            return [(r.operation_id, _relationship(r)) for r in session.scalars(query)]

    def save_facts(
        self: _StoreLike,
        operation_id: str | None,
        facts: Iterable[Fact],
        relationships: Iterable[Relationship] = (),
    ) -> None:
        rows: list[Any] = [fact_row(operation_id, f) for f in facts]
        rows += [relationship_row(operation_id, r) for r in relationships]
        _merge(self.db, rows)

    def delete_facts(self: _StoreLike, items: Sequence[tuple[str | None, Fact]]) -> None:
        ids = [row_key(op_id, f.trait, f.value) for op_id, f in items]
        _delete(self.db, delete(FactRow).where(FactRow.id.in_(ids)))

    def delete_relationships(self: _StoreLike, items: Sequence[tuple[str | None, Relationship]]) -> None:
        ids = [row_key(op_id, *r.source, r.edge, *(r.target or (None, None))) for op_id, r in items]
        _delete(self.db, delete(RelationshipRow).where(RelationshipRow.id.in_(ids)))

    # -- content created through the API -------------------------------------------------------------------
    def save_content(self: _StoreLike, kind: str, item_id: str, data: dict[str, Any]) -> None:
        now = time.time()
        with self.db.session() as session:
            old = session.get(ContentRow, (kind, item_id))
            created = old.created_at if old else now
        _merge(self.db, [ContentRow(kind=kind, id=item_id, data=data, created_at=created, updated_at=now)])

    def content(self: _StoreLike, kind: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
        query = select(ContentRow).order_by(ContentRow.created_at)
        if kind is not None:
            query = query.where(ContentRow.kind == kind)
        with self.db.session() as session:
            return [(r.kind, r.id, dict(r.data)) for r in session.scalars(query)]

    def delete_content(self: _StoreLike, kind: str, item_id: str) -> bool:
        with self.db.session() as session, session.begin():
            row = session.get(ContentRow, (kind, item_id))
            if row is None:
                return False
            session.delete(row)
            return True


def _merge(db: Database, rows: Sequence[Any]) -> None:
    db.write(rows, merge=True)


def _delete(db: Database, statement: Any) -> None:
    with db.transaction("delete") as session:
        session.execute(statement)
