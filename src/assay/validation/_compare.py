"""The change since the previous round: which techniques improved, which regressed, and the summary deltas.

Rounds are compared through their report dicts (`RoundReport.to_dict()`, as stored or as written to
`assay-report.json`), so a round can be compared with one measured months ago by another version of Assay.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from assay.errors import AttributionError
from assay.validation._records import Outcome

_SUMMARY_KEYS = (
    "mapped",
    "in_profile",
    "executed",
    "testable",
    "detected",
    "detected_exact",
    "detected_unmapped",
)
_RATE_KEYS = ("detection_rate_testable", "detection_rate_executed")


@dataclass(frozen=True)
class TechniqueChange:
    technique_id: str
    before: str | None  # None: not in the previous round
    after: str | None  # None: not in this round

    @property
    def kind(self) -> str:
        if self.before is None:
            return "new"
        if self.after is None:
            return "dropped"
        if self.after == Outcome.DETECTED and self.before != Outcome.DETECTED:
            return "now_detected"
        if self.before == Outcome.DETECTED and self.after != Outcome.DETECTED:
            return "no_longer_detected"
        return "changed"


@dataclass
class RoundDelta:
    previous: str | None  # the previous round's operation id, when known
    summary: dict[str, float] = field(default_factory=dict)  # current - previous
    changes: list[TechniqueChange] = field(default_factory=list)

    @property
    def regressions(self) -> list[TechniqueChange]:
        """Detected in the previous round, not in this one (whatever it is now, not_executed included)."""
        return [c for c in self.changes if c.kind == "no_longer_detected"]

    @property
    def newly_detected(self) -> list[TechniqueChange]:
        return [c for c in self.changes if c.kind == "now_detected"]

    @property
    def newly_failing(self) -> list[TechniqueChange]:
        """Ran in the previous round (any outcome but not_executed), does not run in this one."""
        return [
            c
            for c in self.changes
            if c.before not in (None, Outcome.NOT_EXECUTED) and c.after == Outcome.NOT_EXECUTED
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "previous": self.previous,
            "summary": self.summary,
            "regressions": [c.technique_id for c in self.regressions],
            "newly_detected": [c.technique_id for c in self.newly_detected],
            "newly_failing": [c.technique_id for c in self.newly_failing],
            "changes": [
                {"technique_id": c.technique_id, "before": c.before, "after": c.after, "kind": c.kind}
                for c in self.changes
            ],
        }


def _outcomes(report: Mapping[str, Any], which: str) -> dict[str, str]:
    try:
        return {str(t["technique_id"]): str(t["outcome"]) for t in report["techniques"]}
    except (KeyError, TypeError) as exc:
        raise AttributionError(f"the {which} report has no usable 'techniques' list: {exc}") from exc


def compare(previous: Mapping[str, Any], current: Mapping[str, Any]) -> RoundDelta:
    """What changed from ``previous`` to ``current`` (both report dicts)."""
    before, after = _outcomes(previous, "previous"), _outcomes(current, "current")
    changes = [
        TechniqueChange(tid, before.get(tid), after.get(tid))
        for tid in sorted(set(before) | set(after))
        if before.get(tid) != after.get(tid)
    ]
    # Most important first: regressions, then improvements, then the rest.
    order = {"no_longer_detected": 0, "now_detected": 1, "changed": 2, "new": 3, "dropped": 4}
    changes.sort(key=lambda c: (order[c.kind], c.technique_id))
    prev_s, cur_s = previous.get("summary") or {}, current.get("summary") or {}
    summary: dict[str, float] = {}
    for key in (*_SUMMARY_KEYS, *_RATE_KEYS):
        if key in prev_s and key in cur_s:
            summary[key] = round(float(cur_s[key]) - float(prev_s[key]), 4)
    prev_meta = previous.get("meta") or {}
    name = prev_meta.get("round_id") or prev_meta.get("operation_id")
    return RoundDelta(previous=name, summary=summary, changes=changes)
