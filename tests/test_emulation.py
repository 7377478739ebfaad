"""The operation state machine and the planners, with no I/O: plain values, counted ids, a hand clock."""

from __future__ import annotations

import base64

import pytest

from assay.content import Adjustment, Privilege, Safety
from assay.emulation import (
    AtomicPlanner,
    BatchPlanner,
    BucketsPlanner,
    LinkStatus,
    OperationState,
    Result,
    SkipReason,
    bucket_order,
    event_logs,
    operation_report,
    planner,
)
from assay.errors import EmulationError
from emulation_helpers import Harness, ability, agent, operation

ABILITIES = {
    "a": ability("a", cleanup=("rm -rf /tmp/a-#{paw}",)),
    "b": ability("b"),
    "win": ability("win", executor="psh", platform="windows"),
    "c": ability("c", cleanup=("undo c1", "undo c2")),
    "root": ability("root", privilege=Privilege.ELEVATED),
    "facts": ability("facts", command="cat #{host.file.path}"),
    "bash": ability("bash", executor="bash"),
    "risky": ability("risky", safety=Safety.DISRUPTIVE),
    "unlabelled": ability("unlabelled", safety=None),
}


def test_atomic_planner_hands_out_one_link_at_a_time_in_profile_order() -> None:
    op = operation(("a", "b", "c"), ABILITIES)
    op.add_agent(agent(executors=("sh", "bash")))
    h = Harness(op)
    assert h.advance() == ["L1"]
    first = op.link("L1")
    assert first is not None and first.ability_id == "a" and first.command == "echo a p1"
    assert h.advance() == []  # still in flight: nothing new, however often asked
    assert [lk.id for lk in h.deliver()] == ["L1"]
    assert h.deliver() == []  # delivered exactly once
    assert h.report("L1") == ["L2"]  # the next link is planned by the result itself
    assert op.links[-1].ability_id == "b"
    assert h.report("L2") == ["L3"]
    assert op.links[-1].ability_id == "c"
    assert op.state is OperationState.RUNNING


def test_cleanup_runs_in_reverse_order_one_link_at_a_time_and_every_result_is_recorded() -> None:
    op = operation(("a", "b", "c"), ABILITIES)
    op.add_agent(agent())
    h = Harness(op)
    h.advance()
    h.deliver()
    h.report("L1")
    h.deliver()
    h.report("L2", LinkStatus.ERROR)  # a failed ability still counts as run
    h.deliver()
    created = h.report("L3")
    assert op.state is OperationState.CLEANUP
    assert op.cleanup_deadline == h.now + 180 + 30 * 3  # Caldera's budget: 180 s + 30 s per cleanup link
    commands = []
    while created:
        (link_id,) = created
        link = op.link(link_id)
        assert link is not None and link.cleanup
        commands.append((link.plaintext_command, link.cleanup_of))
        h.deliver()
        created = h.report(
            link_id, LinkStatus.ERROR if link.plaintext_command == "undo c2" else LinkStatus.SUCCESS
        )
    assert commands == [("undo c1", "L3"), ("undo c2", "L3"), ("rm -rf /tmp/a-p1", "L1")]
    assert op.state is OperationState.FINISHED and op.finished_at == h.now
    cleanups = [lk for lk in op.links if lk.cleanup]
    assert [lk.status for lk in cleanups] == [LinkStatus.SUCCESS, LinkStatus.ERROR, LinkStatus.SUCCESS]
    assert all(lk.finished_at is not None and lk.pid == 42 for lk in cleanups)


