"""Rounds as the server lists and reports them, for the REST API and the web UI alike.

A round is either **stored** (``assay demo`` / ``assay validate`` wrote its report, with the rule set's and
the content's hashes) or an **operation** no round was stored for, whose report is built on request by
classifying every link with the server's rules. A stored round's report is returned as it was written, so
re-reading it never changes its figures; an operation's report is cached once the operation is finished,
keyed by the number of events stored, so a late telemetry batch makes a fresh one.

``GET /api/v2/rounds`` and the web's rounds pages both read through one :class:`RoundReports`, so a page and
its API twin cannot disagree, and the server compiles its rules once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException

if TYPE_CHECKING:
    from assay.api._state import ServerState

CACHED_REPORTS = 16


class RoundReports:
    def __init__(self, st: ServerState) -> None:
        self.st = st
        self._engine: Any = None
        self._engine_lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()
        self._cache_lock = threading.Lock()

    def engine(self) -> Any:
        """The detection engine, compiled on first use (it takes a moment; most servers never ask)."""
        with self._engine_lock:
            if self._engine is None:
                from assay.detection import Engine

                self._engine = Engine.load()  # the built-in rules and allowlists
            return self._engine

    def list(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Stored rounds (oldest first) with their summaries, then the operations no round was stored for
        (``kind: operation``, ``summary: null``) with their ``links`` (cleanup left out) and ``techniques``.
        A stored round's summary says what it ran; its report is not read for a list."""
        store = self.st.store
        stored = store.rounds(limit)
        scored = {r.operation_id for r in stored if r.operation_id}
        out: list[dict[str, Any]] = []
        for r in stored:
            item = r.to_dict()
            item["state"] = "finished"
            out.append(item)
        for record in store.operations()[-limit:]:
            if record.id in scored:
                continue
            links = store.links(record.id)
            out.append(
                {
                    "id": record.id,
                    "kind": "operation",
                    "operation_id": record.id,
                    "name": record.name,
                    "state": str(record.state),
                    "adversary_id": record.adversary_id,
                    "started_at": record.created_at,
                    "finished_at": record.finished_at,
                    "summary": None,
                    "agents": list(record.agents),
                    "links": sum(1 for lk in links if not lk.cleanup),
                    "techniques": sorted({lk.technique_id for lk in links if lk.technique_id}),
                }
            )
        return out[-limit:]

    def report(self, round_id: str) -> dict[str, Any]:
        """A stored round's report by its id (or its operation's id), as it was written; for an operation no
        round was stored for, every link classified now with the server's rules."""
        store = self.st.store
        stored = store.round(round_id)
        if stored is not None:
            return stored.report
        record = store.operation(round_id)
        if record is None:
            raise HTTPException(404, detail=f"no round (nor operation) {round_id[:64]!r}")
        finished = record.finished_at is not None
        key = (round_id, int(self.st.records.telemetry_summary().get("events", 0)))
        if finished:
            with self._cache_lock:
                if (cached := self._cache.get(key)) is not None:
                    self._cache.move_to_end(key)
                    return cached
        from assay.validation import operation_report

        engine = self.engine()
        report = operation_report(
            store,
            round_id,
            name=record.name,
            state=str(record.state),
            mapped_techniques=engine.mapped_techniques,
            consumed_actions=engine.consumed_actions,
        ).to_dict()
        if finished:
            with self._cache_lock:
                self._cache[key] = report
                while len(self._cache) > CACHED_REPORTS:
                    self._cache.popitem(last=False)
        return report

    def operation_of(self, round_id: str) -> str | None:
        """The operation a round scored (itself for an operation), or ``None`` if it is not in storage."""
        store = self.st.store
        stored = store.round(round_id)
        if stored is not None:
            op = stored.operation_id
            return op if op and store.operation(op) is not None else None
        return round_id if store.operation(round_id) is not None else None
