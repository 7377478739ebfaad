"""The operation service: live operations, planned the moment something changes, persisted as they change.

Contacts never see operations. The C2 core asks this service what an agent should run (:meth:`take`) and hands
it what came back (:meth:`submit`); the service plans the next link inside that call and, when an agent has
new work, calls ``on_ready(paw)`` so the contact can wake the agent's held request. Every change goes through
the :class:`OperationLedger` before a call returns (a result, the link it finished, the facts it taught and
the links planned next in one write), so storage always holds the current state and :meth:`restore` can
pick an operation up after a crash.

Time-based rules are deadlines, not polling: one thread sleeps until the earliest deadline of any operation
(a jittered link becoming ready, a link whose result is overdue, a cleanup out of time) or until a change may
have brought it forward, then applies it.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from assay.content import BASIC_SOURCE_ID, Library, Safety
from assay.emulation._facts import seed
from assay.emulation._linking import Run, Skip
from assay.emulation._model import Agent, Fact, Link, OperationState, OriginType, Relationship, Result
from assay.emulation._obfuscators import obfuscator
from assay.emulation._operation import Operation
from assay.emulation._planning import planner
from assay.errors import AssayError, EmulationError, Source, StorageError


class OperationLedger(Protocol):
    """Where the service writes operations, links, results and facts (:class:`assay.storage.Store`)."""

    def save_operation(
        self,
        op: Operation,
        links: Iterable[Link] = (),
        *,
        facts: Iterable[Fact] = (),
        relationships: Iterable[Relationship] = (),
    ) -> None: ...

    def save_links(self, links: Iterable[Link]) -> None: ...

    def save_result(
        self,
        result: Result,
        paw: str,
        received_at: float,
        *,
        accepted: bool,
        operation: Operation | None = None,
        links: Iterable[Link] = (),
        facts: Iterable[Fact] = (),
        relationships: Iterable[Relationship] = (),
    ) -> None: ...


def parse_jitter(value: str | Sequence[int] | None) -> tuple[int, int]:
    """Caldera's ``"min/max"`` seconds (or a pair); Assay's default is no jitter."""
    if value is None or value == "":
        return (0, 0)
    if isinstance(value, str):
        low, sep, high = value.partition("/")
        try:
            pair = (int(low), int(high if sep else low))
        except ValueError as exc:
            raise EmulationError(
                f"jitter must be 'min/max' seconds, got {value!r}", Source(field="jitter")
            ) from exc
    else:
        if len(value) != 2:
            raise EmulationError("jitter must be [min, max]", Source(field="jitter"))
        pair = (int(value[0]), int(value[1]))
    if pair[0] < 0 or pair[1] < pair[0] or pair[1] > 3600:
        raise EmulationError(f"jitter must be 0 <= min <= max <= 3600, got {pair}", Source(field="jitter"))
    return pair


@dataclass
class OperationSettings:
    """What a new operation may set beyond adversary and planner (Caldera's fields, and Assay's own)."""

    group: str = ""
    auto_close: bool = True
    autonomous: bool = True
    obfuscator: str = "plain-text"
    jitter: tuple[int, int] = (0, 0)
    visibility: int = 50
    source_id: str | None = None
    max_safety: Safety = Safety.SAFE
    sandbox: bool = False
    state: str = "running"
    facts: Sequence[tuple[str, str, int]] = ()  # (trait, value, score) given with the operation itself
    link_grace: float = 30.0
    collect_timeout: float = 300.0
    objective_id: str | None = None  # None: the adversary's objective (Caldera's default when it has none)
    use_learning_parsers: bool = True


class _Deadlines(threading.Thread):
    """Sleeps until the service's next deadline, or until :meth:`poke` says it may have moved."""

    def __init__(self, service: OperationService) -> None:
        super().__init__(name="assay-operation-deadlines", daemon=True)
        self.service = service
        self._cond = threading.Condition()
        self._dirty = False
        self._stopped = False

    def poke(self) -> None:
        with self._cond:
            self._dirty = True
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def run(self) -> None:
        while True:
            deadline = self.service.next_deadline()  # outside our lock: poke() is called under the service's
            with self._cond:
                if self._stopped:
                    return
                if self._dirty:
                    self._dirty = False
                    continue
                wait = None if deadline is None else deadline - self.service.clock()
                if wait is None or wait > 0:
                    self._cond.wait(wait)
                    woken = self._dirty or self._stopped
                else:
                    woken = False
            if not woken:
                try:
                    self.service.tick()
                except AssayError as exc:  # storage down: say so, and try again at the next deadline
                    print(f"assay: operation deadlines: {exc}", file=sys.stderr, flush=True)


