"""``assay-report.html``: the round as one self-contained page (inline CSS and a few lines of inline script,
nothing fetched): the ATT&CK matrix of the Linux tactics coloured by standing, the validation table, and a
drill-down per technique to the command that ran, the events the sensor saw, the alert that fired or the
reason for the miss.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import jinja2

from assay.reports._view import (
    LINUX_TACTICS,
    OUTCOME_LABEL,
    STANDINGS,
    RoundView,
    Standing,
    TechniqueRow,
    _catalogue_tactic,
    round_view,
)

OUTCOME_ORDER = tuple(OUTCOME_LABEL)


@dataclass
class Column:
    tactic: str
    title: str
    cells: list[TechniqueRow]

    @property
    def detected(self) -> int:
        return sum(1 for c in self.cells if c.in_round and c.outcome == "detected")

    @property
    def ran(self) -> int:
        return sum(1 for c in self.cells if c.in_round)


@cache
def _tactic_title(tactic: str) -> str:
    from assay import attack
    from assay.errors import AttackError

    try:
        return attack.tactic(tactic).name
    except AttackError:
        return tactic.replace("-", " ").title() or "(no tactic)"


def matrix(view: RoundView) -> list[Column]:
    """One column per Linux tactic, in kill-chain order, each with the techniques filed under it.

    A technique of the round sits under the tactic its procedure names (when that is a Linux tactic),
    else under the first Linux tactic ATT&CK gives it; unknown tactics get columns of their own at the end.
    """
    by_tactic: dict[str, list[TechniqueRow]] = {t: [] for t in LINUX_TACTICS}
    for t in view.every:
        tactic = t.tactic
        if tactic not in LINUX_TACTICS:
            alt = _catalogue_tactic(t.technique_id)[1]
            tactic = alt if alt in LINUX_TACTICS else (tactic or "other")
        by_tactic.setdefault(tactic, []).append(t)
    return [
        Column(tactic, _tactic_title(tactic), sorted(cells, key=lambda c: c.technique_id))
        for tactic, cells in by_tactic.items()
        if cells or tactic in LINUX_TACTICS
    ]


def standing_counts(view: RoundView) -> list[tuple[Standing, int]]:
    """How the round's own techniques stand (validated, detected by another rule, missed, ...): the same
    split as the summary's figures, so the bar and the cards agree."""
    counts = Counter(t.standing.key for t in view.techniques)
    return [(st, counts[st.key]) for st in STANDINGS if counts.get(st.key)]


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("assay.reports", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,  # a typo in the template is an error, not an empty cell
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda v: f"{float(v):.0%}" if isinstance(v, int | float) else "-"
    env.filters["outcome"] = lambda o: OUTCOME_LABEL.get(str(o), str(o))
    env.filters["tactic"] = _tactic_title
    return env


def render_html(report: Mapping[str, Any]) -> str:
    """The round report (its JSON) as one self-contained HTML page."""
    view = round_view(report)
    standings_used = {t.standing.key for t in view.every}
    return (
        _environment()
        .get_template("report.html")
        .render(
            v=view,
            s=view.summary,
            matrix=matrix(view),
            counts=standing_counts(view),
            standings=[st for st in STANDINGS if st.key in standings_used],
        )
    )
