"""Assay's own resources, read from storage: ``rounds``, ``alerts``, ``events``, ``rules``, ``sensor``.

A round is an operation and what the sensor and the rules saw while it ran; ``GET /rounds/{id}`` classifies
every link (``assay.validation``) with the rules the server knows (the built-in set unless configured).
``/rounds/{id}/layer``, ``/report.html`` and ``/report.md`` render that same report (``assay.reports``).
Lists are bounded (``limit``, at most 10,000) so no request can make the server build an unbounded reply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from assay.api._rounds import RoundReports
from assay.api._state import ServerState
from assay.events import alert_to_dict, event_to_dict
from assay.reports import ReportError, render_html, render_layer, render_markdown

Limit = Annotated[int, Query(ge=1, le=10_000)]
Since = Annotated[float | None, Query(allow_inf_nan=False)]


def records_router(st: ServerState, reports: RoundReports) -> APIRouter:
    router = APIRouter(tags=["Assay: rounds, telemetry and rules"])

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
        engine = await run_in_threadpool(reports.engine)
        return [info.to_dict() for info in engine.rules]

    @router.get("/rounds")
    def rounds(limit: Limit = 1000) -> list[dict[str, Any]]:
        """Stored rounds (every `assay demo` / `assay validate` run, oldest first) with their summaries, then
        operations no round was stored for (``kind: operation``, ``summary: null``; their report is built on
        request)."""
        return reports.list(limit)

    def report_of(round_id: str) -> dict[str, Any]:
        return reports.report(round_id)

    @router.get("/rounds/{round_id}")
    async def round_report(round_id: str) -> dict[str, Any]:
        """The report JSON of one round: a stored round by its id (or its operation's id), as it was written;
        for an operation no round was stored for, every link classified now with the server's rules."""
        return await run_in_threadpool(report_of, round_id)

    def rendered(round_id: str, render: Callable[[dict[str, Any]], Any]) -> Any:
        try:
            return render(report_of(round_id))
        except ReportError as exc:  # a stored report of an older format that cannot be rendered
            raise HTTPException(422, detail=f"round {round_id[:64]!r}: {exc}") from exc

    def download(round_id: str, what: str) -> dict[str, str]:
        return {"Content-Disposition": f'inline; filename="assay-{what}-{round_id[:36]}"'}

    @router.get("/rounds/{round_id}/layer")
    async def round_layer(round_id: str) -> JSONResponse:
        """The round as an ATT&CK Navigator layer (format 4.5): validated / mapped but not validated / missed,
        coloured, each with the rule that fired or the reason for the miss."""
        layer = await run_in_threadpool(rendered, round_id, render_layer)
        return JSONResponse(layer, headers=download(round_id, "layer.json"))

    @router.get("/rounds/{round_id}/report.html", response_class=HTMLResponse)
    async def round_html(round_id: str) -> HTMLResponse:
        """The round as one self-contained HTML page: the ATT&CK matrix, the table, a drill-down per
        technique."""
        page = await run_in_threadpool(rendered, round_id, render_html)
        return HTMLResponse(page, headers=download(round_id, "report.html"))

    @router.get("/rounds/{round_id}/report.md", response_class=PlainTextResponse)
    async def round_markdown(round_id: str) -> PlainTextResponse:
        """The round as Markdown, for a CI log or a job summary."""
        text = await run_in_threadpool(rendered, round_id, render_markdown)
        return PlainTextResponse(
            text, media_type="text/markdown; charset=utf-8", headers=download(round_id, "report.md")
        )

    return router
