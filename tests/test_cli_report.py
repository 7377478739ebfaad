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
    assert "missed_no_telemetry -> detected (now_detected)" in console.export_text()


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
