"""The FastAPI application: auth, error mapping, the agent contact, and the routers of each domain.

Handlers are thin; the work happens in the operation service, the beacon core and the store (``_state``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from assay import __version__
from assay.api._operations import operations_router
from assay.api._state import ServerConfig, ServerState, open_state
from assay.api._telemetry import decode_batch
from assay.api._views import agent_view
from assay.c2 import NativeContact, matches
from assay.errors import AssayError, C2Error, EmulationError


def create_app(config: ServerConfig, state: ServerState | None = None) -> FastAPI:
    st = state or open_state(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        st.waiters.bind(asyncio.get_running_loop())
        yield
        st.store.close()

    app = FastAPI(
        title="Assay",
        version=__version__,
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.assay = st

    @app.exception_handler(AssayError)
    async def assay_error(_request: Request, exc: AssayError) -> JSONResponse:
        status = 404 if isinstance(exc, EmulationError) and "no running operation" in exc.message else 400
        if isinstance(exc, C2Error):
            status = 409
        return JSONResponse({"error": str(exc), "details": exc.to_dict()}, status_code=status)

    def admin(
        key: Annotated[str | None, Header(alias="KEY")] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> None:
        """Caldera's ``KEY`` header, or ``Authorization: Bearer``; no default key exists anywhere."""
        secret = key
        if secret is None and authorization:
            scheme, _, token = authorization.partition(" ")
            secret = token.strip() if scheme.lower() == "bearer" else None
        if not secret or not matches(secret, st.api_digest):
            raise HTTPException(
                401, detail="API key required: header 'KEY: <key>' or 'Authorization: Bearer <key>'"
            )

    contact = NativeContact(lambda: st.core, lambda: st.enrol_digest, st.waiters)
    app.include_router(contact.router())

    app.include_router(_router(st), prefix="/api/v2", dependencies=[Depends(admin)])
    app.include_router(operations_router(st), prefix="/api/v2", dependencies=[Depends(admin)])
    return app


def _router(st: ServerState) -> APIRouter:
    router = APIRouter(tags=["REST API v2"])

    @router.get("/health")
    def health() -> dict[str, Any]:
        return {
            "application": "assay",
            "version": __version__,
            "access": "red",
            "plugins": [],
            "abilities": len(st.content.library.abilities),
            "content_errors": [e.to_dict() for e in st.content.errors],
        }

    @router.get("/agents")
    def agents() -> list[dict[str, Any]]:
        return [agent_view(a) for a in st.store.agents()]

    @router.post("/telemetry")
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

    return router
