"""The native HTTP contact: enrol, a held beacon, and results posted the moment they exist.

A thin adapter over :class:`BeaconCore`: it validates the wire shapes (pydantic), authenticates the agent by
its key, and holds ``POST /agent/beacon`` open until the core reports work for that agent (``on_ready``) or
the agent's ``wait`` runs out. No loop sleeps or polls: a link starts within milliseconds of being planned.

    POST /agent/enrol    {"token", "paw"?, "host", "platform", "executors", "privilege", "group", ...}
                         → {"paw", "key"}
    POST /agent/beacon   Authorization: Bearer <key>; {"wait": seconds} → {"paw", "instructions": [...]}
    POST /agent/results  Authorization: Bearer <key>; {"results": [...]} → {"accepted": [link ids]}
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Header, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from assay.c2._auth import matches
from assay.c2._core import BeaconCore, Instruction
from assay.content import Privilege
from assay.emulation import Agent, LinkStatus, Result
from assay.errors import C2Error

MAX_WAIT = 60.0


class EnrolRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=256)
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
    pid: int | None = Field(default=None, ge=0)
    ppid: int | None = Field(default=None, ge=0)
    location: str = Field(default="", max_length=4096)
    exe_name: str = Field(default="", max_length=255)


class EnrolResponse(BaseModel):
    paw: str
    key: str


class BeaconRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    wait: float = Field(default=25.0, ge=0.0, le=MAX_WAIT)


class InstructionOut(BaseModel):
    id: str
    operation_id: str
    executor: str
    command: str
    timeout: int
    cleanup: bool


class BeaconResponse(BaseModel):
    paw: str
    instructions: list[InstructionOut]


class ResultIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=64)
    status: Literal[0, 1, 124]
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    pid: int | None = Field(default=None, ge=0)
    start_ticks: int | None = Field(default=None, ge=0)
    started_at: float | None = None
    ended_at: float | None = None


class ResultsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    results: list[ResultIn] = Field(max_length=256)


class ResultsResponse(BaseModel):
    accepted: list[str]


def _out(instruction: Instruction) -> InstructionOut:
    return InstructionOut(
        id=instruction.id,
        operation_id=instruction.operation_id,
        executor=instruction.executor,
        command=instruction.command,
        timeout=instruction.timeout,
        cleanup=instruction.cleanup,
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
        self, core: Callable[[], BeaconCore], enrol_digest: Callable[[], str | None], waiters: Waiters
    ):
        self._core = core
        self._enrol_digest = enrol_digest
        self.waiters = waiters

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

        @router.post("/enrol")
        async def enrol(body: EnrolRequest) -> EnrolResponse:
            if not matches(body.token, self._enrol_digest()):
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
                contact="native",
            )
            agent, key = await run_in_threadpool(self._core().enrol, profile)
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
            try:
                while True:
                    event.clear()  # before looking, so a notification in between is not lost
                    if gone.done():
                        # Deliver nothing to a dead socket: the work stays queued for the next beacon.
                        raise HTTPException(499, detail="client went away")
                    instructions = await run_in_threadpool(core.beacon, agent.paw)
                    remaining = deadline - loop.time()
                    if instructions or remaining <= 0:
                        return BeaconResponse(paw=agent.paw, instructions=[_out(i) for i in instructions])
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
            try:
                accepted = await run_in_threadpool(self._core().submit, agent.paw, converted)
            except C2Error as exc:
                raise HTTPException(409, detail=str(exc)) from exc
            return ResultsResponse(accepted=accepted)

        return router
