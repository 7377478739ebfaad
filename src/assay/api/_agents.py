"""REST API v2: agents, health, config, contacts, payloads; and Assay's API keys and audit trail.

Caldera's paths and shapes (``../shared/notes/caldera-formats.md`` §D), with the validation Caldera lacks:
``PATCH /agents/{paw}`` refuses a negative, reversed or absurd sleep or watchdog with a 422 naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, Response, UploadFile
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from assay import __version__
from assay.api._content import differs
from assay.api._roles import require
from assay.api._state import API_KEY, ServerState, credential_name
from assay.api._views import agent_view
from assay.c2 import MAX_SLEEP, MAX_WATCHDOG, Principal, Role, new_secret, safe_name, slow_hash
from assay.emulation import Agent

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,47}$"
RED, BLUE, ADMIN = require(Role.RED), require(Role.BLUE), require(Role.ADMIN)
ANY = require(Role.RED, Role.BLUE)  # every role


class ExecutorChange(BaseModel):
    """Caldera's ``executor_change`` in a beacon reply: remove an executor, or point it at another binary."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["remove", "update_path"]
    executor: str = Field(min_length=1, max_length=32)
    value: str | None = Field(default=None, max_length=4096)

    @model_validator(mode="after")
    def _value(self) -> ExecutorChange:
        if self.action == "update_path" and not self.value:
            raise ValueError("'update_path' needs 'value' (the executor's new binary path)")
        if self.action == "remove" and self.value is not None:
            raise ValueError("'remove' takes no 'value'")
        return self


class AgentPatch(BaseModel):
    """Caldera's agent PATCH; applied at the agent's next beacon."""

    model_config = ConfigDict(extra="forbid")
    sleep_min: int | None = Field(default=None, ge=0, le=MAX_SLEEP)
    sleep_max: int | None = Field(default=None, ge=0, le=MAX_SLEEP)
    watchdog: int | None = Field(default=None, ge=0, le=MAX_WATCHDOG)
    group: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[\w.\-]+$")
    trusted: bool | None = None
    pending_contact: str | None = Field(default=None, min_length=1, max_length=32, pattern=r"^[\w.\-]+$")
    executor_change: ExecutorChange | None = None


class AgentsConfigPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sleep_min: int | None = Field(default=None, ge=0, le=MAX_SLEEP)
    sleep_max: int | None = Field(default=None, ge=0, le=MAX_SLEEP)
    watchdog: int | None = Field(default=None, ge=0, le=MAX_WATCHDOG)
    untrusted_timer: int | None = Field(default=None, ge=0, le=MAX_WATCHDOG)
    deadman_abilities: list[Annotated[str, Field(max_length=128)]] | None = Field(default=None, max_length=64)


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=_NAME, description="a name for the key, shown in the audit trail")
    role: Role = Field(description="red: operations and agents; blue: rules and telemetry; admin: keys")


