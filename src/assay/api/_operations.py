"""REST API v2 routes for content and operations (Caldera's paths and shapes)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from assay.api._state import ServerState
from assay.api._views import ability_view, adversary_view, link_view, live_record, operation_view


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


def _operation_json(st: ServerState, operation_id: str) -> dict[str, Any]:
    live = st.core.operations.get(operation_id)
    record = live_record(live) if live else st.store.operation(operation_id)
    if record is None:
        raise HTTPException(404, detail=f"no operation {operation_id!r}")
    agents = [a for a in (st.store.agent(p) for p in record.agents) if a is not None]
    links = st.store.links(operation_id)
    return operation_view(record, links, agents, st.content.library.adversary(record.adversary_id))


def operations_router(st: ServerState) -> APIRouter:
    router = APIRouter(tags=["content and operations"])

    @router.get("/abilities")
    def abilities() -> list[dict[str, Any]]:
        return [ability_view(a) for a in st.content.library.abilities.values()]

    @router.get("/adversaries")
    def adversaries() -> list[dict[str, Any]]:
        return [adversary_view(a) for a in st.content.library.adversaries.values()]

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

    return router
