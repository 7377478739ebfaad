"""The beacon core with an in-memory ledger and a fake clock: no database, no network."""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import pytest

from assay.c2 import (
    SWEEP_INTERVAL,
    AgentDefaults,
    Beacon,
    BeaconCore,
    Instruction,
    KeyRing,
    MemoryLedger,
    Principal,
    Refused,
    ResultOutcome,
    clean_paw,
    decode_beacon,
    digest,
    encode_reply,
    matches,
    slow_hash,
)
from assay.content import Ability, Adversary, Executor, Library, Safety
from assay.emulation import Agent, LinkStatus, OperationService, OperationState, Result
from assay.errors import C2Error, EmulationError, StorageError


def _library() -> Library:
    lib = Library()
    for aid, cleanup in (("a", ("undo a",)), ("b", ())):
        lib.abilities[aid] = Ability(aid, aid, "discovery", "T1082", "System Information Discovery",
                                     (Executor("sh", "linux", f"echo {aid}", cleanup),),
                                     safety=Safety.SAFE)  # fmt: skip
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
    cores: list[BeaconCore] = []  # as assay.api wires them: the service tells the core, the core the contact
    service = OperationService(
        ledger,
        _library(),
        clock=clock,
        new_id=lambda: f"id{next(ids)}",
        on_ready=lambda p: cores[0].notify(p),
    )
    c = BeaconCore(ledger, service, clock=clock, on_ready=woken.append)
    cores.append(c)
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


# -- Caldera registration, the idle beacon, timing and trust -----------------------------------------------
def _caldera(paw: str, **fields: object) -> Beacon:
    return decode_beacon(base64.b64encode(json.dumps({"paw": paw, **fields}).encode()))


def test_an_unchanged_beacon_writes_nothing_and_last_seen_goes_out_in_batches(
    core: tuple[BeaconCore, MemoryLedger, list[str]],
) -> None:
    c, ledger, _ = core
    full = {
        "platform": "linux",
        "executors": ["sh"],
        "host": "h",
        "pid": 7,
        "group": "g",
        "deadman_enabled": False,
    }
    first = _caldera("cal1", **full)
    agent = c.register(first.profile, first.extras, first.timing, first.present, enrolled=True)
    assert (agent.group, agent.contact, agent.executors) == ("g", "http", ("sh",))
    writes = ledger.agent_writes
    for _ in range(100):
        again = _caldera("cal1", **full)
        assert c.unchanged(again.profile, again.present)
        c.seen("cal1")
    trimmed = _caldera("cal1", platform="linux", host="h", results=[])  # a result beacon's profile
    assert c.unchanged(trimmed.profile, trimmed.present)  # absent fields are left alone
    assert ledger.agent_writes == writes  # no write per beacon
    assert c.flush_seen() == 1 and ledger.seen_rows["cal1"] == agent.last_seen
    assert c.flush_seen() == 0
    moved = _caldera("cal1", **{**full, "host": "h2"})
    assert not c.unchanged(moved.profile, moved.present)
    c.register(moved.profile, moved.extras, moved.timing, moved.present, enrolled=True)
    assert ledger.agent_writes == writes + 1 and c.agents["cal1"].host == "h2"
    assert c.agents["cal1"].group == "g"  # Caldera never changes the group from a beacon


def test_work_is_looked_for_only_when_there_may_be_some(
    core: tuple[BeaconCore, MemoryLedger, list[str]],
) -> None:
    c, _, _ = core
    reg = _caldera("cal2", platform="linux", executors=["sh"], group="w")
    c.register(reg.profile, reg.extras, reg.timing, reg.present, enrolled=True)
    c.beacon("cal2")
    assert not c.may_have_work("cal2")  # idle, no operation: the beacon is answered from memory
    c.start_operation(name="op", adversary_id="adv", group="w")
    assert c.may_have_work("cal2")  # the service said so
    assert len(c.beacon("cal2")) == 1
    assert not c.may_have_work("cal2")
    c.clock.now += SWEEP_INTERVAL  # type: ignore[attr-defined]
    assert c.may_have_work("cal2")  # an operation is live: look now and then, notified or not


