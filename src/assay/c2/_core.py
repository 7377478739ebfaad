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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from assay.c2._auth import digest, new_secret
from assay.emulation import Agent, Link, Operation, OperationService, OperationState, Result
from assay.errors import C2Error, EmulationError, Source

_PAW_CHARS = re.compile(r"[^\w.\-]")


class Ledger(Protocol):
    """Where the core writes agents as they change (:class:`assay.storage.Store`, :class:`MemoryLedger`)."""

    def save_agent(self, agent: Agent, key_digest: str | None = None) -> None: ...
    def agents(self) -> list[Agent]: ...
    def agent_key_digest(self, paw: str) -> str | None: ...


@dataclass
class MemoryLedger:
    """In-memory :class:`Ledger` and :class:`~assay.emulation.OperationLedger`; tests need no database."""

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

    def save_operation(self, op: Operation, links: Iterable[Link] = (), **_facts: object) -> None:
        self.operation_rows[op.id] = op.state
        self.save_links(links)

    def save_links(self, links: Iterable[Link]) -> None:
        for link in links:
            self.link_rows[link.id] = link

    def save_result(
        self,
        result: Result,
        paw: str,
        received_at: float,
        *,
        accepted: bool,
        operation: Operation | None = None,
        links: Iterable[Link] = (),
        **_facts: object,
    ) -> None:
        self.result_rows.append((result, paw, received_at, accepted))
        if operation is not None:
            self.operation_rows[operation.id] = operation.state
        self.save_links(links)


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
    """Agents, their keys, and the hand-over of work; operations live in :class:`OperationService`.

    Every public method is safe from any thread.
    """

    def __init__(
        self,
        ledger: Ledger,
        operations: OperationService,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.operations = operations
        self.clock = clock
        self._lock = threading.RLock()
        self.agents: dict[str, Agent] = {a.paw: a for a in ledger.agents()}
        self._paw_by_key: dict[str, str] = {}
        for paw in self.agents:
            key = ledger.agent_key_digest(paw)
            if key:
                self._paw_by_key[key] = paw

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
        self.operations.agent_joined(profile)
        return profile, key

    def agent_for_key(self, key: str) -> Agent:
        paw = self._paw_by_key.get(digest(key))
        if paw is None:
            raise C2Error("unknown agent key (enrol again)")
        return self.agents[paw]

    def has_work(self, paw: str) -> bool:
        return self.operations.has_work(paw)

    def beacon(self, paw: str) -> list[Instruction]:
        """Hand out everything waiting for ``paw``, exactly once (delivery is recorded before returning)."""
        now = self.clock()
        with self._lock:
            agent = self.agents.get(paw)
            if agent is None:
                raise C2Error("unknown agent", Source(agent=paw))
            agent.last_seen = now
        return [_instruction(lk) for lk in self.operations.take(paw, now)]

    def submit(self, paw: str, results: Sequence[Result]) -> list[str]:
        """Record results (the next links are planned at once); returns the ids not already finished."""
        now = self.clock()
        accepted: list[str] = []
        for result in results:
            try:
                if self.operations.submit(paw, result, now):
                    accepted.append(result.link_id)
            except EmulationError as exc:
                raise C2Error(exc.message, exc.source) from exc
        return accepted

    # -- operations (the agents the core knows join them) ----------------------------------------------------
    def start_operation(
        self,
        *,
        name: str,
        adversary_id: str,
        planner_id: str = "atomic",
        group: str = "",
        auto_close: bool = True,
    ) -> Operation:
        with self._lock:
            agents = list(self.agents.values())
        return self.operations.start_operation(
            name=name,
            adversary_id=adversary_id,
            agents=agents,
            planner_id=planner_id,
            group=group,
            auto_close=auto_close,
        )