def test_permanent_skips_are_recorded_at_once_and_cost_no_round_trip() -> None:
    op = operation(("win", "root", "bash", "missing", "risky", "unlabelled", "b"), ABILITIES)
    op.add_agent(agent(executors=("sh",)))
    h = Harness(op)
    links = [op.link(i) for i in h.advance()]
    assert [(lk.ability_id, lk.status, lk.skip_reason_id) for lk in links if lk] == [
        ("win", LinkStatus.DISCARD, SkipReason.PLATFORM),
        ("root", LinkStatus.DISCARD, SkipReason.PRIVILEGE),
        ("bash", LinkStatus.DISCARD, SkipReason.EXECUTOR),
        ("missing", LinkStatus.DISCARD, SkipReason.OTHER),
        ("risky", LinkStatus.DISCARD, SkipReason.OTHER),
        ("unlabelled", LinkStatus.DISCARD, SkipReason.OTHER),
        ("b", LinkStatus.EXECUTE, None),
    ]
    assert "safety: ability is disruptive" in (links[4].skip_reason or "")  # type: ignore[union-attr]
    assert "unclassified (treated as destructive)" in (links[5].skip_reason or "")  # type: ignore[union-attr]
    assert all(lk.finished_at == h.now for lk in links[:6] if lk)
    h.deliver()
    h.report(links[-1].id)  # type: ignore[union-attr]
    assert op.state is OperationState.FINISHED  # nothing ran that has a cleanup


def test_opting_in_runs_disruptive_abilities_and_elevated_agents_run_elevated_ones() -> None:
    op = operation(("risky", "root", "unlabelled"), ABILITIES, max_safety=Safety.DISRUPTIVE)
    op.add_agent(agent(privilege=Privilege.ELEVATED))
    ran = Harness(op).run_all()
    assert [lk.ability_id for lk in ran] == ["risky", "root"]
    skipped = [lk for lk in op.links if lk.skip_reason_id is not None]
    assert [lk.ability_id for lk in skipped] == ["unlabelled"]


def test_a_fact_dependency_waits_for_the_fact_and_is_recorded_only_if_it_never_comes() -> None:
    op = operation(("facts", "b"), ABILITIES)
    op.add_agent(agent())
    h = Harness(op)
    assert [op.link(i).ability_id for i in h.advance()] == ["b"]  # type: ignore[union-attr]
    h.deliver()
    created = [op.link(i) for i in h.report(op.links[0].id)]
    facts_skip = next(lk for lk in created if lk and lk.ability_id == "facts")
    assert facts_skip.skip_reason_id is SkipReason.FACT_DEPENDENCY
    assert "host.file.path" in (facts_skip.skip_reason or "")
    assert op.state is OperationState.FINISHED


def test_duplicate_result_changes_nothing_and_unknown_link_is_an_error() -> None:
    op = operation(("a",), ABILITIES)
    op.add_agent(agent())
    h = Harness(op)
    h.advance()
    h.deliver()
    first = op.on_result(Result("L1", LinkStatus.SUCCESS, exit_code=0, pid=5, start_ticks=9), 2000.0)
    assert first is not None and first.link.entity_id == "5:9"
    assert op.on_result(Result("L1", LinkStatus.ERROR, exit_code=3, pid=6), 2001.0) is None
    assert op.links[0].status is LinkStatus.SUCCESS and op.links[0].pid == 5
    with pytest.raises(EmulationError, match="link L9"):
        op.on_result(Result("L9", LinkStatus.SUCCESS), 2002.0)


def test_two_agents_progress_independently() -> None:
    op = operation(("a", "b"), ABILITIES)
    op.add_agent(agent("p1"))
    op.add_agent(agent("p2"))
    h = Harness(op)
    created = [op.link(i) for i in h.advance()]
    assert [(lk.paw, lk.ability_id) for lk in created if lk] == [("p1", "a"), ("p2", "a")]
    h.deliver("p1")
    assert [op.link(i).ability_id for i in h.report(created[0].id)] == ["b"]  # type: ignore[union-attr]
    assert op.links[-1].paw == "p1"


def test_without_auto_close_the_operation_stays_open_until_closed() -> None:
    op = operation(("b",), ABILITIES, auto_close=False)
    h = Harness(op)
    assert h.advance() == []
    assert op.state is OperationState.RUNNING  # no agent yet: it waits
    op.add_agent(agent())
    h.advance()
    h.deliver()
    h.report(op.links[0].id)
    assert op.state is OperationState.RUNNING
    op.set_state("finished", h.now)
    h.advance()
    assert op.state is OperationState.FINISHED