def test_timing_is_validated_and_kill_and_trust_change_what_an_agent_gets(
    core: tuple[BeaconCore, MemoryLedger, list[str]],
) -> None:
    c, ledger, _ = core
    reg = _caldera("cal3", platform="linux", executors=["sh"], sleep_min=2, sleep_max=4)
    c.register(reg.profile, reg.extras, reg.timing, reg.present, enrolled=True)
    assert all(2 <= c.timing("cal3")[0] <= 4 for _ in range(20))
    with pytest.raises(C2Error) as exc:
        c.update_agent("cal3", {"sleep_min": -5})
    assert exc.value.source is not None and exc.value.source.field == "sleep_min"
    with pytest.raises(C2Error, match="greater than sleep_max"):
        c.update_agent("cal3", {"sleep_min": 9, "sleep_max": 3})
    c.update_agent("cal3", {"trusted": False}, principal="api:admin")
    c.start_operation(name="op", adversary_id="adv")
    assert c.beacon("cal3") == []  # untrusted: no instructions
    c.kill("cal3", principal="api:admin")
    assert c.status(c.agents["cal3"]) == "pending kill"
    assert c.timing("cal3") == (3, 1)
    assert c.status(c.agents["cal3"]) == "dead"
    assert [e.data for e in ledger.audit_rows if e.kind == "agent"] == [
        {"patch": {"trusted": False}},
        {"kill": True},
    ]


def test_a_late_result_completes_the_stored_link_once(
    core: tuple[BeaconCore, MemoryLedger, list[str]],
) -> None:
    c, ledger, _ = core
    c.enrol(Agent("p1"))
    op = c.start_operation(name="op", adversary_id="adv")
    (link,) = c.beacon("p1")
    c.operations.operations.pop(op.id)  # as after a restart that did not resume the operation
    (late,) = c.submit("p1", [Result(link.id, LinkStatus.SUCCESS, 0, stdout="late", pid=9)])
    assert late.state == "accepted" and ledger.link_rows[link.id].stdout == "late"
    (again,) = c.submit("p1", [Result(link.id, LinkStatus.SUCCESS, 0, stdout="again")])
    assert again.state == "duplicate" and ledger.link_rows[link.id].stdout == "late"
    (other,) = c.submit("p2", [Result(link.id, LinkStatus.SUCCESS, 0)])
    assert other.state == "rejected"


def test_dispatches_are_audited_with_agent_command_and_time(
    core: tuple[BeaconCore, MemoryLedger, list[str]],
) -> None:
    c, ledger, _ = core
    c.enrol(Agent("p1", host="h"))
    op = c.start_operation(name="op", adversary_id="adv")
    (link,) = c.beacon("p1")
    (entry,) = [e for e in ledger.audit_rows if e.kind == "dispatch"]
    assert (entry.paw, entry.link_id, entry.operation_id) == ("p1", link.id, op.id)
    assert entry.data["command"] == "echo a" and entry.at == ledger.link_rows[link.id].delegated_at


def test_caldera_reply_is_double_encoded() -> None:
    instruction = Instruction("L1", "op", "sh", "echo hi", 60, False, payloads=("x.sh",))
    reply = json.loads(base64.b64decode(encode_reply("paw1", 5, 0, [instruction])))
    assert reply["paw"] == "paw1" and (reply["sleep"], reply["watchdog"]) == (5, 0)
    (item,) = json.loads(reply["instructions"])
    decoded = json.loads(item)
    assert base64.b64decode(decoded["command"]) == b"echo hi" and decoded["payloads"] == ["x.sh"]


def test_keyring_verifies_once_then_answers_from_its_cache() -> None:
    ring = KeyRing()
    admin = Principal("api", "admin")
    ring.set(admin, slow_hash("s3cret"))
    assert ring.cached("s3cret") is None  # never seen: the caller must verify off the event loop
    assert ring.verify("s3cret", "api") == admin
    assert ring.cached("s3cret") == admin  # from now on: one HMAC and a dict lookup
    assert ring.verify("wrong", "api") is None and ring.cached("wrong") is False
    assert ring.verify("s3cret", "enrol") == admin  # the cache answers; callers check the kind
    ring.set(admin, slow_hash("rotated"))
    assert ring.cached("s3cret") is None and ring.verify("s3cret") is None
    assert matches("legacy", digest("legacy")) and not matches("x", "scrypt$bad")


