"""Validation on synthetic records: every outcome, and the identity rules attribution depends on."""

from __future__ import annotations

from typing import Any

import pytest

from assay.events import Action, Alert, Event, Suppression, entity_id
from assay.validation import LinkRecord, Outcome, validate

AGENT = entity_id(100, 50)
CONSUMED = frozenset({"exec", "file_write", "connect", "file_delete"})
T0 = 1_000.0


def ev(action: str, pid: int, ticks: int, ts: float, parent: str | None = AGENT, **extra: Any) -> Event:
    values: dict[str, Any] = {"process.pid": pid, "process.entity_id": entity_id(pid, ticks)}
    if parent:
        values["process.parent.entity_id"] = parent
        values["process.ancestry"] = [parent, *([] if parent == AGENT else [AGENT])]
    values.update(extra)
    return Event.of(action, "synthetic", ts, host="h", values=values)


def link(link_id: str, technique: str, pid: int, ticks: int | None, **kw: Any) -> LinkRecord:
    base: dict[str, Any] = dict(
        link_id=link_id,
        ability_id=f"ab-{link_id}",
        technique_id=technique,
        command="...",
        status=0,
        host="h",
        pid=pid,
        start_ticks=ticks,
        exit_code=0,
        started=T0,
        finished=T0 + 1,
        tactic="discovery",
    )
    base.update(kw)
    return LinkRecord(**base)


def harness(pid: int, ticks: int, ts: float = T0 + 0.01) -> list[Event]:
    """What the sensor sees of the executor process itself: its fork, its exec, its exit."""
    return [
        ev(Action.FORK, pid, ticks, ts),
        ev(Action.EXEC, pid, ticks, ts + 0.001, **{"process.name": "sh"}),
        ev(Action.EXIT, pid, ticks, ts + 0.5),
    ]


def alert_on(event: Event, technique: str, suppressed: Suppression | None = None) -> Alert:
    return Alert.for_events(
        rule_id=f"rule-{technique}",
        title=f"rule for {technique}",
        level="high",
        techniques=[technique],
        events=[event],
        suppressed_by=suppressed,
    )


def child_exec(root_pid: int, root_ticks: int, pid: int, name: str = "cat") -> Event:
    return ev(
        Action.EXEC,
        pid,
        root_ticks + 1,
        T0 + 0.1,
        parent=entity_id(root_pid, root_ticks),
        **{"process.name": name},
    )


def run(links: list[LinkRecord], events: list[Event], alerts: list[Alert], mapped: set[str] | None = None):
    return validate(
        links,
        events,
        alerts,
        mapped_techniques=mapped if mapped is not None else {lk.technique_id for lk in links},
        consumed_actions=CONSUMED,
    )


def outcome(report: Any, link_id: str) -> Outcome:
    return next(r.outcome for r in report.links if r.link.link_id == link_id)


def test_each_outcome_on_one_round() -> None:
    events: list[Event] = []
    alerts: list[Alert] = []
    links = [
        link("det", "T1082", 201, 10),
        link("norule", "T1049", 202, 20),
        link("notel", "T1016", 203, 30),
        link("sup", "T1057", 204, 40),
        link("loss", "T1033", 205, 50, started=T0 + 10, finished=T0 + 11),
        link("fail", "T1087.001", 206, 60, status=1, exit_code=2, stderr="cat: /nope: No such file\n"),
        link("skip", "T1548", 0, None, status=None, skip_reason="privilege: needs Elevated"),
    ]
    for lk in links[:6]:
        events += harness(lk.pid or 0, lk.start_ticks or 0)
    det_child = child_exec(201, 10, 301, "uname")
    events.append(det_child)
    alerts.append(alert_on(det_child, "T1082"))
    events.append(child_exec(202, 20, 302, "ss"))
    sup_child = child_exec(204, 40, 304, "ps")
    events.append(sup_child)
    alerts.append(alert_on(sup_child, "T1057", Suppression("monitoring", "our agent lists processes")))
    events.append(child_exec(205, 50, 305, "id"))
    events.append(
        Event.of(
            Action.LOSS,
            "ebpf",
            T0 + 0.5,
            host="h",
            values={"loss.count": 7, "loss.window.start": T0 + 10.2, "loss.window.end": T0 + 10.4},
        )
    )

    report = run(links, events, alerts)
    got = {r.link.link_id: r.outcome for r in report.links}
    assert got == {
        "det": Outcome.DETECTED,
        "norule": Outcome.MISSED_NO_RULE,
        "notel": Outcome.MISSED_NO_TELEMETRY,
        "sup": Outcome.MISSED_SUPPRESSED,
        "loss": Outcome.INCONCLUSIVE,
        "fail": Outcome.NOT_EXECUTED,
        "skip": Outcome.NOT_EXECUTED,
    }
    reasons = {r.link.link_id: r.reason for r in report.links}
    assert "suppressed by monitoring: our agent lists processes" in reasons["sup"]
    assert "exec x1 (exec: ss)" in reasons["norule"]
    assert "dropped 7 events" in reasons["loss"]
    assert "exit code 2" in reasons["fail"] and "No such file" in reasons["fail"]
    assert reasons["skip"] == "skipped: privilege: needs Elevated"
    det = next(r for r in report.links if r.link.link_id == "det")
    assert det.exact and det.events_seen == 4 and det.usable_events == 1


