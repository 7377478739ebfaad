"""The beacon core with an in-memory ledger and a fake clock: no database, no network."""

from __future__ import annotations

import itertools

import pytest

from assay.c2 import BeaconCore, MemoryLedger, ResultOutcome, clean_paw, digest
from assay.content import Ability, Adversary, Executor, Library
from assay.emulation import Agent, LinkStatus, OperationService, OperationState, Result
from assay.errors import C2Error, EmulationError


def _library() -> Library:
    lib = Library()
    for aid, cleanup in (("a", ("undo a",)), ("b", ())):
        lib.abilities[aid] = Ability(aid, aid, "discovery", "T1082", "System Information Discovery",
                                     (Executor("sh", "linux", f"echo {aid}", cleanup),))  # fmt: skip
    lib.adversaries["adv"] = Adversary("adv", "adv", ("a", "b"))
    return lib


def states(outcomes: list[ResultOutcome]) -> list[tuple[str, str]]:
    return [(o.link_id, str(o.state)) for o in outcomes]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 0.5
        return self.now


@pytest.fixture
def core() -> tuple[BeaconCore, MemoryLedger, list[str]]:
    ledger = MemoryLedger()
    woken: list[str] = []
    ids = itertools.count(1)
    clock = Clock()
    service = OperationService(
        ledger, _library(), clock=clock, new_id=lambda: f"id{next(ids)}", on_ready=woken.append
    )
    c = BeaconCore(ledger, service, clock=clock)
    return c, ledger, woken


def test_enrol_beacon_submit_runs_an_operation_to_the_end(
    core: tuple[BeaconCore, MemoryLedger, list[str]],
) -> None:
    c, ledger, woken = core
    agent, key = c.enrol(Agent("", host="h", group="red"))
    assert len(agent.paw) == 6 and agent.paw.isalpha()
    assert ledger.agent_key_digest(agent.paw) == digest(key) != key
    assert c.agent_for_key(key).paw == agent.paw
    assert c.beacon(agent.paw) == []
    op = c.start_operation(name="op", adversary_id="adv", group="red")
    assert woken == [agent.paw]  # the held beacon is woken, no timer involved
    (first,) = c.beacon(agent.paw)
    assert (first.command, first.executor, first.cleanup) == ("echo a", "sh", False)
    assert c.beacon(agent.paw) == []  # delivered exactly once
    assert ledger.link_rows[first.id].delegated_at is not None  # recorded before it was handed out
    assert states(c.submit(agent.paw, [Result(first.id, LinkStatus.SUCCESS, 0, pid=10, start_ticks=5)])) == [
        (first.id, "accepted")
    ]
    (second,) = c.beacon(agent.paw)
    assert second.command == "echo b"
    # a re-sent result is acknowledged as a duplicate and changes nothing
    assert states(c.submit(agent.paw, [Result(first.id, LinkStatus.SUCCESS, 0)])) == [(first.id, "duplicate")]
    c.submit(agent.paw, [Result(second.id, LinkStatus.ERROR, 2)])
    (cleanup,) = c.beacon(agent.paw)
    assert (cleanup.command, cleanup.cleanup) == ("undo a", True)
    c.submit(agent.paw, [Result(cleanup.id, LinkStatus.SUCCESS, 0)])
    assert ledger.operation_rows[op.id] is OperationState.FINISHED
    assert c.operations.get(op.id) is None  # finished operations leave memory, their records stay
    assert [accepted for *_, accepted in ledger.result_rows] == [True, False, True, True]


def test_agents_join_running_operations_of_their_group(
    core: tuple[BeaconCore, MemoryLedger, list[str]],
) -> None:
    c, _, woken = core
    op = c.start_operation(name="op", adversary_id="adv", group="blue")
    assert op.state is OperationState.RUNNING and not op.agents  # waits for an agent
    red, _ = c.enrol(Agent("r1", group="red"))
    blue, _ = c.enrol(Agent("b1", group="blue"))
    assert list(op.agents) == ["b1"] and woken == ["b1"]
    assert c.beacon(red.paw) == [] and len(c.beacon(blue.paw)) == 1


def test_results_are_checked_against_the_agent_and_keys_are_revoked_on_re_enrolment(
    core: tuple[BeaconCore, MemoryLedger, list[str]],
) -> None:
    c, _, _ = core
    one, key1 = c.enrol(Agent("p1"))
    c.enrol(Agent("p2"))
    c.start_operation(name="op", adversary_id="adv")
    (link,) = c.beacon("p1")
    (wrong,) = c.submit("p2", [Result(link.id, LinkStatus.SUCCESS)])
    assert wrong.state == "rejected" and "link belongs to agent p1" in wrong.reason
    (unknown,) = c.submit("p1", [Result("nope", LinkStatus.SUCCESS)])
    assert unknown.state == "rejected" and "unknown link" in unknown.reason
    _, key2 = c.enrol(Agent("p1"))
    with pytest.raises(C2Error, match="unknown agent key"):
        c.agent_for_key(key1)
    assert c.agent_for_key(key2).paw == one.paw


def test_bad_operation_requests_name_the_field(core: tuple[BeaconCore, MemoryLedger, list[str]]) -> None:
    c, _, _ = core
    with pytest.raises(EmulationError) as exc:
        c.start_operation(name="x", adversary_id="missing")
    assert exc.value.source is not None and exc.value.source.field == "adversary.adversary_id"
    with pytest.raises(EmulationError) as exc:
        c.start_operation(name="x", adversary_id="adv", planner_id="bogus")
    assert exc.value.source is not None and exc.value.source.field == "planner.id"


def test_paws_are_cleaned_like_caldera() -> None:
    assert clean_paw("ab c/../d") == "abc..d"
    assert len(clean_paw("")) == 6
