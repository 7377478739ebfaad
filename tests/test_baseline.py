"""`assay baseline`'s rate computation: alerts split by process tree and window, rated per hour by rule."""

from __future__ import annotations

from assay.events import Alert, Suppression
from assay.validation import baseline_report
from assay.workload import SETUP_STEP

WORKLOAD, AGENT, OTHER = "100:5", "200:6", "300:7"


def alert(rule: str, ts: float, root: str, suppressed: bool = False) -> Alert:
    return Alert(
        rule_id=rule,
        title=f"rule {rule}",
        level="low",
        techniques=("T1000",),
        timestamp=ts,
        lineage=("999:1", root),
        suppressed_by=Suppression("entry", "why") if suppressed else None,
    )


def test_rates_split_by_tree_window_and_suppression() -> None:
    alerts = [
        alert("a", 1010.0, WORKLOAD),
        alert("a", 1020.0, WORKLOAD),
        alert("b", 1030.0, WORKLOAD, suppressed=True),
        alert("c", 1040.0, OTHER),
        alert("d", 1050.0, AGENT),
        alert("e", 995.0, WORKLOAD),  # during set-up
        alert("f", 3000.0, WORKLOAD),  # after the end
    ]
    records = [
        {"step": SETUP_STEP, "ok": True, "commands": [{"returncode": 0}]},
        {"step": "git", "ok": True, "commands": [{}, {}]},
        {"step": "git", "ok": False, "error": "git exited 1", "commands": [{}]},
    ]
    rep = baseline_report(
        alerts,
        workload_root=WORKLOAD,
        agent_root=AGENT,
        started=1000.0,
        ended=1000.0 + 1800.0,
        setup_started=990.0,
        step_records=records,
    )
    assert rep.hours == 0.5
    by_rule = {r.rule_id: r for r in rep.false_alerts}
    assert by_rule["a"].count == 2 and by_rule["a"].per_hour == 4.0
    assert by_rule["d"].count == 1 and rep.agent_alerts == 1
    assert set(by_rule) == {"a", "d"}
    assert rep.false_alert_count == 3 and rep.false_alerts_per_hour == 6.0
    assert [r.rule_id for r in rep.suppressed] == ["b"] and rep.suppressed[0].suppressed_by == "entry"
    assert [r.rule_id for r in rep.outside] == ["c"]
    assert [r.rule_id for r in rep.setup] == ["e"]
    git = next(s for s in rep.steps if s.step == "git")
    assert (git.runs, git.ok, git.commands, git.errors) == (2, 1, 3, ["git exited 1"])
    doc = rep.to_dict()
    assert doc["false_alerts"]["per_hour"] == round(rep.false_alert_count / 0.5, 2)


def test_examples_and_report_rows_never_show_a_secret_given_on_a_command_line() -> None:
    from assay.events import Event
    from assay.validation._report import event_row

    line = "python3 -m assay.agent --server http://127.0.0.1:9 --enrol-token s3cr3t-T0ken --group g"
    ev = Event.of("exec", "ebpf", 1010.0, host="h", values={"process.command_line": line})
    leaked = Alert(
        rule_id="a", title="rule a", level="low", techniques=("T1000",), timestamp=1010.0,
        lineage=("999:1", WORKLOAD), events=(ev,),
    )  # fmt: skip
    rep = baseline_report(
        [leaked], workload_root=WORKLOAD, agent_root=AGENT, started=1000.0, ended=4600.0,
        setup_started=990.0, step_records=[],
    )  # fmt: skip
    (rate,) = rep.false_alerts
    assert (
        rate.example is not None
        and "s3cr3t" not in rate.example
        and "--enrol-token <redacted>" in rate.example
    )
    assert "s3cr3t" not in event_row(ev)["detail"]