def test_builtins_only_link_is_no_telemetry_not_no_rule() -> None:
    # The executor's own fork/exec/exit are the harness; nothing else happened in the lineage.
    report = run([link("b", "T1016", 210, 7)], harness(210, 7), [])
    assert outcome(report, "b") == Outcome.MISSED_NO_TELEMETRY
    assert "(only fork x1, exec x1, exit x1" in report.links[0].reason


def test_exec_in_place_after_the_harness_counts_as_behaviour() -> None:
    # dash may exec its last command in the same process: same entity id, a second exec.
    events = [*harness(220, 9), ev(Action.EXEC, 220, 9, T0 + 0.2, **{"process.name": "ss"})]
    report = run([link("x", "T1049", 220, 9)], events, [])
    assert outcome(report, "x") == Outcome.MISSED_NO_RULE


def test_pid_reuse_does_not_attribute_another_process() -> None:
    # Same pid, different start ticks: an unrelated process that later reused pid 230.
    other = ev(Action.EXEC, 231, 999, T0 + 0.3, parent=entity_id(230, 888), **{"process.name": "curl"})
    alerts = [alert_on(other, "T1105")]
    report = run([link("r", "T1105", 230, 11)], [*harness(230, 11), other], alerts)
    assert outcome(report, "r") == Outcome.MISSED_NO_TELEMETRY
    assert [a.rule_id for a in report.unexplained_alerts] == ["rule-T1105"]


def test_a_late_event_of_a_detached_child_still_belongs_to_its_link() -> None:
    # The link's command backgrounds a child (`nohup ... &`) and returns; the child is re-parented to init
    # and acts after the link's result was in. Attribution follows lineage recorded at fork, not time, so
    # the late action is the link's; an unrelated process acting at the same moment is not.
    root = entity_id(280, 6)
    late = ev(
        Action.FILE_WRITE,
        380,
        7,
        T0 + 30,  # the link finished at T0 + 1
        parent=entity_id(1, 1),  # re-parented: only the ancestry recorded at fork leads to the link
        **{"process.ancestry": [root, AGENT], "file.path": "/tmp/x"},
    )
    stranger = ev(Action.FILE_WRITE, 390, 8, T0 + 30, parent=entity_id(1, 1), **{"file.path": "/tmp/x"})
    alerts = [alert_on(late, "T1053.003"), alert_on(stranger, "T1053.003")]
    report = run([link("bg", "T1053.003", 280, 6)], [*harness(280, 6), late, stranger], alerts)
    assert outcome(report, "bg") == Outcome.DETECTED
    assert report.links[0].exact
    assert [a.entity_id for a in report.unexplained_alerts] == [entity_id(390, 8)]


def test_pid_only_link_from_a_caldera_agent_resolves_by_time() -> None:
    # No start ticks: the root is the pid-240 entity first seen inside the link's run, not the older one.
    old = ev(Action.EXEC, 240, 1, T0 - 500, **{"process.name": "sleep"})
    child = child_exec(240, 77, 341, "uname")
    events = [old, *harness(240, 77), child]
    report = run([link("c", "T1082", 240, None)], events, [alert_on(child, "T1082")])
    assert report.links[0].root == entity_id(240, 77)
    assert outcome(report, "c") == Outcome.DETECTED


def test_alert_with_another_technique_is_detected_but_not_exact() -> None:
    child = child_exec(250, 5, 350, "python3")
    report = run([link("n", "T1059.006", 250, 5)], [*harness(250, 5), child], [alert_on(child, "T1105")])
    res = report.links[0]
    assert res.outcome == Outcome.DETECTED and not res.exact
    assert "not exact" in res.reason


