"""The atomic planner and the operation state machine, with no I/O: plain values and a counter for ids."""

from __future__ import annotations

import itertools

import pytest

from assay.content import Ability, Adversary, Executor, Privilege
from assay.emulation import (
    Agent,
    AtomicPlanner,
    LinkStatus,
    Operation,
    OperationState,
    Result,
    Run,
    Skip,
    SkipReason,
    decide,
    planner,
)
from assay.errors import EmulationError


def _ability(
    aid: str,
    *,
    executor: str = "sh",
    platform: str = "linux",
    command: str | None = None,
    cleanup: tuple[str, ...] = (),
    privilege: Privilege | None = None,
) -> Ability:
    return Ability(
        id=aid,
        name=f"ability {aid}",
        tactic="discovery",
        technique_id="T1082",
        technique_name="System Information Discovery",
        executors=(Executor(executor, platform, command or f"echo {aid} #{{paw}}", cleanup),),
        privilege=privilege,
    )


ABILITIES = {
    "a": _ability("a", cleanup=("rm -rf /tmp/a-#{paw}",)),
    "b": _ability("b"),
    "win": _ability("win", executor="psh", platform="windows"),
    "c": _ability("c", cleanup=("undo c1", "undo c2")),
    "root": _ability("root", privilege=Privilege.ELEVATED),
    "facts": _ability("facts", command="cat #{host.file.path}"),
    "bash": _ability("bash", executor="bash"),
}


def _operation(order: tuple[str, ...], *, auto_close: bool = True) -> Operation:
    adversary = Adversary(id="adv", name="adv", atomic_ordering=order)
    return Operation(
        id="op", name="op", adversary=adversary, planner=AtomicPlanner(), group="red", auto_close=auto_close
    )


class Harness:
    """Drives an operation as the C2 core would: advance, deliver, report."""

    def __init__(self, op: Operation) -> None:
        self.op = op
        self.now = 1000.0
        counter = itertools.count(1)
        self.new_id = lambda: f"L{next(counter)}"

    def advance(self) -> list[str]:
        self.now += 1
        return [lk.id for lk in self.op.advance(ABILITIES, self.now, self.new_id)]

    def report(self, link_id: str, status: LinkStatus = LinkStatus.SUCCESS) -> list[str]:
        self.now += 1
        self.op.on_result(
            Result(link_id, status, exit_code=0, pid=42, start_ticks=7, started_at=self.now), self.now
        )
        return self.advance()


def test_atomic_planner_hands_out_one_link_at_a_time_in_profile_order() -> None:
    op = _operation(("a", "b", "c"))
    op.add_agent(Agent("p1", executors=("sh", "bash")))
    h = Harness(op)
    assert h.advance() == ["L1"]
    assert op.link("L1") is not None and op.link("L1").ability_id == "a"  # type: ignore[union-attr]
    assert op.link("L1").command == "echo a p1"  # type: ignore[union-attr]
    assert h.advance() == []  # still in flight: nothing new, however often asked
    assert op.undelivered("p1")[0].id == "L1"
    op.mark_delivered(op.links[0], h.now)
    assert op.undelivered("p1") == []
    assert h.report("L1") == ["L2"]  # the next link is planned by the result itself
    assert op.links[-1].ability_id == "b"
    assert h.report("L2") == ["L3"]
    assert op.links[-1].ability_id == "c"
    assert op.state is OperationState.RUNNING


def test_cleanup_runs_in_reverse_order_one_link_at_a_time_then_finishes() -> None:
    op = _operation(("a", "b", "c"))
    op.add_agent(Agent("p1"))
    h = Harness(op)
    h.advance()
    h.report("L1")
    h.report("L2", LinkStatus.ERROR)  # a failed ability has no cleanup of its own here, but still counts
    created = h.report("L3")
    assert op.state is OperationState.CLEANUP
    assert [op.link(i).command for i in created] == ["undo c1"]  # type: ignore[union-attr]
    cleanup = op.link(created[0])
    assert cleanup is not None and cleanup.cleanup and cleanup.cleanup_of == "L3"
    created = h.report(created[0])
    assert [op.link(i).command for i in created] == ["undo c2"]  # type: ignore[union-attr]
    created = h.report(created[0])
    assert [op.link(i).command for i in created] == ["rm -rf /tmp/a-p1"]  # type: ignore[union-attr]
    assert op.state is OperationState.CLEANUP
    assert h.report(created[0]) == []
    assert op.state is OperationState.FINISHED
    assert op.finished_at == h.now
    assert [lk.cleanup for lk in op.links] == [False, False, False, True, True, True]