def _restarted(ledger: MemoryLedger, library: Library, clock: Clock) -> BeaconCore:
    """A new core over the same ledger: what `assay serve` builds after a kill -9."""
    return BeaconCore(ledger, OperationService(ledger, library, clock=clock), clock=clock)


def test_deadman_tasks_survive_a_restart_and_are_handed_out_and_accepted_once() -> None:
    ledger, clock, library = MemoryLedger(), Clock(), _library()
    first = _restarted(ledger, library, clock)
    first.update_defaults({"deadman_abilities": ["a", "no-such-ability"]})
    _agent, key = first.enrol(Agent("dm", host="h", group="red"), deadman=True)
    ((paw, queued, delivered),) = ledger.open_tasks()  # stored when queued, before any beacon
    assert (paw, queued.command, queued.deadman, delivered) == ("dm", "echo a", True, False)

    second = _restarted(ledger, library, clock)  # killed before the agent beaconed
    assert second.agent_for_key(key).paw == "dm"
    assert second.may_have_work("dm")
    (task,) = second.beacon("dm")
    assert task == queued
    assert second.beacon("dm") == []
    assert ledger.open_tasks() == [("dm", queued, True)]  # delivery recorded before it was handed out

    third = _restarted(ledger, library, clock)  # killed after delivery, before the result
    assert third.beacon("dm") == []  # never handed out twice
    result = Result(task.id, LinkStatus.SUCCESS, 0, stdout="a\n")
    assert states(third.submit("dm", [result])) == [(task.id, "accepted")]
    assert states(third.submit("dm", [result])) == [(task.id, "duplicate")]
    assert ledger.open_tasks() == []

    fourth = _restarted(ledger, library, clock)  # a re-send after a restart changes nothing either
    assert states(fourth.submit("dm", [result])) == [(task.id, "duplicate")]
    assert states(fourth.submit("other", [result]))[0][1] == "rejected"  # not another agent's to report
    assert [(r.link_id, accepted) for r, _, _, accepted in ledger.result_rows] == [(task.id, True)]


def test_agent_defaults_are_validated_stored_and_kept_across_a_restart() -> None:
    ledger, clock, library = MemoryLedger(), Clock(), _library()
    c = _restarted(ledger, library, clock)
    with pytest.raises(C2Error, match="sleep_min"):
        c.update_defaults({"sleep_min": 90})  # above the stored sleep_max of 60
    assert ledger.agent_defaults() is None  # a refused change stores nothing
    new = c.update_defaults({"sleep_min": 2, "sleep_max": 4, "untrusted_timer": 7})
    assert (new.sleep_min, new.sleep_max, new.watchdog, new.untrusted_timer) == (2, 4, 0, 7)
    assert [e.kind for e in ledger.audit_rows] == ["config"]
    again = BeaconCore(ledger, OperationService(ledger, library, clock=clock), clock=clock,
                       defaults=AgentDefaults(sleep_min=30, sleep_max=60))  # fmt: skip
    assert again.defaults == new  # what the API set outlives the configured start values
    agent = again.register(Agent("cal", host="h"), {}, {}, enrolled=True)
    assert again.settings_of(agent.paw).sleep_max == 4


