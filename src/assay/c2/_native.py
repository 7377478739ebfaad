"""The native HTTP contact: enrol, a held beacon, and results posted the moment they exist.

A thin adapter over :class:`BeaconCore`: it validates the wire shapes (pydantic), authenticates the agent by
its key, and holds ``POST /agent/beacon`` open until the core reports work for that agent (``on_ready``) or
the agent's ``wait`` runs out. No loop sleeps or polls: a link starts within milliseconds of being planned.

    POST /agent/enrol    {"token", "paw"?, "host", "platform", "executors", "privilege", "group", ...}
                         → {"paw", "key"}
    POST /agent/beacon   Authorization: Bearer <key>; {"wait": seconds}
                         → {"paw", "instructions": [...], "kill": bool}
    POST /agent/results  Authorization: Bearer <key>; {"results": [...]}
                         → {"acknowledged", "accepted", "duplicates", "rejected": [{"id", "reason"}]}

Results are acknowledged by link id. An agent keeps every result until the server has acknowledged it and
sends it again after a reconnect; the server records a re-sent result once (``duplicates``), and says which
ones it will never take (``rejected``, with the reason) so the agent can drop them too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Header, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from assay.c2._auth import KeyRing
from assay.c2._core import BeaconCore
from assay.c2._model import Instruction, Refused, ResultState
from assay.c2._payloads import PayloadStore
from assay.content import Privilege
from assay.emulation import Agent, LinkStatus, Result
from assay.errors import C2Error

MAX_WAIT = 60.0


class EnrolRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=256)
    deadman_enabled: bool = False
    paw: str | None = Field(default=None, max_length=64)
    host: str = Field(default="", max_length=255)
    platform: str = Field(default="linux", max_length=32)
    executors: list[Annotated[str, Field(max_length=32)]] = Field(
        default_factory=lambda: ["sh"], max_length=16
    )
    privilege: Literal["User", "Elevated"] = "User"
    group: str = Field(default="red", max_length=64)
    username: str = Field(default="", max_length=255)
    architecture: str = Field(default="", max_length=64)
    pid: int | None = Field(default=None, ge=0, le=2**31 - 1)
    ppid: int | None = Field(default=None, ge=0, le=2**31 - 1)
    location: str = Field(default="", max_length=4096)
    exe_name: str = Field(default="", max_length=255)
    # The sandbox id the agent runs in (assay.sandbox sets ASSAY_SANDBOX), or None on the bare host.
    sandbox: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")


class EnrolResponse(BaseModel):
    paw: str
    key: str


class BeaconRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    wait: float = Field(default=25.0, ge=0.0, le=MAX_WAIT)


class PayloadOut(BaseModel):
    name: str
    sha256: str | None  # None: the server has no such file (the agent reports it, like Sandcat)
    size: int | None


class InstructionOut(BaseModel):
    id: str
    operation_id: str
    executor: str
    command: str
    timeout: int
    cleanup: bool
    payloads: list[PayloadOut] = []
    deadman: bool = False
    delete_payload: bool = True


class BeaconResponse(BaseModel):
    paw: str
    instructions: list[InstructionOut]
    kill: bool = False  # the operator killed this agent: run deadman instructions and exit


class ResultIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=64)
    status: Literal[0, 1, 124]
    exit_code: int | None = Field(default=None, ge=-(2**31), le=2**31 - 1)
    stdout: str = Field(default="", max_length=4 * 1024 * 1024)
    stderr: str = Field(default="", max_length=4 * 1024 * 1024)
    pid: int | None = Field(default=None, ge=0, le=2**31 - 1)
    start_ticks: int | None = Field(default=None, ge=0, le=2**63 - 1)
    started_at: float | None = Field(default=None, allow_inf_nan=False)
    ended_at: float | None = Field(default=None, allow_inf_nan=False)


class ResultsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    results: list[ResultIn] = Field(max_length=256)


class Rejection(BaseModel):
    id: str
    reason: str


class ResultsResponse(BaseModel):
    acknowledged: list[str]  # every id the agent may forget
    accepted: list[str]
    duplicates: list[str]
    rejected: list[Rejection]


def _out(instruction: Instruction, payloads: PayloadStore) -> InstructionOut:
    described = []
    for name in instruction.payloads:
        try:
            found = payloads.find(name)
        except Refused:
            found = None  # a bad name in content: the agent reports the payload as unavailable
        described.append(
            PayloadOut(name=name, sha256=found.sha256 if found else None, size=found.size if found else None)
        )
    return InstructionOut(
        id=instruction.id,
        operation_id=instruction.operation_id,
        executor=instruction.executor,
        command=instruction.command,
        timeout=instruction.timeout,
        cleanup=instruction.cleanup,
        payloads=described,
        deadman=instruction.deadman,
        delete_payload=instruction.delete_payload,
    )


async def _disconnected(request: Request) -> None:
    """Returns when the client hangs up (the body is already read, so only ``http.disconnect`` can come)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class Waiters:
    """One asyncio event per agent, set from any thread when the core has work for it."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def event(self, paw: str) -> asyncio.Event:
        ev = self._events.get(paw)
        if ev is None:
            ev = self._events[paw] = asyncio.Event()
        return ev

    def notify(self, paw: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # nobody can be waiting: the next beacon collects the work
        loop.call_soon_threadsafe(self.event(paw).set)


class NativeContact:
    def __init__(
        self,
        core: Callable[[], BeaconCore],
        keys: KeyRing,
        waiters: Waiters,
        payloads: Callable[[], PayloadStore],
    ):
        self._core = core
        self._keys = keys
        self.waiters = waiters
        self._payloads = payloads

    async def _enrol_token_ok(self, token: str) -> bool:
        hit = self._keys.cached(token)
        if hit is None:  # first use of this secret: the slow hash, off the event loop
            hit = await run_in_threadpool(self._keys.verify, token, "enrol")
        return bool(hit) and getattr(hit, "kind", None) == "enrol"

    def _agent(self, authorization: str | None) -> Agent:
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise HTTPException(401, detail="agent key required: Authorization: Bearer <key>")
        try:
            return self._core().agent_for_key(key.strip())
        except C2Error as exc:
            raise HTTPException(401, detail=exc.message) from exc

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/agent", tags=["agent contact (native)"])

        @router.get("/assay-agent.pyz", response_model=None)
        async def zipapp(authorization: Annotated[str | None, Header()] = None) -> Response:
            """The agent as a zipapp, for ``assay agent deploy-command``; needs the enrolment token."""
            scheme, _, token = (authorization or "").partition(" ")
            if scheme.lower() != "bearer" or not await self._enrol_token_ok(token.strip()):
                raise HTTPException(401, detail="enrolment token required: Authorization: Bearer <token>")
            from assay.agent._build import zipapp_bytes

            data = await run_in_threadpool(zipapp_bytes)
            return Response(
                data,
                media_type="application/zip",
                headers={"Content-Disposition": 'attachment; filename="assay-agent.pyz"'},
            )

        @router.post("/enrol")
        async def enrol(body: EnrolRequest) -> EnrolResponse:
            if not await self._enrol_token_ok(body.token):
                raise HTTPException(401, detail="invalid enrolment token")
            profile = Agent(
                paw=body.paw or "",
                host=body.host,
                platform=body.platform.lower(),
                executors=tuple(body.executors),
                privilege=Privilege(body.privilege),
                group=body.group,
                username=body.username,
                architecture=body.architecture,
                pid=body.pid,
                ppid=body.ppid,
                location=body.location,
                exe_name=body.exe_name,
                sandbox=body.sandbox,
                contact="native",
            )
            agent, key = await run_in_threadpool(
                lambda: self._core().enrol(profile, deadman=body.deadman_enabled)
            )
            return EnrolResponse(paw=agent.paw, key=key)

        @router.post("/beacon")
        async def beacon(
            body: BeaconRequest, request: Request, authorization: Annotated[str | None, Header()] = None
        ) -> BeaconResponse:
            agent = self._agent(authorization)
            core = self._core()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + body.wait
            event = self.waiters.event(agent.paw)
            gone = asyncio.ensure_future(_disconnected(request))
            payloads = self._payloads()
            try:
                while True:
                    event.clear()  # before looking, so a notification in between is not lost
                    if gone.done():
                        # Deliver nothing to a dead socket: the work stays queued for the next beacon.
                        raise HTTPException(499, detail="client went away")
                    if agent.paw not in core.agents:
                        # Deleted through the API while held (its key is gone): the agent enrols again.
                        raise HTTPException(401, detail="this agent was deleted; enrol again")
                    if core.kill_pending(agent.paw):
                        await run_in_threadpool(core.kill_delivered, agent.paw)  # stored: off the loop
                        return BeaconResponse(paw=agent.paw, instructions=[], kill=True)
                    if core.may_have_work(agent.paw):
                        instructions = await run_in_threadpool(core.beacon, agent.paw)
                    else:
                        core.seen(agent.paw)
                        instructions = []
                    remaining = deadline - loop.time()
                    if instructions or remaining <= 0:
                        return BeaconResponse(
                            paw=agent.paw, instructions=[_out(i, payloads) for i in instructions]
                        )
                    woken = asyncio.ensure_future(event.wait())
                    await asyncio.wait({woken, gone}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                    woken.cancel()
            finally:
                gone.cancel()

        @router.post("/results")
        async def results(
            body: ResultsRequest, authorization: Annotated[str | None, Header()] = None
        ) -> ResultsResponse:
            agent = self._agent(authorization)
            converted = [
                Result(
                    link_id=r.id,
                    status=LinkStatus(r.status),
                    exit_code=r.exit_code,
                    stdout=r.stdout,
                    stderr=r.stderr,
                    pid=r.pid,
                    start_ticks=r.start_ticks,
                    started_at=r.started_at,
                    ended_at=r.ended_at,
                )
                for r in body.results
            ]
            outcomes = await run_in_threadpool(self._core().submit, agent.paw, converted)
            return ResultsResponse(
                acknowledged=[o.link_id for o in outcomes],
                accepted=[o.link_id for o in outcomes if o.state is ResultState.ACCEPTED],
                duplicates=[o.link_id for o in outcomes if o.state is ResultState.DUPLICATE],
                rejected=[
                    Rejection(id=o.link_id, reason=o.reason)
                    for o in outcomes
                    if o.state is ResultState.REJECTED
                ],
            )

        return router
