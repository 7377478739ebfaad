"""Render a validation report for a terminal: the summary, the per-technique table, the misses and why."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from assay.validation import Outcome, RoundReport

OUTCOME_STYLE: dict[str, str] = {
    Outcome.DETECTED: "bold green",
    Outcome.MISSED_SUPPRESSED: "yellow",
    Outcome.MISSED_NO_RULE: "bold red",
    Outcome.MISSED_NO_TELEMETRY: "red",
    Outcome.INCONCLUSIVE: "magenta",
    Outcome.NOT_EXECUTED: "dim",
}


def summary_table(report: RoundReport) -> Table:
    s = report.summary
    table = Table(title="Validation summary", show_header=True, header_style="bold")
    for col in (
        "mapped",
        "in profile",
        "executed",
        "testable",
        "detected",
        "rate (testable)",
        "rate (executed)",
    ):
        table.add_column(col, justify="right")
    table.add_row(
        str(s.mapped),
        str(s.in_profile),
        str(s.executed),
        str(s.testable),
        str(s.detected),
        f"{s.detection_rate_testable:.0%}",
        f"{s.detection_rate_executed:.0%}",
    )
    return table


def technique_table(report: RoundReport) -> Table:
    table = Table(title="Techniques", show_header=True, header_style="bold", expand=False)
    table.add_column("tactic")
    table.add_column("technique")
    table.add_column("name")
    table.add_column("rule?", justify="center")
    table.add_column("outcome")
    table.add_column("events", justify="right")
    table.add_column("alerts", justify="right")
    for t in report.techniques:
        events = sum(r.events_seen for r in t.links)
        alerts = sum(len(r.alerts) for r in t.links)
        table.add_row(
            t.tactic,
            t.technique_id,
            t.name,
            "yes" if t.mapped else "no",
            Text(str(t.outcome), style=OUTCOME_STYLE.get(t.outcome, "")),
            str(events),
            str(alerts),
        )
    return table


def misses(report: RoundReport) -> Group:
    lines: list[Text] = [Text("Misses and why", style="bold")]
    for t in report.misses:
        line = Text(f"  {t.technique_id} {t.name}: ")
        line.append(str(t.outcome), style=OUTCOME_STYLE.get(t.outcome, ""))
        line.append(f" - {t.reason}")
        lines.append(line)
    if len(lines) == 1:
        lines.append(Text("  none"))
    if report.unexplained_alerts:
        lines.append(
            Text(f"Alerts no link explains (false-positive candidates): {len(report.unexplained_alerts)}")
        )
        for a in report.unexplained_alerts[:10]:
            lines.append(Text(f"  {a.rule_id} {a.title} on pid {a.pid}"))
    if report.events_dropped:
        lines.append(Text(f"Sensor loss: {report.events_dropped} events dropped", style="magenta"))
    return Group(*lines)


def print_report(report: RoundReport, console: Console) -> None:
    console.print(technique_table(report))
    console.print(summary_table(report))
    console.print(misses(report))
