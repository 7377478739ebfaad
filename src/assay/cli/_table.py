"""Render a validation report for a terminal: the summary, the per-technique table, the misses and why."""

from __future__ import annotations

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from assay.reports import ReportPaths
from assay.validation import Outcome, RoundDelta, RoundReport

OUTCOME_STYLE: dict[str, str] = {
    Outcome.DETECTED: "bold green",
    Outcome.MISSED_SUPPRESSED: "yellow",
    Outcome.MISSED_NO_RULE: "bold red",
    Outcome.MISSED_NO_TELEMETRY: "red",
    Outcome.INCONCLUSIVE: "magenta",
    Outcome.NOT_EXECUTED: "dim",
}


def summary_table(report: RoundReport) -> Table:
    """Every figure is a subset of the one before it that it is a rate of: detected and exact are among the
    testable; "+unmapped" are detected techniques no rule claims (not testable), counted only in rate/exec."""
    s = report.summary
    table = Table(
        title="Validation summary",
        box=box.SIMPLE_HEAD,
        header_style="bold",
        pad_edge=False,
        padding=0,  # nine columns at 80: the box puts one space between them
    )
    for col in (
        "mapped",
        "profile",
        "executed",
        "testable",
        "detected",
        "exact",
        "rate/test",
        "+unmapped",
        "rate/exec",
    ):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_row(
        str(s.mapped),
        str(s.in_profile),
        str(s.executed),
        str(s.testable),
        str(s.detected),
        str(s.detected_exact),
        f"{s.detection_rate_testable:.0%}",
        str(s.detected_unmapped),
        f"{s.detection_rate_executed:.0%}",
    )
    return table


def technique_table(report: RoundReport) -> Table:
    table = Table(
        title="Techniques", box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, collapse_padding=True
    )
    # One line per technique at 80 columns: tactics become section rows, and only the name gives way.
    table.add_column("technique", no_wrap=True, min_width=9)
    table.add_column("name", no_wrap=True, overflow="ellipsis", max_width=24)
    table.add_column("rule", no_wrap=True, min_width=4)
    table.add_column("outcome", no_wrap=True, min_width=19)
    table.add_column("events", justify="right", no_wrap=True)
    table.add_column("alerts", justify="right", no_wrap=True)
    tactic = None
    for t in report.techniques:
        if t.tactic != tactic:
            tactic = t.tactic
            table.add_row("", Text(tactic or "(no tactic)", style="bold cyan"))
        table.add_row(
            t.technique_id,
            t.name,
            "yes" if t.mapped else "no",
            Text(str(t.outcome), style=OUTCOME_STYLE.get(t.outcome, "")),
            str(sum(r.events_seen for r in t.links)),
            str(sum(len(r.alerts) for r in t.links)),
        )
    return table


def misses(report: RoundReport) -> Group:
    lines: list[Text] = [Text("Misses and why", style="bold")]
    for t in report.misses:
        line = Text(f"  {t.technique_id} {t.name}: ")
        line.append(str(t.outcome), style=OUTCOME_STYLE.get(t.outcome, ""))
        if t.reason_code is not None:
            line.append(f" ({t.reason_code})")
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


def print_delta(delta: RoundDelta, console: Console, title: str = "Change since the previous round") -> None:
    """The change since another round: regressions first, then newly failing, then newly detected, then the
    rest."""
    head = Text(title, style="bold")
    rates = ", ".join(
        f"{k.replace('detection_rate_', 'rate/')} {v:+.0%}" if "rate" in k else f"{k} {v:+g}"
        for k, v in delta.summary.items()
        if v
    )
    console.print(head, Text(f" ({rates})" if rates else " (summary unchanged)"))
    if not delta.changes:
        console.print("  no technique changed outcome")
    failing = {c.technique_id for c in delta.newly_failing}
    sections = (
        ("regressed", "bold red", delta.regressions),
        ("newly failing", "red", [c for c in delta.newly_failing if c.kind != "no_longer_detected"]),
        ("newly detected", "green", delta.newly_detected),
    )
    for label, style, changes in sections:
        for c in changes:
            extra = ", now not executed" if label == "regressed" and c.technique_id in failing else ""
            console.print(Text(f"  {label}: {c.technique_id}: {c.before} -> {c.after}{extra}", style=style))
    shown = {c.technique_id for _, _, changes in sections for c in changes}
    for c in delta.changes:
        if c.kind == "changed" and c.technique_id not in shown:
            console.print(Text(f"  changed: {c.technique_id}: {c.before} -> {c.after}"))
    # Techniques only one of the rounds ran are counted, not listed one by one: after a change of adversary
    # they are most of the list and would bury the regressions.
    for kind, where in (("new", "not in the previous round"), ("dropped", "not in this round")):
        ids = [c.technique_id for c in delta.changes if c.kind == kind]
        if ids:
            listed = ", ".join(ids[:6]) + (", ..." if len(ids) > 6 else "")
            console.print(
                f"  {len(ids)} technique(s) {where} ({kind}): {listed}; all in the report's 'change'"
            )


def print_written(paths: ReportPaths, console: Console) -> None:
    """Where the round's reports went: the JSON, and the Markdown, HTML and Navigator layer beside it."""
    console.print(f"report: {paths.json.resolve()}")
    console.print(
        f"        {paths.html.name} (open in a browser), {paths.markdown.name} (CI log), "
        f"{paths.layer.name} (ATT&CK Navigator layer 4.5), in {paths.json.resolve().parent}"
    )
