"""The transport-agnostic beacon core: enrolment, tasking and results, whatever contact carries them.

Contacts (the native held-request contact now; Caldera's ``/beacon`` in issue 4) are thin adapters that
decode a request, call the core, and encode its answer. The core never waits: when new work exists for an
agent it calls ``on_ready(paw)``, and the adapter wakes that agent's held request. Every change is written
through the :class:`Ledger` before a call returns, so the database always holds the current state.
"""

from __future__ import annotations

import re
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from assay.c2._auth import digest, new_secret
from assay.content import Library
from assay.emulation import Agent, Link, Operation, OperationState, Result, planner
from assay.errors import C2Error, EmulationError, Source

_PAW_CHARS = re.compile(r"[^\w.\-]")


class Ledger(Protocol):
    """Where the core writes state as it changes (:class:`assay.storage.Store`, or :class:`MemoryLedger`)."""

    def save_agent(self, agent: Agent, key_digest: str | None = None) -> None: ...
    def agents(self) -> list[Agent]: ...
    def agent_key_digest(self, paw: str) -> str | None: ...
    def save_operation(self, op: Operation, links: Iterable[Link] = ()) -> None: ...
    def save_links(self, links: Iterable[Link]) -> None: ...
    def save_result(self, result: Result, paw: str, received_at: float, *, accepted: bool) -> None: ...


@dataclass
class MemoryLedger:
    """In-memory :class:`Ledger` for tests of the core and its contacts without a database."""

    agent_rows: dict[str, tuple[Agent, str | None]] = field(default_factory=dict)
    operation_rows: dict[str, OperationState] = field(default_factory=dict)
    link_rows: dict[str, Link] = field(default_factory=dict)
    result_rows: list[tuple[Result, str, float, bool]] = field(default_factory=list)

    def save_agent(self, agent: Agent, key_digest: str | None = None) -> None:
        old = self.agent_rows.get(agent.paw)
        self.agent_rows[agent.paw] = (
            agent,
            key_digest if key_digest is not None else (old[1] if old else None),
        )

    def agents(self) -> list[Agent]:
        return [a for a, _ in self.agent_rows.values()]

    def agent_key_digest(self, paw: str) -> str | None:
        row = self.agent_rows.get(paw)
        return row[1] if row else None

    def save_operation(self, op: Operation, links: Iterable[Link] = ()) -> None:
        self.operation_rows[op.id] = op.state
        self.save_links(links)

    def save_links(self, links: Iterable[Link]) -> None:
        for link in links:
            self.link_rows[link.id] = link

    def save_result(self, result: Result, paw: str, received_at: float, *, accepted: bool) -> None:
        self.result_rows.append((result, paw, received_at, accepted))


@dataclass(frozen=True, slots=True)
class Instruction:
    """One command for an agent; ``command`` is plain text, contacts encode it as their protocol wants."""

    id: str
    operation_id: str
    executor: str
    command: str
    timeout: int
    cleanup: bool


def _instruction(link: Link) -> Instruction:
    return Instruction(link.id, link.operation_id, link.executor, link.command, link.timeout, link.cleanup)


def clean_paw(paw: str | None) -> str:
    """Caldera's rule: characters outside ``[\\w.-]`` are dropped; empty → 6 random lowercase letters."""
    cleaned = _PAW_CHARS.sub("", paw or "")[:64]
    return cleaned or "".join(secrets.choice(string.ascii_lowercase) for _ in range(6))


