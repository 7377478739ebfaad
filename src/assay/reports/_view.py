"""What every rendering of a round reads: the report JSON (``assay-report.json``, or a stored round's report)
turned into typed rows, each technique placed in one *standing* a reader can act on.

The renderers take the report *dict*, not a ``RoundReport``: a stored round keeps only its JSON, and the
file, the API and the CLI must render the same thing from the same input.

Standings (the Navigator layer's colours, the HTML matrix's legend):

- ``validated``: detected, and a rule claims the technique (the detection is the rule's own);
- ``detected_unmapped``: detected, but only by a rule written for another technique;
- ``missed``: it ran and no unsuppressed alert followed (the reason says which class of miss);
- ``inconclusive``: it ran, no alert, and the sensor dropped events meanwhile;
- ``mapped_not_validated``: a rule claims it and no procedure of the round ran it (or the one that should
  have did not run);
- ``not_executed``: in the round, did not run, and no rule claims it either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from assay import attack
from assay.errors import AssayError

# Tactics of the Enterprise matrix's Linux platform, in kill-chain order (reconnaissance and resource
# development are PRE: nothing on a host can validate them).
LINUX_TACTICS: tuple[str, ...] = tuple(
    t for t in attack.TACTIC_ORDER if t not in ("reconnaissance", "resource-development")
)


@dataclass(frozen=True)
class Standing:
    key: str
    label: str
    color: str  # background, #rrggbb (the Navigator layer wants hex)
    ink: str  # text on that background


STANDINGS: tuple[Standing, ...] = (
    Standing("validated", "validated: detected by its own rule", "#2e7d32", "#ffffff"),
    Standing("detected_unmapped", "detected only by another technique's rule", "#9ccc65", "#1b2a0f"),
    Standing("missed", "missed: ran, no alert", "#c62828", "#ffffff"),
    Standing("inconclusive", "inconclusive: sensor dropped events", "#8e6cc0", "#ffffff"),
    Standing("mapped_not_validated", "mapped, not validated: a rule, no run", "#f9c74f", "#3a2c00"),
    Standing("not_executed", "in the round, not executed, no rule", "#cfd4da", "#2b2f33"),
)
STANDING = {s.key: s for s in STANDINGS}

OUTCOME_LABEL = {
    "detected": "detected",
    "missed_suppressed": "missed: suppressed",
    "missed_no_rule": "missed: no rule matched",
    "missed_no_telemetry": "missed: no telemetry",
    "inconclusive": "inconclusive",
    "not_executed": "not executed",
}


class ReportError(AssayError):
    """The input is not a round report this version can render (what is wrong, and where)."""


@dataclass
class AlertRow:
    rule_id: str
    title: str
    level: str
    techniques: list[str]
    suppressed_by: str | None


@dataclass
class LinkRow:
    link_id: str
    ability_id: str
    ability_name: str
    command: str
    outcome: str
    reason: str
    reason_code: str | None
    status: int | None
    exit_code: int | None
    pid: int | None
    started: str | None
    finished: str | None
    events_seen: int
    usable_events: int
    events: list[dict[str, Any]]
    alerts: list[AlertRow]

    @property
    def fired(self) -> list[AlertRow]:
        return [a for a in self.alerts if a.suppressed_by is None]


@dataclass
class TechniqueRow:
    technique_id: str
    name: str
    tactic: str
    outcome: str
    reason: str
    reason_code: str | None
    mapped: bool
    exact: bool
    links: list[LinkRow] = field(default_factory=list)
    in_round: bool = True

    @property
    def standing(self) -> Standing:
        if not self.in_round:
            return STANDING["mapped_not_validated"]
        if self.outcome == "detected":
            return STANDING["validated" if self.mapped else "detected_unmapped"]
        if self.outcome == "inconclusive":
            return STANDING["inconclusive"]
        if self.outcome == "not_executed":
            return STANDING["mapped_not_validated" if self.mapped else "not_executed"]
        return STANDING["missed"]

    @property
    def anchor(self) -> str:
        return "t-" + self.technique_id.replace(".", "-")

    @property
    def fired(self) -> list[AlertRow]:
        """One unsuppressed alert per rule that fired on this technique's links, in the order they came."""
        seen: dict[str, AlertRow] = {}
        for lk in self.links:
            for a in lk.fired:
                seen.setdefault(a.rule_id, a)
        return list(seen.values())

    @property
    def rules_fired(self) -> list[str]:
        """The titles of the rules whose unsuppressed alerts detected this technique, once each."""
        return [a.title or a.rule_id for a in self.fired]

    @property
    def comment(self) -> str:
        """One sentence for a Navigator comment or a tooltip: the rule that fired, or why not."""
        if not self.in_round:
            return "a loaded rule claims this technique; no procedure of this round ran it"
        if self.outcome == "detected":
            how = "" if self.exact else f" (no alert carries {self.technique_id}: not exact)"
            return "detected by " + "; ".join(self.rules_fired[:5]) + how
        code = f" [{self.reason_code}]" if self.reason_code else ""
        return f"{OUTCOME_LABEL.get(self.outcome, self.outcome)}{code}: {self.reason}"