def test_cleanup_alerts_are_explained_but_not_scored() -> None:
    child = child_exec(260, 3, 360, "rm")
    links = [link("main", "T1070.003", 261, 4), link("clean", "T1070.003", 260, 3, cleanup=True)]
    report = run(links, [*harness(261, 4), *harness(260, 3), child], [alert_on(child, "T1070.004")])
    assert report.unexplained_alerts == []
    assert [r.link.link_id for r in report.cleanup_links] == ["clean"]
    assert [t.technique_id for t in report.techniques] == ["T1070.003"]


def test_rollup_best_link_wins_and_rates() -> None:
    d = child_exec(270, 1, 370)
    links = [
        link("a1", "T1082", 270, 1),
        link("a2", "T1082", 271, 2),  # second link of the same technique, missed
        link("b", "T1049", 272, 3),  # not mapped by any rule
        link("c", "T1016", 273, 4, status=124),  # timed out
    ]
    events = [
        *harness(270, 1),
        d,
        *harness(271, 2),
        child_exec(271, 2, 371),
        *harness(272, 3),
        child_exec(272, 3, 372),
    ]
    report = run(links, events, [alert_on(d, "T1082")], mapped={"T1082", "T1016", "T1003"})
    by_tid = {t.technique_id: t for t in report.techniques}
    assert by_tid["T1082"].outcome == Outcome.DETECTED
    assert by_tid["T1049"].outcome == Outcome.MISSED_NO_RULE and not by_tid["T1049"].mapped
    assert by_tid["T1016"].outcome == Outcome.NOT_EXECUTED
    s = report.summary
    assert (s.mapped, s.in_profile, s.executed, s.testable, s.detected) == (3, 3, 2, 1, 1)
    assert s.detection_rate_testable == 1.0 and s.detection_rate_executed == 0.5
    assert report.mapped_not_validated == ["T1003", "T1016"]


def test_report_json_has_the_documented_shape() -> None:
    report = run([link("a", "T1082", 280, 1)], harness(280, 1), [])
    data = report.to_dict()
    assert set(data["summary"]) >= {
        "mapped",
        "in_profile",
        "executed",
        "testable",
        "detected",
        "detection_rate_testable",
        "detection_rate_executed",
    }
    (tech,) = data["techniques"]
    assert (
        tech["technique_id"] == "T1082"
        and tech["outcome"] == "missed_no_telemetry"
        and tech["links"] == ["a"]
    )
    (lk,) = data["links"]
    assert {
        "link_id",
        "ability_id",
        "technique_id",
        "command",
        "pid",
        "exit_code",
        "outcome",
        "alerts",
    } <= set(lk)
    assert lk["events_seen"] == 3


@pytest.mark.parametrize("status", [-3, -2, -4])
def test_links_that_never_finished_are_not_executed(status: int) -> None:
    report = run([link("p", "T1082", 290, 1, status=status, exit_code=None)], [], [])
    assert outcome(report, "p") == Outcome.NOT_EXECUTED


def test_compare_rounds_orders_regressions_first() -> None:
    from assay.validation import compare

    def rep(op: str, outcomes: dict[str, str], detected: int) -> dict[str, Any]:
        return {
            "meta": {"operation_id": op},
            "summary": {"detected": detected, "detection_rate_executed": detected / 4},
            "techniques": [{"technique_id": t, "outcome": o} for t, o in outcomes.items()],
        }

    before = rep("op1", {"T1082": "detected", "T1049": "missed_no_rule", "T1016": "missed_no_telemetry"}, 1)
    after = rep("op2", {"T1082": "missed_no_rule", "T1049": "detected", "T1057": "detected"}, 2)
    delta = compare(before, after)
    assert delta.previous == "op1"
    assert [(c.technique_id, c.kind) for c in delta.changes] == [
        ("T1082", "no_longer_detected"),
        ("T1049", "now_detected"),
        ("T1057", "new"),
        ("T1016", "dropped"),
    ]
    assert [c.technique_id for c in delta.regressions] == ["T1082"]
    assert delta.summary == {"detected": 1.0, "detection_rate_executed": 0.25}
    assert compare(after, after).changes == []


def test_compare_rejects_a_report_without_techniques() -> None:
    from assay.errors import AttributionError
    from assay.validation import compare

    with pytest.raises(AttributionError, match="previous report"):
        compare({"summary": {}}, {"techniques": []})
