"""The FastAPI application: REST API v2, the native agent contact, storage and the beacon core.

``create_app`` does everything a server start must: open the database and apply migrations, load the content
library, settle the credentials (generated on first start, stored hashed), and wire the beacon core to the
agent contact. Handlers are thin; the work happens in the core and the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from assay import __version__
from assay.api._telemetry import decode_batch
from assay.api._views import (
    ability_view,
    adversary_view,
    agent_view,
    link_view,
    live_record,
    operation_view,
)
from assay.c2 import BeaconCore, NativeContact, Waiters, digest, matches, new_secret
from assay.content import LoadResult, load_builtin
from assay.errors import AssayError, C2Error, EmulationError
from assay.storage import Store, sqlite_url

API_KEY = "api_key"
ENROL_TOKEN = "enrol_token"


@dataclass
class ServerConfig:
    data_dir: Path = Path(".assay")
    db_url: str | None = None  # default: SQLite file in data_dir
    api_key: str | None = None
    enrol_token: str | None = None
    content_paths: list[Path] = field(default_factory=list)

    @property
    def database_url(self) -> str:
        return self.db_url or sqlite_url(self.data_dir)


@dataclass
class ServerState:
    store: Store
    content: LoadResult
    core: BeaconCore
    waiters: Waiters
    api_digest: str
    enrol_digest: str
    generated: dict[str, str]  # secrets made on this start, to print once


def settle_credential(store: Store, name: str, given: str | None) -> tuple[str, str | None]:
    """The digest to check against, and the secret if it was generated now (to show once)."""
    if given:
        store.set_credential(name, digest(given))
        return digest(given), None
    stored = store.credential(name)
    if stored:
        return stored, None
    secret = new_secret()
    store.set_credential(name, digest(secret))
    return digest(secret), secret


def open_state(config: ServerConfig) -> ServerState:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store.open(config.database_url)
    content = load_builtin(config.content_paths)
    waiters = Waiters()
    core = BeaconCore(store, content.library, on_ready=waiters.notify)
    generated: dict[str, str] = {}
    api_digest, secret = settle_credential(store, API_KEY, config.api_key)
    if secret:
        generated[API_KEY] = secret
    enrol_digest, secret = settle_credential(store, ENROL_TOKEN, config.enrol_token)
    if secret:
        generated[ENROL_TOKEN] = secret
    return ServerState(store, content, core, waiters, api_digest, enrol_digest, generated)


class AdversaryRef(BaseModel):
    adversary_id: str = Field(min_length=1, max_length=128)


class PlannerRef(BaseModel):
    id: str = Field(default="atomic", min_length=1, max_length=128)


class SourceRef(BaseModel):
    id: str = Field(default="", max_length=128)


class OperationCreate(BaseModel):
    """Caldera's ``POST /api/v2/operations`` body (``source`` is accepted; fact sources arrive in issue 3)."""

    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=255)
    adversary: AdversaryRef
    planner: PlannerRef = Field(default_factory=PlannerRef)
    group: str = Field(default="", max_length=64)
    auto_close: bool = True
    source: SourceRef | None = None


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
    return app


def _operation_json(st: ServerState, operation_id: str) -> dict[str, Any]:
    live = st.core.operations.get(operation_id)
    record = live_record(live) if live else st.store.operation(operation_id)
    if record is None:
        raise HTTPException(404, detail=f"no operation {operation_id!r}")
    agents = [a for a in (st.store.agent(p) for p in record.agents) if a is not None]
    links = st.store.links(operation_id)
    return operation_view(record, links, agents, st.content.library.adversary(record.adversary_id))


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

    @router.get("/abilities")
    def abilities() -> list[dict[str, Any]]:
        return [ability_view(a) for a in st.content.library.abilities.values()]

    @router.get("/adversaries")
    def adversaries() -> list[dict[str, Any]]:
        return [adversary_view(a) for a in st.content.library.adversaries.values()]

    @router.get("/agents")
    def agents() -> list[dict[str, Any]]:
        return [agent_view(a) for a in st.store.agents()]

    @router.post("/operations")
    def create_operation(body: OperationCreate) -> dict[str, Any]:
        op = st.core.start_operation(
            name=body.name,
            adversary_id=body.adversary.adversary_id,
            planner_id=body.planner.id,
            group=body.group,
            auto_close=body.auto_close,
        )
        return _operation_json(st, op.id)

    @router.get("/operations")
    def operations() -> list[dict[str, Any]]:
        return [_operation_json(st, r.id) for r in st.store.operations()]

    @router.get("/operations/{operation_id}")
    def operation(operation_id: str) -> dict[str, Any]:
        return _operation_json(st, operation_id)

    @router.get("/operations/{operation_id}/links")
    def links(operation_id: str) -> list[dict[str, Any]]:
        if st.store.operation(operation_id) is None:
            raise HTTPException(404, detail=f"no operation {operation_id!r}")
        return [link_view(lk) for lk in st.store.links(operation_id)]

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
