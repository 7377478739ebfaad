"""Assay's own resources, read from storage: ``rounds``, ``alerts``, ``events``, ``rules``, ``sensor``.

A round is an operation and what the sensor and the rules saw while it ran; ``GET /rounds/{id}`` classifies
every link (``assay.validation``) with the rules the server knows (the built-in set unless configured).
Lists are bounded (``limit``, at most 10,000) so no request can make the server build an unbounded reply.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from starlette.concurrency import run_in_threadpool

from assay.api._state import ServerState
from assay.events import alert_to_dict, event_to_dict

Limit = Annotated[int, Query(ge=1, le=10_000)]
Since = Annotated[float | None, Query(allow_inf_nan=False)]


class _Rules:
    """The detection engine, loaded on first use (compiling rules takes a moment; most servers never ask)."""

    def __init__(self) -> None:
        self._engine: Any = None
        self._lock = threading.Lock()

    def engine(self) -> Any:
        with self._lock:
            if self._engine is None:
                from assay.detection import Engine, builtin_rule_paths

                self._engine = Engine.load(rule_paths=builtin_rule_paths())
            return self._engine


def records_router(st: ServerState) -> APIRouter:
    router = APIRouter(tags=["Assay: rounds, telemetry and rules"])
    rules = _Rules()

    @router.get("/events")
    def events(
        since: Since = None,
        until: Since = None,
        host: Annotated[str | None, Query(max_length=255)] = None,
        action: Annotated[str | None, Query(max_length=64)] = None,
        entity_id: Annotated[str | None, Query(max_length=64)] = None,
        limit: Limit = 1000,
    ) -> list[dict[str, Any]]:
        found = st.store.events(
            since=since, until=until, host=host, action=action, entity_ids=[entity_id] if entity_id else None
        )
        return [event_to_dict(e) for e in found[:limit]]

    @router.get("/alerts")
    def alerts(
        since: Since = None,
        until: Since = None,
        rule_id: Annotated[str | None, Query(max_length=128)] = None,
        suppressed: bool | None = None,
        limit: Limit = 1000,
    ) -> list[dict[str, Any]]:
        found = st.store.alerts(since=since, until=until, rule_id=rule_id, suppressed=suppressed)
        return [alert_to_dict(a) for a in found[:limit]]

    @router.get("/sensor")
    def sensor() -> dict[str, Any]:
        """What the sensor shipped: events per source and host, the newest event, reported loss."""
        return st.records.telemetry_summary()

    @router.get("/rules")
    async def rule_list() -> list[dict[str, Any]]:
        engine = await run_in_threadpool(rules.engine)
        return [info.to_dict() for info in engine.rules]

    @router.get("/rounds")
    def rounds(limit: Limit = 1000) -> list[dict[str, Any]]:
        """Stored rounds (every `assay demo` / `assay validate` run, oldest first) with their summaries, then
        operations no round was stored for (``kind: operation``, ``summary: null``; their report is built on
        request)."""
        stored = st.store.rounds(limit)
        scored = {r.operation_id for r in stored if r.operation_id}
        out: list[dict[str, Any]] = []
        for r in stored:
            item = r.to_dict()
            item["state"] = "finished"
            out.append(item)
        for record in st.store.operations()[-limit:]:
            if record.id in scored:
                continue
            links = st.store.links(record.id)
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

    @router.get("/rounds/{round_id}")
    async def round_report(round_id: str) -> dict[str, Any]:
        """The report JSON of one round: a stored round by its id (or its operation's id), as it was written;
        for an operation no round was stored for, every link classified now with the server's rules."""
        stored = await run_in_threadpool(st.store.round, round_id)
        if stored is not None:
            return stored.report
        record = st.store.operation(round_id)
        if record is None:
            raise HTTPException(404, detail=f"no round (nor operation) {round_id[:64]!r}")
        engine = await run_in_threadpool(rules.engine)

        def build() -> dict[str, Any]:
            from assay.validation import round_inputs, validate

            links, found_events, found_alerts = round_inputs(st.store, round_id)
            report = validate(
                links,
                found_events,
                found_alerts,
                mapped_techniques=engine.mapped_techniques,
                consumed_actions=engine.consumed_actions,
                meta={"operation_id": round_id, "name": record.name, "state": str(record.state)},
            )
            return report.to_dict()

        return await run_in_threadpool(build)

    return router