def test_state_is_derived_from_links_so_a_rebuilt_operation_continues() -> None:
    op = operation(("a", "b"), ABILITIES)
    op.add_agent(agent())
    h = Harness(op)
    h.advance()
    h.deliver()
    h.report("L1")
    rebuilt = operation(("a", "b"), ABILITIES)
    rebuilt.agents = dict(op.agents)
    rebuilt.links = list(op.links)
    assert rebuilt.advance(h.now, h.new_id) == []  # L2 is still in flight: nothing doubles
    rebuilt.on_result(Result("L2", LinkStatus.SUCCESS), h.now)
    created = rebuilt.advance(h.now, h.new_id)
    assert [lk.plaintext_command for lk in created] == ["rm -rf /tmp/a-p1"]


def test_batch_planner_hands_out_everything_then_waits_for_the_whole_batch() -> None:
    learn = ability("learn", command="echo x", parsers=(_line("host.user.name"),))
    use = ability("use", command="id #{host.user.name}")
    abilities = {**ABILITIES, "learn": learn, "use": use}
    op = operation(("a", "b", "use", "learn"), abilities, planner_name="batch")
    op.add_agent(agent("p1"))
    op.add_agent(agent("p2"))
    h = Harness(op)
    first = [op.link(i) for i in h.advance()]
    assert sorted((lk.paw, lk.ability_id) for lk in first if lk) == [
        ("p1", "a"), ("p1", "b"), ("p1", "learn"), ("p2", "a"), ("p2", "b"), ("p2", "learn"),
    ]  # fmt: skip
    h.deliver("p1")
    h.deliver("p2")
    outputs = {"learn": "alice\nbob\n"}
    for link in first[:-1]:
        assert h.report(link.id, stdout=outputs.get(link.ability_id, "")) == []  # type: ignore[union-attr]
    second = [op.link(i) for i in h.report(first[-1].id, stdout="alice\nbob\n")]  # type: ignore[union-attr]
    # One link per fact and per agent: facts are not host-scoped (as in Caldera).
    assert sorted((lk.paw, lk.plaintext_command) for lk in second if lk) == [
        ("p1", "id alice"), ("p1", "id bob"), ("p2", "id alice"), ("p2", "id bob"),
    ]  # fmt: skip
    assert isinstance(planner("batch"), BatchPlanner)


def test_buckets_planner_drains_tactics_in_kill_chain_order() -> None:
    abilities = {
        "exfil": ability("exfil", tactic="exfiltration"),
        "disc1": ability("disc1", tactic="discovery"),
        "exec": ability("exec", tactic="execution"),
        "disc2": ability("disc2", tactic="discovery"),
    }
    op = operation(("exfil", "disc1", "exec", "disc2"), abilities, planner_name="buckets")
    op.add_agent(agent())
    h = Harness(op)
    batches: list[list[str]] = []
    created = h.advance()
    while op.state is OperationState.RUNNING:
        batches.append(sorted(op.link(i).ability_id for i in created))  # type: ignore[union-attr]
        h.deliver()
        for link_id in created:
            created = h.report(link_id) or created
    assert batches == [["exec"], ["disc1", "disc2"], ["exfil"]]
    assert op.planner_state == {"bucket": "__done__"}
    assert bucket_order(["zeta", "impact", "discovery", "alpha"]) == ["discovery", "impact", "zeta", "alpha"]
    assert isinstance(planner("buckets"), BucketsPlanner)


