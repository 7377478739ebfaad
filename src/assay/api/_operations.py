"""REST API v2 routes for operations, their links and reports (Caldera's paths and shapes), plus the content
and knowledge routers, and the start-up step that takes back stored content and live operations."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from assay.api._content import content_router, differs, load_stored_content
from assay.api._knowledge import knowledge_router
from assay.api._views import link_view, operation_view
from assay.content import Safety
from assay.emulation import (
    Link,
    LinkStatus,
    Operation,
    OperationSettings,
    Run,
    event_logs,
    operation_report,
    parse_jitter,
)

if TYPE_CHECKING:
    from assay.api._state import ServerState

T = TypeVar("T")


class AdversaryRef(BaseModel):
    adversary_id: str = Field(min_length=1, max_length=128)


class PlannerRef(BaseModel):
    id: str = Field(default="atomic", min_length=1, max_length=128)


class SourceRef(BaseModel):
    id: str = Field(default="", max_length=128)


class ObjectiveRef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(default="", max_length=128)


class FactIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    trait: str = Field(min_length=1, max_length=255)
    value: str | int | float | bool
    score: int = 1


class OperationCreate(BaseModel):
    """Caldera's ``POST /api/v2/operations`` body, and Assay's own fields beside it.

    Assay differs on purpose: ``jitter`` defaults to ``"0/0"`` (links start the moment they exist; Caldera's
    ``"2/8"`` can be given), and only ``safe`` abilities run unless ``max_safety`` opts in to more. On the
    host, ``max_safety`` above ``safe`` lets ``disruptive`` abilities run; ``destructive`` ones run only when
    ``sandbox`` is true, and a sandboxed operation runs only on sandboxed agents.
    """

    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=255)
    adversary: AdversaryRef
    planner: PlannerRef = Field(default_factory=PlannerRef)
    source: SourceRef | None = None
    objective: ObjectiveRef | None = None
    use_learning_parsers: bool = True
    group: str = Field(default="", max_length=64)
    auto_close: bool = True
    autonomous: int | bool = 1
    obfuscator: str = Field(default="plain-text", max_length=64)
    jitter: str = Field(default="0/0", max_length=16)
    visibility: int = Field(default=50, ge=1, le=100)
    state: Literal["running", "paused", "run_one_link"] = "running"
    max_safety: Literal["safe", "disruptive", "destructive"] = "safe"
    sandbox: bool = False
    facts: list[FactIn] = Field(default_factory=list, max_length=10_000)
    link_grace: float = Field(default=30.0, ge=0.0, le=86_400.0)
    collect_timeout: float = Field(default=300.0, gt=0.0, le=86_400.0)


class OperationPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: str | None = Field(default=None, max_length=32)
    autonomous: int | bool | None = None
    obfuscator: str | None = Field(default=None, max_length=64)


class LinkPatch(BaseModel):
    model_config = ConfigDict(extra="ignore")
    status: int | None = None
    command: str | None = Field(default=None, description="base64 of the new command (Caldera's shape)")
    plaintext_command: str | None = None

    @field_validator("command")
    @classmethod
    def _b64(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ValueError(
                "'command' must be base64 (Caldera's shape); or send 'plaintext_command'"
            ) from exc


class ExecutorIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(default="sh", min_length=1, max_length=32)
    command: str = Field(min_length=1, max_length=1_000_000)
    platform: str | None = None


class AbilityRef(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ability_id: str | None = None


class PotentialLinkIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    paw: str = Field(min_length=1, max_length=64)
    executor: ExecutorIn
    ability: AbilityRef | None = None


class ReportRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    enable_agent_output: bool = False


def resume(st: ServerState) -> list[Operation]:
    """At start: add content created through the API to the library, then take back every operation that
    was live when the server stopped, so it continues where it was."""
    library = st.content.library
    load_stored_content(st.store, library, st.content.errors)
    return st.core.operations.restore(st.store.live_operations(library.adversaries))


def _run_view(op: Operation, run: Run) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "operation_id": op.id,
        "paw": run.paw,
        "status": int(LinkStatus.EXECUTE if op.autonomous else LinkStatus.PAUSE),
        "ability": {
            "ability_id": run.ability.id,
            "name": run.ability.name,
            "tactic": run.ability.tactic,
            "technique_id": run.ability.technique_id,
            "technique_name": run.ability.technique_name,
        },
        "executor": run.executor.name,
        "command": base64.b64encode(run.command.encode()).decode(),
        "plaintext_command": run.command,
        "score": run.score,
        "visibility": run.visibility,
        "used": [{"trait": t, "value": v, "name": t} for t, v in run.facts.items()],
    }


def read_operation(st: ServerState, operation_id: str, shape: Callable[[Operation], T]) -> T:
    """``shape`` of the operation: a live one under the service's lock (it changes as results arrive), a
    finished one loaded from storage without holding the lock (agents' results never wait on a report)."""
    service = st.core.operations
    library = st.content.library
    with service.lock:
        live = service.get(operation_id)
        if live is not None:
            return shape(live)
    op = st.store.load_operation(operation_id, library.adversaries)
    if op is None:
        raise HTTPException(404, detail=f"no operation {operation_id!r}")
    op.abilities = library.abilities
    return shape(op)


def start_operation(st: ServerState, body: OperationCreate) -> Operation:
    """Start an operation over the agents of ``body.group`` (every agent when it is empty)."""
    settings = OperationSettings(
        group=body.group,
        auto_close=body.auto_close,
        autonomous=bool(body.autonomous),
        obfuscator=body.obfuscator,
        jitter=parse_jitter(body.jitter),
        visibility=body.visibility,
        source_id=body.source.id if body.source and body.source.id else None,
        max_safety=Safety(body.max_safety),
        sandbox=body.sandbox,
        state=body.state,
        facts=[
            (f.trait, str(f.value).lower() if isinstance(f.value, bool) else str(f.value), f.score)
            for f in body.facts
        ],
        link_grace=body.link_grace,
        collect_timeout=body.collect_timeout,
        objective_id=body.objective.id if body.objective and body.objective.id else None,
        use_learning_parsers=body.use_learning_parsers,
    )
    return st.core.operations.start_operation(
        name=body.name,
        adversary_id=body.adversary.adversary_id,
        agents=list(st.core.agents.values()),
        planner_id=body.planner.id,
        settings=settings,
    )


def operations_router(st: ServerState) -> APIRouter:
    router = APIRouter(tags=["operations"])
    service = st.core.operations

    def read(operation_id: str, shape: Callable[[Operation], T]) -> T:
        return read_operation(st, operation_id, shape)

    def view(operation_id: str, *, chain: bool = True) -> dict[str, Any]:
        return read(operation_id, lambda op: operation_view(op, chain=chain))

    def one_link(operation_id: str, link_id: str, shape: Callable[[Link], T]) -> T:
        def pick(op: Operation) -> T:
            found = op.link(link_id)
            if found is None:
                raise HTTPException(404, detail=f"no link {link_id!r} in operation {operation_id}")
            return shape(found)

        return read(operation_id, pick)

    def live(operation_id: str) -> Operation:
        op = service.get(operation_id)
        if op is None:
            if st.store.operation(operation_id) is None:
                raise HTTPException(404, detail=f"no operation {operation_id!r}")
            raise HTTPException(409, detail=f"operation {operation_id} has finished")
        return op

    @router.post("/operations")
    def create_operation(body: OperationCreate, response: Response) -> dict[str, Any]:
        differs(response, "operation-defaults")
        return view(start_operation(st, body).id)

    @router.get("/operations")
    def operations() -> list[dict[str, Any]]:
        return [view(r.id, chain=False) for r in st.store.operations()]

    @router.get("/operations/{operation_id}")
    def operation(operation_id: str) -> dict[str, Any]:
        return view(operation_id)

    @router.patch("/operations/{operation_id}")
    def update_operation(operation_id: str, body: OperationPatch) -> dict[str, Any]:
        live(operation_id)
        if body.obfuscator is not None:
            service.set_obfuscator(operation_id, body.obfuscator)
        if body.autonomous is not None:
            service.set_autonomous(operation_id, bool(body.autonomous))
        if body.state is not None:
            service.set_state(operation_id, body.state)
        return view(operation_id)

    @router.delete("/operations/{operation_id}", status_code=204)
    def delete_operation(operation_id: str) -> None:
        if service.get(operation_id) is not None:
            raise HTTPException(409, detail="operation is live; PATCH its state to 'finished' first")
        if st.store.operation(operation_id) is None:
            raise HTTPException(404, detail=f"no operation {operation_id!r}")
        st.store.delete_operation(operation_id)

    @router.get("/operations/{operation_id}/links")
    def links(operation_id: str) -> list[dict[str, Any]]:
        return read(operation_id, lambda op: [link_view(lk) for lk in op.links])

    @router.get("/operations/{operation_id}/links/{link_id}")
    def link(operation_id: str, link_id: str) -> dict[str, Any]:
        return one_link(operation_id, link_id, link_view)

    @router.patch("/operations/{operation_id}/links/{link_id}")
    def update_link(operation_id: str, link_id: str, body: LinkPatch) -> dict[str, Any]:
        live(operation_id)
        command = body.plaintext_command if body.plaintext_command is not None else body.command
        changed = service.review_link(operation_id, link_id, status=body.status, command=command)
        return link_view(changed)

    @router.get("/operations/{operation_id}/links/{link_id}/result")
    def link_result(operation_id: str, link_id: str) -> dict[str, Any]:
        def shape(found: Link) -> dict[str, Any]:
            data = {"stdout": found.stdout, "stderr": found.stderr,
                    "exit_code": "" if found.exit_code is None else str(found.exit_code)}  # fmt: skip
            result = base64.b64encode(json.dumps(data).encode()).decode() if found.finished else ""
            return {"link": link_view(found), "result": result}

        return one_link(operation_id, link_id, shape)

    @router.get("/operations/{operation_id}/potential-links")
    def potential_links(operation_id: str) -> list[dict[str, Any]]:
        op = live(operation_id)
        return [_run_view(op, r) for r in service.potential_links(operation_id) if isinstance(r, Run)]

    @router.get("/operations/{operation_id}/potential-links/{paw}")
    def potential_links_of(operation_id: str, paw: str) -> list[dict[str, Any]]:
        op = live(operation_id)
        if paw not in op.agents:
            raise HTTPException(404, detail=f"agent {paw} is not in operation {operation_id}")
        return [_run_view(op, r) for r in service.potential_links(operation_id, paw) if isinstance(r, Run)]

    @router.post("/operations/{operation_id}/potential-links")
    def add_potential_link(operation_id: str, body: PotentialLinkIn) -> dict[str, Any]:
        live(operation_id)
        ability_id = body.ability.ability_id if body.ability else None
        return link_view(
            service.add_link(operation_id, body.paw, body.executor.name, body.executor.command, ability_id)
        )

    @router.post("/operations/{operation_id}/report")
    async def report(operation_id: str, body: ReportRequest | None = None) -> dict[str, Any]:
        output = bool(body and body.enable_agent_output)

        def build() -> dict[str, Any]:
            return read(operation_id, lambda op: operation_report(op, agent_output=output))

        return await run_in_threadpool(build)

    @router.post("/operations/{operation_id}/event-logs")
    async def event_log(operation_id: str, body: ReportRequest | None = None) -> list[dict[str, Any]]:
        output = bool(body and body.enable_agent_output)

        def build() -> list[dict[str, Any]]:
            return read(operation_id, lambda op: event_logs(op, agent_output=output))

        return await run_in_threadpool(build)

    router.include_router(content_router(st))
    router.include_router(knowledge_router(st))
    return router
