"""``assay-report.md``: the round as a CI log or a job summary reads it (GitHub-flavoured Markdown tables).

The summary's columns are those of the terminal table, with the same promise: every figure is a subset of
the one it is a rate of (detected of testable; detected-but-unmapped apart).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from assay.reports._view import OUTCOME_LABEL, RoundView, TechniqueRow, round_view

CHANGES_LISTED = 30  # per kind; the JSON's "change" has them all


def _cell(value: Any) -> str:
    """A table cell on one line: pipes escaped, newlines folded, backticks kept out of code spans."""
    text = " ".join(str(value).split())
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _code(value: str, limit: int = 160) -> str:
    """Inline code: one line, shortened; a double-backtick span when the command itself has backticks."""
    text = " ".join(value.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _pct(value: Any) -> str:
    return f"{float(value):.0%}" if isinstance(value, int | float) else "-"


def _summary(view: RoundView) -> list[str]:
    s = view.summary
    head = [
        "mapped",
        "in profile",
        "executed",
        "testable",
        "detected (of testable)",
        "exact",
        "rate / testable",
        "+ detected, unmapped",
        "rate / executed",
    ]
    row = [
        s.get("mapped", "-"),
        s.get("in_profile", "-"),
        s.get("executed", "-"),
        s.get("testable", "-"),
        f"{s.get('detected', '-')} of {s.get('testable', '-')}",
        s.get("detected_exact", "-"),
        f"**{_pct(s.get('detection_rate_testable'))}**",
        s.get("detected_unmapped", "-"),
        _pct(s.get("detection_rate_executed")),
    ]
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---:|" * len(head),
        "| " + " | ".join(_cell(v) for v in row) + " |",
    ]


def _technique_table(techniques: list[TechniqueRow]) -> list[str]:
    out = [
        "| technique | name | tactic | rule | outcome | rule fired / why not |",
        "|---|---|---|:-:|---|---|",
    ]
    for t in techniques:
        why = "; ".join(t.rules_fired[:3]) if t.outcome == "detected" else t.reason
        out.append(
            "| "
            + " | ".join(
                [
                    f"`{t.technique_id}`",
                    _cell(t.name),
                    _cell(t.tactic),
                    "yes" if t.mapped else "no",
                    _cell(OUTCOME_LABEL.get(t.outcome, t.outcome)),
                    _cell(why[:240]),
                ]
            )
            + " |"
        )
    return out


def _misses(view: RoundView) -> list[str]:
    misses = view.misses
    out = [f"### Misses ({len(misses)})", ""]
    if not misses:
        out.append("None: every technique that ran was detected.")
    by_class = Counter(t.outcome for t in misses)
    if misses:
        out.append(
            "By class: " + ", ".join(f"{OUTCOME_LABEL.get(k, k)} {n}" for k, n in by_class.most_common())
        )
        out.append("")
    for t in misses:
        out.append(f"- **{t.technique_id}** {t.name} ({_cell(t.tactic)}): *{OUTCOME_LABEL.get(t.outcome)}*")
        out.append(f"  - why: {_cell(t.reason)}")
        cmd = next((lk.command for lk in t.links if lk.outcome == t.outcome and lk.command), "")
        if cmd:
            out.append(f"  - ran: {_code(cmd)}")
    return out


def _not_run(view: RoundView) -> list[str]:
    rows = view.not_run
    if not rows:
        return []
    codes = Counter(t.reason_code or "other" for t in rows)
    out = [
        f"### Not executed ({len(rows)})",
        "",
        "By reason: " + ", ".join(f"{k} {n}" for k, n in codes.most_common()),
        "",
    ]
    out += [f"- **{t.technique_id}** {t.name} ({t.reason_code or 'other'}): {_cell(t.reason)}" for t in rows]
    return out


def _change(change: Mapping[str, Any]) -> list[str]:
    out = ["### Change since the previous round", ""]
    summary = {k: v for k, v in (change.get("summary") or {}).items() if v}
    if summary:
        out.append(
            "Summary: "
            + ", ".join(f"{k} {v:+.0%}" if "rate" in k else f"{k} {v:+g}" for k, v in summary.items())
        )
    for key, label in (
        ("regressions", "Regressed"),
        ("newly_failing", "Newly failing"),
        ("newly_detected", "Newly detected"),
    ):
        ids = [str(i) for i in change.get(key) or []]
        if ids:
            more = f" and {len(ids) - CHANGES_LISTED} more" if len(ids) > CHANGES_LISTED else ""
            out.append(f"- **{label}** ({len(ids)}): " + ", ".join(ids[:CHANGES_LISTED]) + more)
    if len(out) == 2:
        out.append("No technique changed outcome.")
    return out


def render_markdown(report: Mapping[str, Any]) -> str:
    """The round report (its JSON) as Markdown: summary table, techniques, misses with reasons."""
    view = round_view(report)
    meta = view.meta
    facts = [
        f"round `{meta['round_id']}`" if meta.get("round_id") else None,
        f"operation `{meta['operation_id']}`" if meta.get("operation_id") else None,
        f"sensor {meta['sensor_source']}" if meta.get("sensor_source") else None,
        f"{view.sensor.get('events', 0)} events ({view.sensor.get('dropped', 0)} dropped)",
        f"{meta['rules']} rules" if meta.get("rules") else None,
        "sandboxed" if meta.get("sandbox") else None,
        f"rules `{str(meta['rules_hash'])[:12]}`" if meta.get("rules_hash") else None,
        f"content `{str(meta['content_hash'])[:12]}`" if meta.get("content_hash") else None,
        str(meta["created"]) if meta.get("created") else None,
    ]
    lines = [f"## {view.title}", "", " · ".join(f for f in facts if f), ""]
    lines += _summary(view)
    lines += [
        "",
        "*detected* counts testable techniques only (executed, and a rule claims them); "
        "*+ detected, unmapped* are techniques no rule claims that a rule for another technique caught.",
        "",
    ]
    if view.change is not None:
        lines += [*_change(view.change), ""]
    lines += [*_misses(view), ""]
    if view.not_run:
        lines += [*_not_run(view), ""]
    lines += [f"### Techniques ({len(view.techniques)})", "", *_technique_table(view.techniques), ""]
    if view.not_validated:
        ids = ", ".join(t.technique_id for t in view.not_validated)
        lines += [f"### Mapped, not validated ({len(view.not_validated)})", "", ids, ""]
    if view.unexplained_alerts:
        lines += [
            f"### Alerts no link explains ({len(view.unexplained_alerts)}): false-positive candidates",
            "",
        ]
        for a in view.unexplained_alerts[:20]:
            rule = a.get("rule") or {}
            proc = a.get("process") or {}
            lines.append(
                f"- {_cell(rule.get('id', '?'))} {_cell(rule.get('title', ''))} on pid {proc.get('pid')}"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