def test_manual_mode_waits_for_approval_and_discarded_links_never_run() -> None:
    op = operation(("a", "b", "c"), ABILITIES, autonomous=False)
    op.add_agent(agent())
    h = Harness(op)
    (first,) = [op.link(i) for i in h.advance()]
    assert first is not None and first.status is LinkStatus.PAUSE
    assert op.undelivered("p1", h.now) == []
    op.review(first.id, h.now, status=LinkStatus.EXECUTE, command="echo edited")
    assert (first.status, first.plaintext_command, first.command) == (
        LinkStatus.EXECUTE,
        "echo edited",
        "echo edited",
    )
    h.deliver()
    (second,) = [op.link(i) for i in h.report(first.id)]
    assert second is not None
    op.review(second.id, h.now, status=LinkStatus.DISCARD)
    assert second.skip_reason_id is SkipReason.LINK_IGNORED
    (third,) = [op.link(i) for i in h.advance()]
    assert third is not None and third.ability_id == "c"
    with pytest.raises(EmulationError, match="finished"):
        op.review(second.id, h.now, status=LinkStatus.EXECUTE)
    with pytest.raises(EmulationError, match="-3 \\(run\\) or -2"):
        op.review(third.id, h.now, status=0)
    op.autonomous = True  # switching to autonomous: later links need no approval
    op.review(third.id, h.now, status=LinkStatus.EXECUTE)
    h.deliver()
    h.report(third.id)
    assert [lk.status for lk in op.links if lk.cleanup] == [LinkStatus.EXECUTE]


def test_pause_holds_links_back_and_run_one_link_runs_exactly_one() -> None:
    op = operation(("a", "b", "c"), ABILITIES)
    op.add_agent(agent())
    h = Harness(op)
    h.advance()
    op.set_state("paused", h.now)
    assert op.undelivered("p1", h.now) == []
    op.set_state("run_one_link", h.now)
    (one,) = h.deliver()
    assert h.deliver() == []
    h.report(one.id)
    assert op.state is OperationState.PAUSED
    assert h.advance() == []  # paused: nothing is planned or handed out
    op.set_state("running", h.now)
    h.advance()
    assert [lk.ability_id for lk in h.deliver()] == ["b"]
    with pytest.raises(EmulationError, match="state must be one of"):
        op.set_state("out_of_time", h.now)


def test_closing_discards_what_never_started_and_still_cleans_up() -> None:
    op = operation(("a", "b", "c"), ABILITIES, autonomous=False)
    op.add_agent(agent())
    h = Harness(op)
    (first,) = [op.link(i) for i in h.advance()]
    op.review(first.id, h.now, status=LinkStatus.EXECUTE)  # type: ignore[union-attr]
    h.deliver()
    (second,) = [op.link(i) for i in h.report(first.id)]  # type: ignore[union-attr]
    op.set_state("finished", h.now)
    (cleanup,) = [op.link(i) for i in h.advance() if op.link(i).cleanup]  # type: ignore[union-attr]
    assert (
        second is not None and second.status is LinkStatus.DISCARD and "closed" in (second.skip_reason or "")
    )
    assert cleanup is not None and cleanup.cleanup_of == first.id  # type: ignore[union-attr]
    with pytest.raises(EmulationError, match="cleaning up"):
        op.set_state("running", h.now)
    h.deliver()
    h.report(cleanup.id)
    assert op.state is OperationState.FINISHED
    with pytest.raises(EmulationError, match="cannot change"):
        op.set_state("running", h.now)


def test_a_link_whose_result_never_comes_times_out_on_the_server_and_the_operation_goes_on() -> None:
    op = operation(("a", "b"), {"a": ability("a", timeout=10), "b": ABILITIES["b"]}, link_grace=5.0)
    op.add_agent(agent())
    h = Harness(op)
    h.advance()
    (link,) = h.deliver()
    assert op.next_deadline(h.now) == h.now + 10 + 5
    changed, _ = op.on_time(h.now + 14.9)
    assert changed == []
    changed, _ = op.on_time(h.now + 15)
    assert changed == [link] and link.status is LinkStatus.TIMEOUT
    assert "no result from agent p1" in link.stderr
    h.now += 15
    assert [op.link(i).ability_id for i in h.advance()] == ["b"]  # type: ignore[union-attr]
    # The real result arriving late changes nothing (the service records it as not accepted).
    assert op.on_result(Result(link.id, LinkStatus.SUCCESS), h.now) is None