@dataclass
class RoundView:
    meta: dict[str, Any]
    summary: dict[str, Any]
    techniques: list[TechniqueRow]  # the round's own, in report order (tactic, then id)
    not_validated: list[TechniqueRow]  # mapped by a rule, not in the round at all
    unexplained_alerts: list[dict[str, Any]]
    sensor: dict[str, Any]
    change: dict[str, Any] | None

    @property
    def title(self) -> str:
        name = self.meta.get("name") or self.meta.get("adversary_id") or "round"
        return f"Assay validation: {name}"

    @property
    def misses(self) -> list[TechniqueRow]:
        """Techniques that ran and were not detected."""
        return [t for t in self.techniques if t.outcome not in ("detected", "not_executed")]

    @property
    def not_run(self) -> list[TechniqueRow]:
        return [t for t in self.techniques if t.outcome == "not_executed"]

    @property
    def every(self) -> list[TechniqueRow]:
        return [*self.techniques, *self.not_validated]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _alert(raw: Mapping[str, Any]) -> AlertRow:
    return AlertRow(
        rule_id=str(raw.get("rule_id", "")),
        title=str(raw.get("title", "")),
        level=str(raw.get("level", "")),
        techniques=[str(t) for t in raw.get("techniques") or []],
        suppressed_by=None if raw.get("suppressed_by") is None else str(raw["suppressed_by"]),
    )


def _event(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: raw.get(k) for k in ("time", "action", "pid", "process", "detail")}


def _link(raw: Mapping[str, Any], where: str) -> LinkRow:
    if not isinstance(raw, Mapping) or "link_id" not in raw:
        raise ReportError(f"{where}: a link must be an object with a 'link_id'")
    return LinkRow(
        link_id=str(raw["link_id"]),
        ability_id=str(raw.get("ability_id", "")),
        ability_name=str(raw.get("ability_name") or raw.get("ability_id") or ""),
        command=str(raw.get("command") or ""),
        outcome=str(raw.get("outcome", "")),
        reason=str(raw.get("reason") or ""),
        reason_code=None if raw.get("reason_code") is None else str(raw["reason_code"]),
        status=_int(raw.get("status")),
        exit_code=_int(raw.get("exit_code")),
        pid=_int(raw.get("pid")),
        started=raw.get("started"),
        finished=raw.get("finished"),
        events_seen=_int(raw.get("events_seen")) or 0,
        usable_events=_int(raw.get("usable_events")) or 0,
        events=[_event(e) for e in raw.get("events") or [] if isinstance(e, Mapping)],
        alerts=[_alert(a) for a in raw.get("alerts") or [] if isinstance(a, Mapping)],
    )


def _catalogue_tactic(technique_id: str) -> tuple[str, str]:
    """(name, the first Linux tactic in kill-chain order) of a technique no link of the round carries."""
    found = attack.catalogue().get(technique_id)
    if found is None:
        return technique_id, ""
    tactic = next((t for t in LINUX_TACTICS if t in found.tactics), found.tactics[0] if found.tactics else "")
    return found.name, tactic


def round_view(report: Mapping[str, Any]) -> RoundView:
    """The report JSON as typed rows; a report that is not one (no summary, no techniques) is an error."""
    if not isinstance(report, Mapping):
        raise ReportError(f"a round report must be a JSON object, got {type(report).__name__}")
    for key in ("summary", "techniques", "links"):
        if key not in report:
            raise ReportError(f"not a round report: no {key!r} (is it an `assay-report.json`?)")
    links = {}
    for i, raw in enumerate(report["links"]):
        row = _link(raw, f"links[{i}]")
        links[row.link_id] = row
    techniques = []
    for i, raw in enumerate(report["techniques"]):
        if not isinstance(raw, Mapping) or "technique_id" not in raw:
            raise ReportError(f"techniques[{i}]: a technique must be an object with a 'technique_id'")
        techniques.append(
            TechniqueRow(
                technique_id=str(raw["technique_id"]),
                name=str(raw.get("name") or raw["technique_id"]),
                tactic=str(raw.get("tactic") or ""),
                outcome=str(raw.get("outcome", "")),
                reason=str(raw.get("reason") or ""),
                reason_code=None if raw.get("reason_code") is None else str(raw["reason_code"]),
                mapped=bool(raw.get("mapped")),
                exact=bool(raw.get("exact")),
                links=[links[lid] for lid in raw.get("links") or [] if lid in links],
            )
        )
    in_round = {t.technique_id for t in techniques}
    not_validated = []
    for tid in report.get("mapped_not_validated") or []:
        if tid in in_round:
            continue
        name, tactic = _catalogue_tactic(str(tid))
        not_validated.append(
            TechniqueRow(str(tid), name, tactic, "", "", None, mapped=True, exact=False, in_round=False)
        )
    summary = report["summary"]
    if not isinstance(summary, Mapping):
        raise ReportError("summary: must be an object")
    change = report.get("change")
    return RoundView(
        meta=dict(report.get("meta") or {}),
        summary=dict(summary),
        techniques=techniques,
        not_validated=not_validated,
        unexplained_alerts=[
            dict(a) for a in report.get("unexplained_alerts") or [] if isinstance(a, Mapping)
        ],
        sensor=dict(report.get("sensor") or {}),
        change=dict(change) if isinstance(change, Mapping) else None,
    )
