"""The operation service with an in-memory ledger and a hand clock: deadlines through tick(), the deadline
thread with the real clock, restore after a restart, and storage failures that lose nothing."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

from assay.content import Adversary, Library
from assay.emulation import (
    Agent,
    Fact,
    Link,
    LinkStatus,
    Operation,
    OperationService,
    OperationSettings,
    OperationState,
    Relationship,
    Result,
)
from assay.errors import StorageError
from emulation_helpers import ability


@dataclass
class Ledger:
    """Keeps the last copy of every row written; ``fail`` makes the next N writes raise (a down database)."""

    links: dict[str, Link] = field(default_factory=dict)
    facts: dict[tuple[str, str], Fact] = field(default_factory=dict)
    results: list[tuple[str, bool]] = field(default_factory=list)
    states: dict[str, OperationState] = field(default_factory=dict)
    fail: int = 0

    def _check(self) -> None:
        if self.fail > 0:
            self.fail -= 1
            raise StorageError("database is down (test)")

    def _keep(self, links: Iterable[Link], facts: Iterable[Fact]) -> None:
        for link in links:
            self.links[link.id] = Link(**{k: getattr(link, k) for k in Link.__slots__})  # type: ignore[attr-defined]
        for fact in facts:
            self.facts[fact.key] = fact

    def save_operation(
        self, op: Operation, links: Iterable[Link] = (), *, facts: Iterable[Fact] = (),
        relationships: Iterable[Relationship] = (),
    ) -> None:  # fmt: skip
        self._check()
        self.states[op.id] = op.state
        self._keep(links, facts)

    def save_links(self, links: Iterable[Link]) -> None:
        self._check()
        self._keep(links, ())

    def save_result(
        self, result: Result, paw: str, received_at: float, *, accepted: bool,
        operation: Operation | None = None, links: Iterable[Link] = (), facts: Iterable[Fact] = (),
        relationships: Iterable[Relationship] = (),
    ) -> None:  # fmt: skip
        self._check()
        self.results.append((result.link_id, accepted))
        if operation is not None:
            self.states[operation.id] = operation.state
        self._keep(links, facts)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _library() -> Library:
    lib = Library()
    lib.abilities["a"] = ability("a", command="echo a", timeout=10, cleanup=("undo a",))
    lib.abilities["b"] = ability("b", command="echo b", timeout=10)
    lib.adversaries["adv"] = Adversary("adv", "adv", ("a", "b"))
    return lib


def _service(ledger: Ledger, clock: Clock, woken: list[str] | None = None) -> OperationService:
    ids = itertools.count(1)
    return OperationService(
        ledger, _library(), clock=clock, new_id=lambda: f"id{next(ids)}",
        on_ready=(woken if woken is not None else []).append,
    )  # fmt: skip


def test_deadlines_apply_through_tick_and_the_operation_goes_on() -> None:
    ledger, clock, woken = Ledger(), Clock(), []
    service = _service(ledger, clock, woken)
    settings = OperationSettings(link_grace=5.0, collect_timeout=30.0, jitter=(2, 2))
    op = service.start_operation(name="op", adversary_id="adv", agents=[Agent("p1")], settings=settings)
    assert service.take("p1", clock.now) == []  # jitter: not yet
    assert service.next_deadline() == clock.now + 2
    clock.now += 2
    service.tick()
    assert woken[-1] == "p1"  # the held request is woken when the jitter has passed
    (link,) = service.take("p1", clock.now)
    clock.now += 10 + 5
    service.tick()
    assert ledger.links[link.id].status is LinkStatus.TIMEOUT  # persisted, not only in memory
    (nxt,) = [lk for lk in op.links if lk.ability_id == "b"]
    assert nxt.available_at == clock.now + 2
    assert service.submit("p1", Result(link.id, LinkStatus.SUCCESS, 0), clock.now) is False  # too late
    assert ledger.results[-1] == (link.id, False)


def test_the_deadline_thread_wakes_for_a_deadline_with_the_real_clock() -> None:
    ledger = Ledger()
    lib = _library()
    lib.abilities["a"] = ability("a", command="echo a", timeout=1)
    done = threading.Event()
    service = OperationService(ledger, lib, on_ready=lambda paw: None)
    try:
        settings = OperationSettings(link_grace=0.2)
        op = service.start_operation(name="op", adversary_id="adv", agents=[Agent("p1")], settings=settings)
        (link,) = service.take("p1", time.time())
        started = time.monotonic()
        while time.monotonic() - started < 10 and not done.is_set():
            if link.status is LinkStatus.TIMEOUT:
                done.set()
            time.sleep(0.02)
        took = time.monotonic() - started
    finally:
        service.close()
    assert done.is_set() and 1.0 <= took < 5, took  # timeout 1 s + grace 0.2 s, no polling interval
    assert op.links[1].ability_id == "b"


def test_restore_continues_an_operation_with_fresh_grace_for_links_in_flight() -> None:
    ledger, clock = Ledger(), Clock()
    service = _service(ledger, clock)
    op = service.start_operation(name="op", adversary_id="adv", agents=[Agent("p1")])
    (first,) = service.take("p1", clock.now)
    # A new server (new service) rebuilds the operation from what was stored and takes it back.
    clock.now += 500  # the server was down for longer than the link's timeout
    copy = Operation(op.id, op.name, op.adversary, op.planner, agents=dict(op.agents),
                     links=[ledger.links[lk.id] for lk in op.links])  # fmt: skip
    again = _service(Ledger(), clock)
    (restored,) = again.restore([copy])
    assert restored.link(first.id).status is LinkStatus.EXECUTE  # type: ignore[union-attr]
    assert again.next_deadline() == clock.now + 30  # the downtime does not count against the agent
    assert again.submit("p1", Result(first.id, LinkStatus.SUCCESS, 0), clock.now) is True
    assert [lk.ability_id for lk in restored.links] == ["a", "b"]


def test_a_storage_failure_loses_nothing_the_next_write_sends_everything_again() -> None:
    ledger, clock = Ledger(), Clock()
    service = _service(ledger, clock)
    op = service.start_operation(name="op", adversary_id="adv", agents=[Agent("p1")])
    ledger.fail = 1
    with pytest.raises(StorageError):
        service.take("p1", clock.now)
    (first,) = service.take("p1", clock.now)  # it was not handed out, so it is handed out now
    ledger.fail = 1
    with pytest.raises(StorageError):
        service.submit("p1", Result(first.id, LinkStatus.SUCCESS, 0, stdout="x"), clock.now)
    assert ledger.links[first.id].status is LinkStatus.EXECUTE  # the database is behind...
    # ...until the agent re-sends the result: a duplicate in memory, but the whole operation is written.
    assert service.submit("p1", Result(first.id, LinkStatus.SUCCESS, 0), clock.now) is False
    assert ledger.links[first.id].status is LinkStatus.SUCCESS and ledger.links[first.id].stdout == "x"
    assert {lk.id for lk in op.links} <= set(ledger.links)