def test_a_link_nobody_collects_expires_and_a_restart_gives_in_flight_links_fresh_grace() -> None:
    op = operation(("b",), ABILITIES, collect_timeout=60.0, link_grace=30.0)
    op.add_agent(agent())
    h = Harness(op)
    (link_id,) = h.advance()
    link = op.link(link_id)
    assert link is not None and op.next_deadline(h.now) == h.now  # its agent must be told first
    assert op.announce(h.now) == {"p1"} and op.announce(h.now) == set()  # (the service tells it)
    assert op.next_deadline(h.now) == h.now + 60
    op.resumed_at = h.now + 50  # the server came back 50 s later: the agent gets the full time again
    assert op.next_deadline(h.now) == h.now + 50 + 60
    changed, _ = op.on_time(h.now + 110)
    assert changed == [link] and link.status is LinkStatus.UNTRUSTED
    assert link.skip_reason_id is SkipReason.UNTRUSTED and "did not collect" in (link.skip_reason or "")
    h.now += 110
    h.advance()
    assert op.state is OperationState.FINISHED


def test_cleanup_that_overruns_its_budget_ends_out_of_time() -> None:
    op = operation(("a",), {"a": ability("a", cleanup=("sleep 1000",), timeout=10_000)})
    op.add_agent(agent())
    h = Harness(op)
    h.advance()
    h.deliver()
    h.report("L1")
    assert op.state is OperationState.CLEANUP
    h.deliver()
    assert op.cleanup_deadline is not None
    changed, _ = op.on_time(op.cleanup_deadline)
    assert op.state is OperationState.OUT_OF_TIME and op.finished_at == op.cleanup_deadline
    assert [lk.status for lk in changed] == [LinkStatus.TIMEOUT]
    assert op.done


def test_jitter_holds_a_link_until_its_time_and_says_when() -> None:
    op = operation(("b",), ABILITIES, jitter=(3, 3))
    op.add_agent(agent())
    h = Harness(op)
    (link_id,) = h.advance()
    link = op.link(link_id)
    assert link is not None and link.jitter == 3 and link.available_at == h.now + 3
    assert op.undelivered("p1", h.now) == []
    assert op.next_deadline(h.now) == h.now + 3
    _, ready = op.on_time(h.now + 3)
    assert ready == {"p1"}
    assert op.undelivered("p1", h.now + 3) == [link]


def test_links_above_the_visibility_threshold_are_ignored_and_the_next_one_runs() -> None:
    learn = ability("learn", command="echo", parsers=(_line("host.user.name"),))
    use = ability("use", command="id #{host.user.name}")
    adjustments = (Adjustment("use", "host.user.name", "root", 40),)
    op = operation(("learn", "use", "b"), {**ABILITIES, "learn": learn, "use": use}, adjustments=adjustments)
    op.add_agent(agent())
    h = Harness(op)
    h.advance()
    h.deliver()
    created = [op.link(i) for i in h.report("L1", stdout="root\nalice\n")]
    assert [(lk.plaintext_command, lk.status, lk.visibility) for lk in created if lk] == [
        ("id root", LinkStatus.HIGH_VIZ, 90),
        ("id alice", LinkStatus.EXECUTE, 50),
    ]
    assert created[0].skip_reason_id is SkipReason.LINK_IGNORED  # type: ignore[union-attr]


def test_base64_obfuscator_encodes_what_the_agent_runs_and_keeps_the_plain_text() -> None:
    op = operation(("a",), ABILITIES, obfuscator="base64")
    op.add_agent(agent())
    h = Harness(op)
    h.advance()
    (link,) = h.deliver()
    assert link.plaintext_command == "echo a p1"
    encoded = link.command.split("echo ", 1)[1].split(" |", 1)[0]
    assert link.command.startswith('eval "$(echo ') and base64.b64decode(encoded).decode() == "echo a p1"
    op.set_obfuscator("plain")
    assert op.obfuscator == "plain-text"
    with pytest.raises(EmulationError, match="unknown obfuscator"):
        op.set_obfuscator("rot13")


