"""How a round reads in a terminal: one line per technique at 80 columns, changes since the last round."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from assay.cli._table import print_delta, technique_table
from assay.cli.demo import _previous_report
from assay.validation import LinkRecord, compare, validate


def _report():  # type: ignore[no-untyped-def]
    links = [
        LinkRecord(
            link_id=str(i),
            ability_id="a",
            technique_id=tid,
            command="",
            status=0,
            tactic=tactic,
            pid=10 + i,
            start_ticks=1,
            started=1.0,
            finished=2.0,
        )
        for i, (tid, tactic) in enumerate(
            [("T1222.002", "defense-evasion"), ("T1048.003", "exfiltration"), ("T1016", "discovery")]
        )
    ]
    return validate(links, [], [], mapped_techniques={"T1016"}, consumed_actions={"exec"})


def test_each_technique_is_one_line_at_80_columns() -> None:
    console = Console(width=80, record=True)
    console.print(technique_table(_report()))
    lines = console.export_text().splitlines()
    for tid in ("T1222.002", "T1048.003", "T1016"):
        (line,) = [ln for ln in lines if tid in ln]
        assert "missed_no_telemetry" in line and line.rstrip().endswith("0")  # events and alerts columns fit
    assert all(len(ln) <= 80 for ln in lines)


def test_previous_report_is_compared_and_a_broken_one_is_reported(tmp_path: Path) -> None:
    console = Console(width=80, record=True)
    path = tmp_path / "assay-report.json"
    assert _previous_report(path, console) is None  # first round: nothing to compare
    path.write_text("{not json")
    assert _previous_report(path, console) is None
    assert "unreadable" in console.export_text()
    before = _report().to_dict()
    after = dict(
        before, techniques=[dict(before["techniques"][0], outcome="detected"), *before["techniques"][1:]]
    )
    print_delta(compare(before, after), console)
    assert "newly detected: T1222.002: missed_no_telemetry -> detected" in console.export_text()
    regressed = dict(
        before, techniques=[dict(before["techniques"][0], outcome="not_executed"), *before["techniques"][1:]]
    )
    console = Console(width=80, record=True)
    print_delta(compare(after, regressed), console)
    text = console.export_text()
    assert "regressed: T1222.002: detected -> not_executed, now not executed" in text
    assert "newly failing" not in text  # listed once, as the regression it is
    console = Console(width=80, record=True)
    print_delta(compare(before, regressed), console)
    assert "newly failing: T1222.002: missed_no_telemetry -> not_executed" in console.export_text()


def test_the_summary_shows_detected_of_testable_and_detected_unmapped_apart() -> None:
    from assay.cli._table import summary_table
    from assay.events import Action, Alert, Event, entity_id

    links = [
        LinkRecord(
            link_id=tid,
            ability_id="a",
            technique_id=tid,
            command="",
            status=0,
            tactic="discovery",
            pid=20 + i,
            start_ticks=1,
            started=1.0,
            finished=2.0,
        )
        for i, tid in enumerate(["T1082", "T1049", "T1016"])
    ]
    events = [
        Event.of(
            Action.EXEC,
            "synthetic",
            1.5,
            values={
                "process.pid": 30 + i,
                "process.entity_id": entity_id(30 + i, 2),
                "process.ancestry": [entity_id(20 + i, 1)],
            },
        )
        for i in range(3)
    ]
    # T1082 (mapped) detected exactly; T1049 (no rule) detected by T1082's rule; T1016 (mapped) missed.
    alerts = [
        Alert.for_events(rule_id="r", title="r", level="low", techniques=["T1082"], events=[events[i]])
        for i in (0, 1)
    ]
    report = validate(links, events, alerts, mapped_techniques={"T1082", "T1016"}, consumed_actions={"exec"})
    s = report.summary
    assert (s.executed, s.testable, s.detected, s.detected_exact, s.detected_unmapped) == (3, 2, 1, 1, 1)
    assert s.detected <= s.testable <= s.executed
    assert (s.detection_rate_testable, s.detection_rate_executed) == (0.5, round(2 / 3, 4))
    console = Console(width=80, record=True)
    console.print(summary_table(report))
    header, row = [ln.split() for ln in console.export_text().splitlines() if ln.strip()][1:4:2]
    assert header == [
        "mapped", "profile", "executed", "testable", "detected", "exact", "rate/test", "+unmapped",
        "rate/exec",
    ]  # fmt: skip
    assert row == ["2", "3", "3", "2", "1", "1", "50%", "1", "67%"]


def test_techniques_only_one_round_ran_are_counted_not_listed() -> None:
    console = Console(width=200, record=True)
    before = _report().to_dict()
    first, rest = before["techniques"][0], before["techniques"][1:]
    after = dict(before, techniques=[*rest, *(dict(first, technique_id=f"T9{i:03d}") for i in range(8))])
    print_delta(compare(before, after), console)
    text = console.export_text()
    assert "8 technique(s) not in the previous round (new): T9000, T9001" in text
    assert "T9007" not in text  # the rest stays in the report, not on the screen
    assert f"1 technique(s) not in this round (dropped): {first['technique_id']};" in text
