"""The application: auth, error mapping, the agent contacts, and the routers of each domain.

Handlers are thin; the work happens in the operation service, the beacon core and the store (``_state``).
:func:`create_app` returns the FastAPI app wrapped in :class:`~assay.api._edge.Edge` (size limits, the
Caldera ``/beacon`` fast path, the audit of state-changing calls).

Auth: Caldera's ``KEY`` header or ``Authorization: Bearer``. No key exists until the server generates one
(or is given one); keys are stored as scrypt hashes, checked once in a worker thread and then from a keyed
cache, so a request never waits on a slow hash on the event loop (see :mod:`assay.c2._auth`). Every route
declares the roles it serves (``red``, ``blue``, ``admin``; :mod:`assay.api._roles`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from assay import __version__
from assay.api._agents import agents_router
from assay.api._edge import Edge, error_body
from assay.api._operations import operations_router
from assay.api._records import records_router
from assay.api._roles import Guard, document_roles, require
from assay.api._rounds import RoundReports
from assay.api._state import ServerConfig, ServerState, open_state
from assay.api._telemetry import decode_batch
from assay.c2 import CalderaContact, FileContact, NativeContact, Refused, Role
from assay.errors import AssayError, C2Error, EmulationError, StorageError, StorageFull

log = logging.getLogger("assay.api")


def _status_for(exc: AssayError) -> int:
    if isinstance(exc, Refused):
        return exc.status
    if isinstance(exc, StorageFull):
        return 507  # Insufficient Storage: the request was fine, the disk is not
    if isinstance(exc, StorageError):
        return 503  # the database failed, not the request
    if isinstance(exc, EmulationError) and "no running operation" in exc.message:
        return 404
    return 400


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def _plain(value: Any) -> Any:
    """Validation error details as plain JSON (pydantic may put exceptions or bytes in ``ctx``/``input``)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, bytes):
        return value[:200].decode("utf-8", "replace")
    return str(value)[:200]


def install_error_handlers(app: FastAPI) -> None:
    """Every error is a JSON ``{"error", "details"}`` with a 4xx that says what and where."""

    @app.exception_handler(AssayError)
    async def assay_error(_request: Request, exc: AssayError) -> JSONResponse:
        return JSONResponse(error_body(exc), status_code=_status_for(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{k: v for k, v in e.items() if k != "url"} for e in exc.errors()[:20]]
        return JSONResponse({"error": _validation_message(exc), "details": _plain(details)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": exc.detail, "detail": exc.detail},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )


async def _flush_seen(st: ServerState) -> None:
    """Last-seen times go to the database in one batch every few seconds, never once per beacon."""
    while True:
        await asyncio.sleep(st.config.seen_flush_interval)
        try:
            await run_in_threadpool(st.core.flush_seen)
        except AssayError as exc:  # kept in memory for the next flush (the core re-queues them)
            log.error("last-seen flush failed: %s", exc)


def create_app(config: ServerConfig, state: ServerState | None = None) -> Edge:
    st = state or open_state(config)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        st.waiters.bind(asyncio.get_running_loop())
        # Everything loaded so far (content, rules, agents) lives as long as the server: keep it out of the
        # cyclic collector's scans, whose pauses would otherwise show in beacon latency.
        gc.freeze()
        flusher = asyncio.create_task(_flush_seen(st))
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            try:
                await run_in_threadpool(st.core.flush_seen)
            except AssayError as exc:
                log.error("last-seen flush at shutdown failed: %s", exc)
            st.store.close()

    app = FastAPI(
        title="Assay",
        version=__version__,
        description="Purple-team server: Caldera's REST API v2 and agent contacts, Assay's own resources.",
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.assay = st
    install_error_handlers(app)

    guard = Guard(st.keys)
    app.state.assay_guard = guard
    document_roles(app)

    contact = NativeContact(lambda: st.core, st.keys, st.waiters, lambda: st.payloads)
    app.include_router(contact.router())
    files = FileContact(lambda: st.core, lambda: st.payloads, st.config.caldera_compat)
    app.include_router(files.router())
    if st.config.caldera_compat:
        # Documented here for the OpenAPI spec; requests are answered by Edge before routing.
        @app.post("/beacon", tags=["agent contact (Caldera)"], response_model=None)
        async def beacon(body: Annotated[str, Body(media_type="text/plain")]) -> None:
            """Caldera's beacon: base64 of a JSON profile in, base64 of a JSON reply out."""
            raise C2Error("served by the edge layer")  # pragma: no cover - never routed here

    # Every /api/ route needs a key (and, if it declares no role, an admin key); each declares its roles with
    # require(), here for whole routers or in the router for routes of mixed roles (see assay.api._roles).
    guarded = [Depends(guard.authenticated)]
    app.include_router(agents_router(st), prefix="/api/v2", dependencies=guarded)
    reports = RoundReports(st)  # one rule engine and one report cache for the API and the web UI
    app.include_router(
        records_router(st, reports), prefix="/api/v2", dependencies=[*guarded, require(Role.BLUE)]
    )
    app.include_router(operations_router(st), prefix="/api/v2", dependencies=[*guarded, require(Role.RED)])
    from assay.web import web_routers  # the web UI is an edge over the same state

    pages, twins = web_routers(st, reports)
    app.include_router(pages)
    app.include_router(twins, prefix="/api/v2", dependencies=guarded)

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=303)

    @app.post("/api/v2/telemetry", dependencies=[*guarded, require(Role.BLUE)], tags=["Assay: telemetry"])
    async def telemetry(body: Annotated[Any, Body()]) -> JSONResponse:
        events, alerts, bad = decode_batch(body)
        if bad:
            return JSONResponse(
                {
                    "error": f"{len(bad)} bad record(s); nothing of this batch was stored",
                    "details": [b.to_dict() for b in bad],
                },
                status_code=422,
            )
        stored_events, stored_alerts = await run_in_threadpool(st.store.add_telemetry, events, alerts)
        return JSONResponse({"events": stored_events, "alerts": stored_alerts})

    caldera = CalderaContact(lambda: st.core, run_in_threadpool) if st.config.caldera_compat else None

    def audit(entry: Any) -> None:
        st.records.audit([entry])

    return Edge(app, caldera=caldera, audit=audit, clock=st.core.clock, keys=st.keys)


def fastapi_app(edge: Edge) -> FastAPI:
    """The FastAPI app inside an :class:`Edge` (for its OpenAPI spec and ``app.state``)."""
    inner = edge.app
    assert isinstance(inner, FastAPI)
    return inner
