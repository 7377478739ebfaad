"""The operation service: live operations, planned the moment something changes, persisted as they change.

Contacts never see operations. The C2 core asks this service what an agent should run (:meth:`take`) and hands
it what came back (:meth:`submit`); the service plans the next link inside that call and, when an agent has
new work, calls ``on_ready(paw)`` so the contact can wake the agent's held request. Every change goes through
the :class:`OperationLedger` before a call returns, so storage always holds the current state.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Protocol

from assay.content import Library
from assay.emulation._model import Agent, Link, Result
from assay.emulation._operation import Operation
from assay.emulation._planning import planner
from assay.errors import EmulationError, Source


class OperationLedger(Protocol):
    """Where the service writes operations, links and results (:class:`assay.storage.Store` in the server)."""

    def save_operation(self, op: Operation, links: Iterable[Link] = ()) -> None: ...
    def save_links(self, links: Iterable[Link]) -> None: ...
    def save_result(self, result: Result, paw: str, received_at: float, *, accepted: bool) -> None: ...


class OperationService:
    """Live operations behind one lock; every public method is safe from any thread."""

    def __init__(
        self,
        ledger: OperationLedger,
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
        self.operations: dict[str, Operation] = {}
        self._op_by_link: dict[str, str] = {}

    # -- queries -------------------------------------------------------------------------------------------
    def get(self, operation_id: str) -> Operation | None:
        return self.operations.get(operation_id)

    def has_work(self, paw: str) -> bool:
        with self._lock:
            return any(op.undelivered(paw) for op in self.operations.values())

    # -- agents --------------------------------------------------------------------------------------------
    def agent_joined(self, agent: Agent) -> None:
        """A new or re-enrolled agent joins every live operation that accepts it."""
        with self._lock:
            for op in list(self.operations.values()):
                if op.accepts(agent):
                    op.add_agent(agent)
                    self._advance(op)

    def take(self, paw: str, now: float) -> list[Link]:
        """Everything waiting for ``paw``, exactly once: delivery is recorded before returning."""
        with self._lock:
            out: list[Link] = []
            stamp: float | None = None
            for op in self.operations.values():
                for link in op.undelivered(paw):
                    if stamp is None:
                        # Read under the lock: ``now`` was read before it, and a link planned in between
                        # (by another thread) would otherwise be delivered before it was planned.
                        stamp = max(now, self.clock())
                    op.mark_delivered(link, stamp)
                    out.append(link)
            if out:
                self.ledger.save_links(out)
            return out

    def submit(self, paw: str, result: Result, now: float) -> bool:
        """Record a result and plan what follows at once; ``False`` if the link already had one."""
        with self._lock:
            op = self.operations.get(self._op_by_link.get(result.link_id, ""))
            link = op.link(result.link_id) if op else None
            if op is None or link is None:
                raise EmulationError("result for an unknown link", Source(agent=paw, link=result.link_id))
            if link.paw != paw:
                raise EmulationError(
                    f"link belongs to agent {link.paw}", Source(agent=paw, link=result.link_id)
                )
            changed = op.on_result(result, now)
            self.ledger.save_result(result, paw, now, accepted=changed is not None)
            if changed is None:
                return False
            self.ledger.save_links([changed])
            self._advance(op)
            return True

    # -- operations ----------------------------------------------------------------------------------------
    def start_operation(
        self,
        *,
        name: str,
        adversary_id: str,
        agents: Iterable[Agent],
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
            for agent in agents:
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