class BeaconCore:
    """State of agents and live operations, behind one lock; every public method is safe from any thread."""

    def __init__(
        self,
        ledger: Ledger,
        library: Library,
        *,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        on_ready: Callable[[str], None] = lambda paw: None,
    ) -> None:
        self.ledger = ledger
        self.library = library
        self.clock = clock
        self.new_id = new_id
        self.on_ready = on_ready
        self._lock = threading.RLock()
        self.agents: dict[str, Agent] = {a.paw: a for a in ledger.agents()}
        self._paw_by_key: dict[str, str] = {}
        for paw in self.agents:
            key = ledger.agent_key_digest(paw)
            if key:
                self._paw_by_key[key] = paw
        self.operations: dict[str, Operation] = {}
        self._op_by_link: dict[str, str] = {}

    # -- agents --------------------------------------------------------------------------------------------
    def enrol(self, profile: Agent) -> tuple[Agent, str]:
        """(Re-)register an agent; returns it and a new per-agent key (only its digest is kept)."""
        now = self.clock()
        with self._lock:
            profile.paw = clean_paw(profile.paw)
            old = self.agents.get(profile.paw)
            profile.created_at = old.created_at if old else now
            profile.last_seen = now
            key = new_secret()
            key_digest = digest(key)
            for stale in [k for k, p in self._paw_by_key.items() if p == profile.paw]:
                del self._paw_by_key[stale]  # re-enrolment revokes the previous key
            self.agents[profile.paw] = profile
            self._paw_by_key[key_digest] = profile.paw
            self.ledger.save_agent(profile, key_digest)
            for op in self.operations.values():
                if op.accepts(profile):
                    op.add_agent(profile)
                    self._advance(op)
            return profile, key

    def agent_for_key(self, key: str) -> Agent:
        paw = self._paw_by_key.get(digest(key))
        if paw is None:
            raise C2Error("unknown agent key (enrol again)")
        return self.agents[paw]

    def has_work(self, paw: str) -> bool:
        with self._lock:
            return any(op.undelivered(paw) for op in self.operations.values())

    def beacon(self, paw: str) -> list[Instruction]:
        """Hand out everything waiting for ``paw``, exactly once (delivery is recorded before returning)."""
        now = self.clock()
        with self._lock:
            agent = self.agents.get(paw)
            if agent is None:
                raise C2Error("unknown agent", Source(agent=paw))
            agent.last_seen = now
            out: list[Link] = []
            for op in self.operations.values():
                for link in op.undelivered(paw):
                    op.mark_delivered(link, now)
                    out.append(link)
            if out:
                self.ledger.save_links(out)
            return [_instruction(lk) for lk in out]

    def submit(self, paw: str, results: Sequence[Result]) -> list[str]:
        """Record results and plan what follows at once; returns the ids accepted (not already finished)."""
        now = self.clock()
        accepted: list[str] = []
        with self._lock:
            for result in results:
                op = self.operations.get(self._op_by_link.get(result.link_id, ""))
                link = op.link(result.link_id) if op else None
                if op is None or link is None:
                    raise C2Error("result for an unknown link", Source(agent=paw, link=result.link_id))
                if link.paw != paw:
                    raise C2Error(f"link belongs to agent {link.paw}", Source(agent=paw, link=result.link_id))
                changed = op.on_result(result, now)
                self.ledger.save_result(result, paw, now, accepted=changed is not None)
                if changed is None:
                    continue
                accepted.append(result.link_id)
                self.ledger.save_links([changed])
                self._advance(op)
        return accepted

    # -- operations ----------------------------------------------------------------------------------------
    def start_operation(
        self,
        *,
        name: str,
        adversary_id: str,
        planner_id: str = "atomic",
        group: str = "",
        auto_close: bool = True,
    ) -> Operation:
        adversary = self.library.adversary(adversary_id)
        if adversary is None:
            raise EmulationError(
                f"unknown adversary {adversary_id!r}", Source(field="adversary.adversary_id")
            )
        try:
            chosen = planner(planner_id)
        except EmulationError as exc:
            raise EmulationError(exc.message, Source(field="planner.id")) from exc
        with self._lock:
            op = Operation(
                id=self.new_id(),
                name=name,
                adversary=adversary,
                planner=chosen,
                group=group,
                auto_close=auto_close,
                created_at=self.clock(),
            )
            for agent in self.agents.values():
                if op.accepts(agent):
                    op.add_agent(agent)
            self.operations[op.id] = op
            self.ledger.save_operation(op)
            self._advance(op)
            return op

    def close_operation(self, operation_id: str) -> Operation:
        with self._lock:
            op = self.operations.get(operation_id)
            if op is None:
                raise EmulationError(f"no running operation {operation_id!r}")
            op.request_close()
            self._advance(op)
            return op

    def _advance(self, op: Operation) -> None:
        """Plan, persist, and wake the agents that now have work. Called with the lock held."""
        created = op.advance(self.library.abilities, self.clock(), self.new_id)
        for link in created:
            self._op_by_link[link.id] = op.id
        self.ledger.save_operation(op, created)
        for paw in dict.fromkeys(lk.paw for lk in created if lk.in_flight):
            self.on_ready(paw)
        if op.done:
            # A finished operation leaves memory; its record stays in the ledger.
            for link in op.links:
                self._op_by_link.pop(link.id, None)
            self.operations.pop(op.id, None)