def test_deleting_an_agent_drops_its_record_settings_key_and_tasks_and_it_may_register_again(
    core: tuple[BeaconCore, MemoryLedger, list[str]],
) -> None:
    c, ledger, woken = core
    with pytest.raises(Refused) as unknown:
        c.delete_agent("nobody")
    assert unknown.value.status == 404
    c.update_defaults({"deadman_abilities": ["a"]})
    native, key = c.enrol(Agent("nat", host="h"), deadman=True)
    cal = c.register(
        Agent("cal", host="h2"), {"deadman_enabled": True}, {"sleep_min": 5, "sleep_max": 5}, enrolled=True
    )
    c.update_agent("cal", {"watchdog": 9})
    assert len(ledger.open_tasks()) == 2
    c.delete_agent("nat", principal="api:admin")
    c.delete_agent("cal")
    assert "nat" not in c.agents and "cal" not in c.agents and not c.may_have_work("cal")
    assert ledger.agents() == [] and ledger.settings() == {} and ledger.open_tasks() == []
    with pytest.raises(C2Error, match="enrol again"):
        c.agent_for_key(key)  # its key went with it
    assert woken[-2:] == ["nat", "cal"]  # held native beacons are answered at once
    assert [e.data for e in ledger.audit_rows if e.kind == "agent"][-2:] == [{"delete": True}] * 2
    with pytest.raises(Refused):
        c.delete_agent("cal")  # gone
    again = c.register(Agent("cal", host="h2"), {"deadman_enabled": True}, {}, enrolled=True)
    assert again is not cal and c.settings_of("cal").watchdog == 0  # anew, with today's defaults
    (task,) = c.beacon("cal")
    assert task.deadman and native.paw == "nat"


def test_a_delivered_kill_is_stored_once_and_a_restart_keeps_the_agent_dead() -> None:
    ledger, clock, library = MemoryLedger(), Clock(), _library()
    first = _restarted(ledger, library, clock)
    first.register(Agent("cal", host="h"), {}, {"watchdog": 30}, enrolled=True)
    first.update_agent("cal", {"watchdog": 5}, principal="api:admin")
    first.kill("cal", principal="api:admin")
    native, _key = first.enrol(Agent("nat", host="h2"))
    first.kill("nat")

    second = _restarted(ledger, library, clock)  # killed before either agent beaconed: still to deliver
    assert [second.status(second.agents[p]) for p in ("cal", "nat")] == ["pending kill"] * 2
    assert second.timing("cal") == (3, 1)  # the Caldera reply carries the kill
    second.kill_delivered("nat")  # the native reply carries it
    assert ledger.settings()["cal"].kill_delivered and ledger.settings()["nat"].kill_delivered
    stored = ledger.settings()
    second.timing("cal")  # a later beacon of a killed agent rewrites nothing
    assert ledger.settings() == stored

    third = _restarted(ledger, library, clock)  # kill -9 after delivery: the agents stopped
    assert [third.status(third.agents[p]) for p in ("cal", "nat")] == ["dead"] * 2
    third.kill("cal")  # killed again: pending until the next reply carries it
    assert third.status(third.agents["cal"]) == "pending kill"
    assert not _restarted(ledger, library, clock).settings_of("cal").kill_delivered
    third.enrol(native)  # a re-enrolled native agent is told to stop again
    assert _restarted(ledger, library, clock).status(native) == "pending kill"


class _FailingLedger(MemoryLedger):
    """A ledger whose registration write fails, as a database error or a crash mid-write would."""

    def register_agent(self, *args: Any, **kwargs: Any) -> None:
        raise StorageError("agent registration failed: disk full")


def test_an_agent_and_its_deadman_tasks_are_registered_in_one_write_or_not_at_all() -> None:
    ledger, clock, library = MemoryLedger(), Clock(), _library()
    c = _restarted(ledger, library, clock)
    c.update_defaults({"deadman_abilities": ["a"]})
    writes = ledger.agent_writes
    c.register(Agent("cal", host="h"), {"deadman_enabled": True}, {}, enrolled=True)
    c.enrol(Agent("nat", host="h2"), deadman=True)
    assert ledger.agent_writes == writes + 2  # one registration write each, tasks included
    assert sorted(p for p, _, _ in ledger.open_tasks()) == ["cal", "nat"]

    failing = _FailingLedger(defaults_row=ledger.defaults_row)
    f = _restarted(failing, library, clock)
    with pytest.raises(StorageError):
        f.register(Agent("cal", host="h"), {"deadman_enabled": True}, {}, enrolled=True)
    with pytest.raises(StorageError):
        f.enrol(Agent("nat", host="h2"), deadman=True)
    assert failing.agent_rows == {} and failing.settings_rows == {} and failing.task_rows == {}
    assert f.agents == {} and not f.may_have_work("cal") and not f.may_have_work("nat")  # nor in memory