@dataclass
class OperationService:
    """Live operations behind one lock; every public method is safe from any thread."""

    ledger: OperationLedger
    library: Library
    clock: Callable[[], float] = time.time
    new_id: Callable[[], str] = field(default=lambda: str(uuid.uuid4()))
    on_ready: Callable[[str], None] = field(default=lambda paw: None)
    # The deadline thread sleeps in real time, so it only runs with the real clock unless told otherwise;
    # tests with their own clock call tick() themselves.
    timer: bool | None = None

    def __post_init__(self) -> None:
        if self.timer is None:
            self.timer = self.clock is time.time
        self._lock = threading.RLock()
        self.operations: dict[str, Operation] = {}
        self._op_by_link: dict[str, str] = {}
        self._deadlines: _Deadlines | None = None
        # Operations whose last write failed: the next write sends all of their links and facts again, so a
        # storage error never leaves the database behind what the service holds.
        self._unsaved: set[str] = set()

    # -- queries -------------------------------------------------------------------------------------------
    @property
    def lock(self) -> threading.RLock:
        """Hold it to read a live operation consistently (views, reports)."""
        return self._lock

    def get(self, operation_id: str) -> Operation | None:
        return self.operations.get(operation_id)

    def has_work(self, paw: str) -> bool:
        now = self.clock()
        with self._lock:
            return any(op.undelivered(paw, now) for op in self.operations.values())

    def _live(self, operation_id: str) -> Operation:
        op = self.operations.get(operation_id)
        if op is None:
            raise EmulationError(f"no running operation {operation_id!r}")
        return op

    # -- agents --------------------------------------------------------------------------------------------
    def agent_joined(self, agent: Agent) -> None:
        """A new or re-enrolled agent joins every live operation that accepts it."""
        with self._lock:
            for op in list(self.operations.values()):
                if agent.paw in op.agents:
                    op.agents[agent.paw] = agent
                    self._advance(op)
                elif op.accepts(agent):
                    op.add_agent(agent)
                    self._advance(op)

    def take(self, paw: str, now: float) -> list[Link]:
        """Everything ready for ``paw``, exactly once: delivery is recorded before returning."""
        with self._lock:
            out: list[Link] = []
            stamp: float | None = None
            for op in self.operations.values():
                for link in op.undelivered(paw, now):
                    if stamp is None:
                        # Read under the lock: ``now`` was read before it, and a link planned in between
                        # (by another thread) would otherwise be delivered before it was planned.
                        stamp = max(now, self.clock())
                    op.mark_delivered(link, stamp)
                    out.append(link)
            if out:
                try:
                    self.ledger.save_links(out)
                except StorageError:
                    for link in out:  # not recorded, so not handed out: the next beacon tries again
                        link.delegated_at = None
                    raise
                self._poke()  # the result deadlines of these links start now
            return out

    def submit(self, paw: str, result: Result, now: float) -> bool:
        """Record a result and plan what follows at once; ``False`` if the link was not waiting for one."""
        with self._lock:
            op = self.operations.get(self._op_by_link.get(result.link_id, ""))
            link = op.link(result.link_id) if op else None
            if op is None or link is None:
                raise EmulationError("result for an unknown link", Source(agent=paw, link=result.link_id))
            if link.paw != paw:
                raise EmulationError(
                    f"link belongs to agent {link.paw}", Source(agent=paw, link=result.link_id)
                )
            change = op.on_result(result, now)
            if change is None:
                resync = op.id in self._unsaved
                self._write(
                    op,
                    lambda links, facts, rels: self.ledger.save_result(
                        result, paw, now, accepted=False, operation=op if resync else None,
                        links=links, facts=facts, relationships=rels,
                    ),
                )  # fmt: skip
                return False
            touched = op.advance(now, self.new_id)
            self._write(
                op,
                lambda links, facts, rels: self.ledger.save_result(
                    result,
                    paw,
                    now,
                    accepted=True,
                    operation=op,
                    links=links,
                    facts=facts,
                    relationships=rels,
                ),
                [change.link, *touched],
                change.facts,
                change.relationships,
            )
            self._after(op, touched)
            return True

    # -- operations ----------------------------------------------------------------------------------------
    def start_operation(
        self,
        *,
        name: str,
        adversary_id: str,
        agents: Iterable[Agent],
        planner_id: str = "atomic",
        settings: OperationSettings | None = None,
        group: str | None = None,
        auto_close: bool | None = None,
    ) -> Operation:
        opts = settings or OperationSettings()
        if group is not None:
            opts.group = group
        if auto_close is not None:
            opts.auto_close = auto_close
        adversary = self.library.adversary(adversary_id)
        if adversary is None:
            raise EmulationError(
                f"unknown adversary {adversary_id!r}", Source(field="adversary.adversary_id")
            )
        stopping: tuple[tuple[str, str], ...] = ()
        try:
            definition = self.library.planner_definition(planner_id)
            if definition is not None and not definition.runs_as:
                raise EmulationError(
                    f"planner {definition.name!r} ({definition.module}) is loaded as a definition, but Assay "
                    "has no implementation of its module"
                )
            if definition is not None:
                chosen = planner(definition.runs_as, definition.params)
                stopping = definition.stopping_conditions
            else:
                chosen = planner(planner_id)
        except EmulationError as exc:
            raise EmulationError(exc.message, Source(field="planner.id")) from exc
        try:
            objective = self.library.objective(opts.objective_id or adversary.objective)
        except KeyError as exc:
            if opts.objective_id:
                raise EmulationError(
                    f"unknown objective {opts.objective_id!r}", Source(field="objective.id")
                ) from exc
            objective = self.library.objective(None)  # Caldera: an adversary's missing objective → default
        try:
            obfuscator(opts.obfuscator)
        except EmulationError as exc:
            raise EmulationError(exc.message, Source(field="obfuscator")) from exc
        source_id = opts.source_id or BASIC_SOURCE_ID
        source = self.library.source(source_id)  # by id, or by name ("basic", as Caldera's docs write it)
        if source is None and source_id != BASIC_SOURCE_ID:
            known = ", ".join(sorted(f"{s.name} ({s.id})" for s in self.library.sources.values()))
            raise EmulationError(
                f"unknown fact source {source_id!r}; known: {known or 'none'}", Source(field="source.id")
            )
        if source is not None:
            source_id = source.id
        if opts.state not in ("running", "paused", "run_one_link"):
            raise EmulationError(f"an operation starts running, paused or run_one_link, not {opts.state!r}",
                                 Source(field="state"))  # fmt: skip
        if not 1 <= opts.visibility <= 100:
            raise EmulationError("visibility must be 1..100", Source(field="visibility"))
        now = self.clock()
        with self._lock:
            op = Operation(
                id=self.new_id(),
                name=name,
                adversary=adversary,
                planner=chosen,
                abilities=self.library.abilities,
                group=opts.group,
                auto_close=opts.auto_close,
                created_at=now,
                autonomous=opts.autonomous,
                obfuscator=obfuscator(opts.obfuscator).name,
                jitter=opts.jitter,
                visibility=opts.visibility,
                max_safety=opts.max_safety,
                sandbox=opts.sandbox,
                source_id=source_id,
                rules=source.rules if source else (),
                adjustments=source.adjustments if source else (),
                link_grace=opts.link_grace,
                collect_timeout=opts.collect_timeout,
                objective=objective,
                stopping_conditions=stopping,
                use_learning_parsers=opts.use_learning_parsers,
            )
            op.state = OperationState(opts.state)
            facts, relationships = seed(source, now) if source else ([], [])
            facts += [
                Fact(t, v.strip(), s, OriginType.USER, source=op.id, created_at=now) for t, v, s in opts.facts
            ]
            op.add_facts(facts, relationships)
            for agent in agents:
                if op.accepts(agent):
                    op.add_agent(agent)
            self.operations[op.id] = op
            touched = op.advance(now, self.new_id)
            self._save(op, touched, op.facts, op.relationships)
            self._after(op, touched)
            return op

    def close_operation(self, operation_id: str) -> Operation:
        return self.set_state(operation_id, "finished")

    def set_state(self, operation_id: str, state: str) -> Operation:
        with self._lock:
            op = self._live(operation_id)
            changed = op.set_state(state, self.clock())
            self._advance(op, changed)
            return op

    def set_autonomous(self, operation_id: str, autonomous: bool) -> Operation:
        with self._lock:
            op = self._live(operation_id)
            op.autonomous = autonomous
            self._advance(op)
            return op

    def set_obfuscator(self, operation_id: str, name: str) -> Operation:
        with self._lock:
            op = self._live(operation_id)
            try:
                op.set_obfuscator(name)
            except EmulationError as exc:
                raise EmulationError(exc.message, Source(field="obfuscator")) from exc
            self._advance(op)
            return op

    def review_link(
        self, operation_id: str, link_id: str, *, status: int | None, command: str | None
    ) -> Link:
        with self._lock:
            op = self._live(operation_id)
            link = op.review(link_id, self.clock(), status=status, command=command)
            self._advance(op, [link])
            return link

    def add_link(
        self, operation_id: str, paw: str, executor: str, command: str, ability_id: str | None
    ) -> Link:
        with self._lock:
            op = self._live(operation_id)
            link = op.add_manual_link(paw, executor, command, self.clock(), self.new_id, ability_id)
            self._op_by_link[link.id] = op.id
            self._advance(op, [link])
            return link

    def potential_links(self, operation_id: str, paw: str | None = None) -> list[Run | Skip]:
        """What the adversary could run on each agent right now, whatever the planner's turn order."""
        with self._lock:
            op = self._live(operation_id)
            out: list[Run | Skip] = []
            for agent in op.agents.values():
                if paw is not None and agent.paw != paw:
                    continue
                for ability_id in dict.fromkeys(op.adversary.atomic_ordering):
                    result = op.generate(agent, ability_id)
                    out.extend([result] if isinstance(result, Skip) else result)
            return out

    def add_facts(
        self, operation_id: str, facts: Sequence[Fact], relationships: Sequence[Relationship] = ()
    ) -> tuple[list[Fact], list[Relationship]]:
        """Facts a user gives a live operation; planning takes them into account at once."""
        with self._lock:
            op = self._live(operation_id)
            changed, new_rels = op.add_facts(facts, relationships)
            touched = op.advance(self.clock(), self.new_id)
            self._save(op, touched, changed, new_rels)
            self._after(op, touched)
            return changed, new_rels

    def edit_facts(
        self, operation_id: str, remove: Sequence[tuple[str, str]], add: Sequence[Fact]
    ) -> list[Fact]:
        """Replace facts of a live operation (a user's PATCH or DELETE); returns the facts removed, which the
        caller deletes from storage. Planning takes the change into account at once."""
        with self._lock:
            op = self._live(operation_id)
            removed = [f for key in remove if (f := op.knowledge.facts.pop(key, None)) is not None]
            changed, _ = op.add_facts(add)
            touched = op.advance(self.clock(), self.new_id)
            self._save(op, touched, changed)
            self._after(op, touched)
            return removed

    def restore(self, operations: Iterable[Operation]) -> list[Operation]:
        """Take back operations that were live when the server stopped (or died), and continue them."""
        now = self.clock()
        restored: list[Operation] = []
        with self._lock:
            for op in operations:
                if op.done or op.id in self.operations:
                    continue
                op.abilities = self.library.abilities
                op.resumed_at = now
                self.operations[op.id] = op
                for link in op.links:
                    self._op_by_link[link.id] = op.id
                restored.append(op)
                self._advance(op)
        return restored

    # -- time ----------------------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        now = self.clock()
        with self._lock:
            times = [d for op in self.operations.values() if (d := op.next_deadline(now)) is not None]
        return min(times) if times else None

    def tick(self) -> None:
        """Apply every deadline that has passed (called by the deadline thread, or by tests)."""
        now = self.clock()
        with self._lock:
            failed: list[str] = []
            for op in list(self.operations.values()):
                deadline = op.next_deadline(now)
                if deadline is None or deadline > now:
                    continue
                changed, ready = op.on_time(now)
                touched = op.advance(now, self.new_id)
                try:
                    self._save(op, [*changed, *touched])
                except StorageError as exc:  # the other operations' deadlines still apply
                    failed.append(f"operation {op.id}: {exc}")
                for paw in ready:
                    self.on_ready(paw)
                self._after(op, touched)
            if failed:
                raise StorageError("; ".join(failed))

    def close(self) -> None:
        if self._deadlines is not None:
            self._deadlines.stop()
            self._deadlines.join(timeout=5)
            self._deadlines = None

    def _poke(self) -> None:
        if not self.timer:
            return
        if self._deadlines is None:
            self._deadlines = _Deadlines(self)
            self._deadlines.start()
        self._deadlines.poke()

    # -- internals -----------------------------------------------------------------------------------------
    def _advance(self, op: Operation, changed: Sequence[Link] = ()) -> None:
        """Plan, persist, and wake the agents that now have work. Called with the lock held."""
        touched = op.advance(self.clock(), self.new_id)
        self._save(op, [*changed, *touched])
        self._after(op, [*changed, *touched])

    def _save(
        self,
        op: Operation,
        links: Sequence[Link],
        facts: Sequence[Fact] = (),
        rels: Sequence[Relationship] = (),
    ) -> None:
        self._write(
            op,
            lambda ls, fs, rs: self.ledger.save_operation(op, ls, facts=fs, relationships=rs),
            links,
            facts,
            rels,
        )

    def _write(
        self,
        op: Operation,
        write: Callable[[Sequence[Link], Sequence[Fact], Sequence[Relationship]], None],
        links: Sequence[Link] = (),
        facts: Sequence[Fact] = (),
        rels: Sequence[Relationship] = (),
    ) -> None:
        if op.id in self._unsaved:
            links, facts, rels = op.links, op.facts, op.relationships
        try:
            write(links, facts, rels)
        except StorageError:
            self._unsaved.add(op.id)
            raise
        self._unsaved.discard(op.id)

    def _after(self, op: Operation, touched: Sequence[Link]) -> None:
        for link in touched:
            self._op_by_link[link.id] = op.id
        for paw in sorted(op.announce(self.clock())):
            self.on_ready(paw)
        if op.done:
            # A finished operation leaves memory; its record stays in the ledger.
            for link in op.links:
                self._op_by_link.pop(link.id, None)
            self.operations.pop(op.id, None)
        self._poke()