def test_repeatable_abilities_run_once_per_place_in_the_profile_and_singletons_once_per_operation() -> None:
    abilities = {"r": ability("r", repeatable=True), "s": ability("s", singleton=True), "n": ability("n")}
    op = operation(("r", "n", "r", "s", "n"), abilities)
    op.add_agent(agent("p1"))
    op.add_agent(agent("p2"))
    h = Harness(op)
    h.advance()
    for _ in range(20):
        for paw in ("p1", "p2"):
            for link in h.deliver(paw):
                h.report(link.id)
    ran = [(lk.paw, lk.ability_id) for lk in op.links if lk.status is LinkStatus.SUCCESS and not lk.cleanup]
    expected = [("p1", "r"), ("p1", "r"), ("p1", "n"), ("p2", "r"), ("p2", "r"), ("p2", "n"), ("p1", "s")]
    assert sorted(ran) == sorted(expected)
    skipped = [lk for lk in op.links if lk.ability_id == "s" and lk.skip_reason_id is not None]
    assert [(lk.paw, lk.skip_reason) for lk in skipped] == [("p2", "singleton: ran on another agent")]


def test_manual_links_join_the_operation_and_reports_have_caldera_shapes() -> None:
    op = operation(("a", "win"), ABILITIES)
    op.add_agent(agent(host="h1", username="u"))
    h = Harness(op)
    h.advance()
    manual = op.add_manual_link("p1", "sh", "whoami", h.now, h.new_id)
    assert manual.ability_id == "manual" and manual.status is LinkStatus.EXECUTE
    with pytest.raises(EmulationError, match="agent p9"):
        op.add_manual_link("p9", "sh", "id", h.now, h.new_id)
    running = operation_report(op)
    expected = {
        "reason": "Operation not completed",
        "reason_id": 6,
        "ability_id": "win",
        "ability_name": "ability win",
    }
    expected["detail"] = "not run yet: the operation is still going"
    assert running["skipped_abilities"] == [{"p1": [expected]}]
    h.run_all(outputs={"a": "line one\nline two\n"})
    report = operation_report(op, agent_output=True)
    (skip,) = report["skipped_abilities"][0]["p1"]
    assert (skip["reason"], skip["reason_id"], skip["ability_id"]) == ("Wrong platform", 0, "win")
    assert "no executor for platform 'linux'" in skip["detail"]
    assert {"name", "host_group", "start", "finish", "planner", "adversary", "jitter", "objectives", "facts",
            "steps", "skipped_abilities"} <= set(report)  # fmt: skip
    steps = report["steps"]["p1"]["steps"]
    assert [s["ability_id"] for s in steps] == ["a", "manual", "a"]
    assert steps[0]["output"] == {
        "stdout": "line one\nline two\n",
        "stderr": "",
        "exit_code": "0",
    }  # newlines kept
    assert steps[0]["attack"] == {"tactic": "discovery", "technique_name": "", "technique_id": "T1082"}
    assert report["host_group"][0]["display_name"] == "h1$u" and report["planner"] == "atomic"
    assert "output" not in operation_report(op)["steps"]["p1"]["steps"][0]
    events = event_logs(op, agent_output=True)
    assert len(events) == 3 and all(e["status"] == 0 for e in events)  # the skipped link is not an event
    assert (
        events[0]["agent_metadata"]["paw"] == "p1" and events[0]["attack_metadata"]["technique_id"] == "T1082"
    )
    assert events[0]["operation_metadata"]["operation_adversary"] == "adv"
    assert events[0]["collected_timestamp"] is not None and events[0]["output"]["exit_code"] == "0"


def test_planner_registry() -> None:
    assert isinstance(planner("atomic"), AtomicPlanner)
    assert isinstance(planner("aaa7c857-37a0-4c4a-85f7-4e9f7f30e31a"), AtomicPlanner)
    with pytest.raises(EmulationError, match="unknown planner 'nope'"):
        planner("nope")


def _line(trait: str):  # type: ignore[no-untyped-def]
    from assay.content import ParserConfig

    return ParserConfig("plugins.stockpile.app.parsers.basic", trait)