def test_skips_are_recorded_with_reasons_and_cost_no_round_trip() -> None:
    op = _operation(("win", "root", "facts", "bash", "missing", "b"))
    op.add_agent(Agent("p1", executors=("sh",)))
    h = Harness(op)
    created = h.advance()
    links = [op.link(i) for i in created]
    assert [(lk.ability_id, lk.status, lk.skip_reason_id) for lk in links if lk] == [
        ("win", LinkStatus.DISCARD, SkipReason.PLATFORM),
        ("root", LinkStatus.DISCARD, SkipReason.PRIVILEGE),
        ("facts", LinkStatus.DISCARD, SkipReason.FACT_DEPENDENCY),
        ("bash", LinkStatus.DISCARD, SkipReason.EXECUTOR),
        ("missing", LinkStatus.DISCARD, SkipReason.OTHER),
        ("b", LinkStatus.EXECUTE, None),
    ]
    assert "host.file.path" in (links[2].skip_reason or "")  # type: ignore[union-attr]
    assert all(lk.finished_at == h.now for lk in links[:5] if lk)
    h.report(created[-1])
    assert op.state is OperationState.FINISHED  # nothing ran that has a cleanup


def test_elevated_agent_runs_elevated_abilities_and_facts_fill_variables() -> None:
    agent = Agent("p1", privilege=Privilege.ELEVATED)
    assert isinstance(decide("root", ABILITIES["root"], agent, {}), Run)
    decision = decide("facts", ABILITIES["facts"], agent, {"host.file.path": "/etc/hosts"})
    assert isinstance(decision, Run) and decision.command == "cat /etc/hosts"
    assert decision.facts == {"host.file.path": "/etc/hosts"}
    untrusted = decide("b", ABILITIES["b"], Agent("p2", trusted=False), {})
    assert isinstance(untrusted, Skip) and untrusted.reason is SkipReason.UNTRUSTED


def test_duplicate_result_changes_nothing_and_unknown_link_is_an_error() -> None:
    op = _operation(("a",))
    op.add_agent(Agent("p1"))
    h = Harness(op)
    h.advance()
    first = op.on_result(Result("L1", LinkStatus.SUCCESS, exit_code=0, pid=5, start_ticks=9), 2000.0)
    assert first is not None and first.entity_id == "5:9"
    assert op.on_result(Result("L1", LinkStatus.ERROR, exit_code=3, pid=6), 2001.0) is None
    assert op.links[0].status is LinkStatus.SUCCESS and op.links[0].pid == 5
    with pytest.raises(EmulationError, match="link L9"):
        op.on_result(Result("L9", LinkStatus.SUCCESS), 2002.0)


def test_two_agents_progress_independently() -> None:
    op = _operation(("a", "b"))
    op.add_agent(Agent("p1"))
    op.add_agent(Agent("p2"))
    h = Harness(op)
    created = h.advance()
    assert [(op.link(i).paw, op.link(i).ability_id) for i in created] == [("p1", "a"), ("p2", "a")]  # type: ignore[union-attr]
    assert [op.link(i).ability_id for i in h.report(created[0])] == ["b"]  # type: ignore[union-attr]
    assert op.links[-1].paw == "p1"


def test_no_agents_waits_and_without_auto_close_the_operation_stays_open_until_closed() -> None:
    op = _operation(("b",), auto_close=False)
    h = Harness(op)
    assert h.advance() == []
    assert op.state is OperationState.RUNNING
    op.add_agent(Agent("p1"))
    created = h.advance()
    h.report(created[0])
    assert op.state is OperationState.RUNNING
    op.request_close()
    h.advance()
    assert op.state is OperationState.FINISHED


def test_state_is_derived_from_links_so_a_rebuilt_operation_continues() -> None:
    op = _operation(("a", "b"))
    op.add_agent(Agent("p1"))
    h = Harness(op)
    h.advance()
    h.report("L1")
    rebuilt = _operation(("a", "b"))
    rebuilt.agents = dict(op.agents)
    rebuilt.links = list(op.links)
    assert rebuilt.advance(ABILITIES, h.now, h.new_id) == []  # L2 is still in flight: nothing doubles
    rebuilt.on_result(Result("L2", LinkStatus.SUCCESS), h.now)
    created = rebuilt.advance(ABILITIES, h.now, h.new_id)
    assert [lk.command for lk in created] == ["rm -rf /tmp/a-p1"]


def test_planner_registry() -> None:
    assert isinstance(planner("atomic"), AtomicPlanner)
    assert isinstance(planner("aaa7c857-37a0-4c4a-85f7-4e9f7f30e31a"), AtomicPlanner)
    with pytest.raises(EmulationError, match="unknown planner 'nope'"):
        planner("nope")