def agents_router(st: ServerState) -> APIRouter:
    router = APIRouter(tags=["agents, health and config"])
    core = st.core

    def view(agent: Agent) -> dict[str, Any]:
        settings = core.settings_of(agent.paw)
        return {
            **agent_view(agent),
            "sleep_min": settings.sleep_min,
            "sleep_max": settings.sleep_max,
            "watchdog": settings.watchdog,
            "status": core.status(agent),
            "pending_kill": settings.pending_kill,
            **{k: v for k, v in settings.profile.items() if k not in ("trusted",)},
        }

    def find(paw: str) -> Agent:
        agent = core.agents.get(paw)
        if agent is None:
            raise HTTPException(404, detail=f"no agent with paw {paw[:64]!r}")
        return agent

    @router.get("/health", dependencies=[ANY])
    def health(request: Request) -> dict[str, Any]:
        principal = getattr(request.state, "assay_principal", None)
        return {
            "application": "assay",
            "version": __version__,
            "access": principal.role.value if isinstance(principal, Principal) else "",
            "plugins": [],
            "abilities": len(st.content.library.abilities),
            "agents": len(core.agents),
            "operations_running": len(core.operations.operations),
            "caldera_compat": st.config.caldera_compat,
            "database": st.store.db.backend,
            "content_errors": [e.to_dict() for e in st.content.errors],
        }

    @router.get("/agents", dependencies=[RED])
    def agents() -> list[dict[str, Any]]:
        return [view(a) for a in list(core.agents.values())]

    @router.get("/agents/{paw}", dependencies=[RED])
    def agent(paw: str) -> dict[str, Any]:
        return view(find(paw))

    @router.patch("/agents/{paw}", dependencies=[RED])
    def patch_agent(paw: str, body: AgentPatch, request: Request, response: Response) -> dict[str, Any]:
        find(paw)
        changes = body.model_dump(exclude_none=True)
        if not changes:
            raise HTTPException(
                422,
                detail="nothing to change: give sleep_min, sleep_max, watchdog, group, trusted, "
                "pending_contact or executor_change",
            )
        differs(response, "executor-change" if "executor_change" in changes else "agent-patch")
        updated = core.update_agent(paw, changes, getattr(request.state, "principal", None))
        return view(updated)

    @router.delete("/agents/{paw}", status_code=204, dependencies=[RED])
    def delete_agent(paw: str, request: Request) -> None:
        """Caldera's delete: the agent, its settings and its queued tasks go (204); an unknown paw is a 404.
        Its links, results and audit rows stay. If it beacons again it registers anew."""
        find(paw)
        core.delete_agent(paw, getattr(request.state, "principal", None))

    @router.post("/agents/kill/{paw}", dependencies=[RED])
    def kill(paw: str, request: Request) -> dict[str, Any]:
        find(paw)
        return view(core.kill(paw, getattr(request.state, "principal", None)))

    @router.get("/config/{name}", dependencies=[ADMIN])
    def config(name: str) -> dict[str, Any]:
        if name == "agents":
            return {**core.defaults.to_dict(), "bootstrap_abilities": []}
        if name == "main":
            # Never a secret: keys and tokens exist only as hashes, and those are not shown either.
            return {
                "host": "see 'assay serve --host'",
                "caldera_compat": st.config.caldera_compat,
                "database": st.store.db.backend,
                "data_dir": str(st.config.data_dir),
                "payload_dirs": [str(p) for p in st.payloads.roots],
                "seen_flush_interval": st.config.seen_flush_interval,
            }
        raise HTTPException(404, detail=f"no config {name[:64]!r} (there are 'main' and 'agents')")

    @router.patch("/config/agents", dependencies=[ADMIN])
    def patch_agents_config(body: AgentsConfigPatch, request: Request) -> dict[str, Any]:
        """Stored before it applies: a restart keeps it (issue 3)."""
        changes = body.model_dump(exclude_none=True)
        d = core.defaults
        low = changes.get("sleep_min", d.sleep_min)
        high = changes.get("sleep_max", d.sleep_max)
        if low > high:
            raise HTTPException(422, detail=f"sleep_min ({low}) is greater than sleep_max ({high})")
        core.update_defaults(changes, getattr(request.state, "principal", None))
        return config("agents")

    @router.get("/contacts", dependencies=[RED])
    def contacts() -> list[dict[str, Any]]:
        counts: dict[str, int] = {}
        for a in list(core.agents.values()):
            counts[a.contact] = counts.get(a.contact, 0) + 1
        return [
            {"name": "native", "paths": ["/agent/enrol", "/agent/beacon", "/agent/results"], "enabled": True,
             "agents": counts.get("native", 0)},
            {"name": "HTTP", "paths": ["/beacon"], "enabled": st.config.caldera_compat,
             "agents": sum(n for c, n in counts.items() if c != "native")},
        ]  # fmt: skip

    # -- payloads --------------------------------------------------------------------------------------------
    @router.get("/payloads", dependencies=[RED])
    def payloads() -> list[dict[str, Any]]:
        return [{"name": p.name, "size": p.size, "sha256": p.sha256} for p in st.payloads.list()]

    @router.post("/payloads", dependencies=[RED])
    async def add_payload(
        file: Annotated[UploadFile, File()], replace: Annotated[bool, Form()] = False
    ) -> dict[str, Any]:
        name = safe_name(file.filename, "file")
        data = await file.read()
        saved = await run_in_threadpool(lambda: st.payloads.add(name, data, replace=replace))
        return {"name": saved.name, "size": saved.size, "sha256": saved.sha256}

    @router.delete("/payloads/{name}", dependencies=[RED])
    def delete_payload(name: str) -> dict[str, str]:
        st.payloads.remove(name)
        return {"deleted": name}

    # -- API keys --------------------------------------------------------------------------------------------
    @router.get("/keys", tags=["Assay: keys and audit"], dependencies=[ADMIN])
    def keys() -> list[dict[str, str]]:
        """Every API key's name and role (never the secret, nor its hash)."""
        found = [p for p in st.keys.principals() if p.kind == "api"]
        return [{"name": p.name, "role": p.role.value} for p in sorted(found, key=lambda p: p.name)]

    @router.post("/keys", tags=["Assay: keys and audit"], dependencies=[ADMIN])
    async def create_key(body: KeyCreate) -> dict[str, str]:
        """A new API key of a role; the secret is in this reply only (it is stored as an scrypt hash)."""
        principal = Principal("api", body.name, body.role)
        if any(p.kind == "api" and p.name == body.name for p in st.keys.principals()):
            raise HTTPException(409, detail=f"a key named {body.name!r} exists already")
        secret = new_secret()
        stored = await run_in_threadpool(slow_hash, secret)  # scrypt: never on the event loop
        await run_in_threadpool(st.store.set_credential, credential_name(principal), stored)
        st.keys.set(principal, stored)
        return {"id": body.name, "name": body.name, "role": body.role.value, "key": secret}

    @router.delete("/keys/{name}", tags=["Assay: keys and audit"], dependencies=[ADMIN])
    def delete_key(name: str) -> dict[str, str]:
        if name == "admin":
            raise HTTPException(
                409, detail="the admin key is replaced with 'assay serve --api-key', not deleted"
            )
        principal = next((p for p in st.keys.principals() if p.kind == "api" and p.name == name), None)
        if principal is None or not any(  # a key made before roles were is stored as api_key:<name>
            st.records.delete_credential(n) for n in (credential_name(principal), f"{API_KEY}:{name}")
        ):
            raise HTTPException(404, detail=f"no key named {name[:64]!r}")
        st.keys.remove(principal)
        return {"deleted": name, "id": name}

    @router.get("/audit", tags=["Assay: keys and audit"], dependencies=[ADMIN])
    def audit(
        operation_id: Annotated[str | None, Query(max_length=64)] = None,
        paw: Annotated[str | None, Query(max_length=64)] = None,
        kind: Annotated[str | None, Query(max_length=32)] = None,
        since: Annotated[float | None, Query(allow_inf_nan=False)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
        offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    ) -> list[dict[str, Any]]:
        """Who did what: dispatched commands (``dispatch``), state-changing API calls and the key behind each
        (``api``), enrolments and registrations, agent changes."""
        entries = st.records.audit_trail(
            operation_id=operation_id, paw=paw, kind=kind, since=since, limit=limit, offset=offset
        )
        return [e.to_dict() for e in entries]

    return router
