"""Classify each link (DESIGN §6) and roll the links up per technique.

Every outcome carries a ``reason`` a detection engineer can act on: which rule matched and which allowlist
entry silenced it, what telemetry was there that no rule used, how many events the sensor dropped and when.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from assay import attack
from assay.events import Action, Alert, Event
from assay.validation._attribution import Lineage
from assay.validation._records import (
    STATUS_ERROR,
    STATUS_SUCCESS,
    STATUS_TIMEOUT,
    TECHNIQUE_PRECEDENCE,
    LinkRecord,
    NotRun,
    Outcome,
    status_name,
)

EVIDENCE_SHOWN = 25

# The executor process's own start and end are the harness, not the technique: the agent started it.
_HARNESS_ACTIONS = frozenset({Action.FORK, Action.EXEC, Action.EXIT})


@dataclass
class LinkResult:
    link: LinkRecord
    outcome: Outcome
    reason: str
    root: str | None
    events_seen: int
    usable_events: int
    alerts: list[Alert] = field(default_factory=list)
    exact: bool = False  # an unsuppressed alert carries this link's technique (or its parent/sub-technique)
    reason_code: NotRun | None = None  # set for not_executed links: why, as a code
    # What the sensor saw of the lineage, for a report's drill-down: the events the rules could use first,
    # then the rest but the harness's own, at most EVIDENCE_SHOWN, in time order (``events_seen`` says how
    # many there were in all).
    evidence: list[Event] = field(default_factory=list)


def techniques_related(a: str, b: str) -> bool:
    """Same technique, or one is a sub-technique of the other (T1059 ~ T1059.004)."""
    return a == b or a.split(".")[0] == b or b.split(".")[0] == a


def harness_events(root: str | None, events: Iterable[Event]) -> set[int]:
    """Indexes of the events that are the executor's own start: its fork, its *first* exec, its exit.

    Later execs of the root are behaviour: a shell may exec its last command in place.
    """
    skip: set[int] = set()
    first_exec: tuple[float, int] | None = None
    for i, ev in enumerate(events):
        if ev.entity_id != root:
            continue
        if ev.action == Action.EXEC:
            if first_exec is None or ev.timestamp < first_exec[0]:
                first_exec = (ev.timestamp, i)
        elif ev.action in _HARNESS_ACTIONS:
            skip.add(i)
    if first_exec is not None:
        skip.add(first_exec[1])
    return skip


def _describe(events: list[Event], limit: int = 4) -> str:
    counts = Counter(ev.action for ev in events)
    parts = [f"{action} x{n}" for action, n in counts.most_common(limit)]
    names = sorted({str(ev.get("process.name")) for ev in events if ev.action == Action.EXEC})
    text = ", ".join(parts)
    if names:
        text += " (exec: " + ", ".join(names[:6]) + (", ..." if len(names) > 6 else "") + ")"
    return text


# Caldera's skip reason ids (emulation's SkipReason) → the report's code.
_SKIP_CODES = {
    0: NotRun.PLATFORM,
    1: NotRun.EXECUTOR,
    2: NotRun.PRIVILEGE,
    3: NotRun.MISSING_FACTS,
    4: NotRun.IGNORED,
    5: NotRun.UNTRUSTED,
}
# Skips recorded as "other" (7) carry their kind as the reason's first word.
_SKIP_PREFIXES = {
    "prerequisite": NotRun.PREREQUISITE,
    "safety": NotRun.SAFETY,
    "sandbox": NotRun.SANDBOX,
}
_STATUS_CODES = {
    STATUS_ERROR: NotRun.FAILED_COMMAND,
    STATUS_TIMEOUT: NotRun.TIMEOUT,
    -3: NotRun.NOT_FINISHED,
    -1: NotRun.NOT_FINISHED,
    -4: NotRun.UNTRUSTED,
    -5: NotRun.IGNORED,
    -2: NotRun.IGNORED,
}


def _skip_code(link: LinkRecord) -> NotRun:
    prefix = (link.skip_reason or "").split(":", 1)[0].strip().lower()
    if prefix in _SKIP_PREFIXES:
        return _SKIP_PREFIXES[prefix]
    if link.skip_reason_id is not None and link.skip_reason_id in _SKIP_CODES:
        return _SKIP_CODES[link.skip_reason_id]
    text = (link.skip_reason or "").lower()
    if "privilege" in text or "elevated" in text:
        return NotRun.PRIVILEGE
    if "platform" in text:
        return NotRun.PLATFORM
    if "no facts" in text or "fact" in text:
        return NotRun.MISSING_FACTS
    return NotRun.OTHER


def not_executed_reason(link: LinkRecord) -> tuple[NotRun, str] | None:
    """Why the link did not run (a code and a sentence), or None when it ran and can be attributed."""
    if link.skip_reason:
        return _skip_code(link), f"skipped: {link.skip_reason}"
    if link.status is None:
        return NotRun.NOT_FINISHED, "never ran"
    if link.status != STATUS_SUCCESS:
        detail = status_name(link.status)
        if link.exit_code not in (None, 0):
            detail += f" (exit code {link.exit_code})"
        first = link.stderr.strip().splitlines()[:1]
        if first:
            detail += f": {first[0][:160]}"
        return _STATUS_CODES.get(link.status, NotRun.OTHER), detail
    if link.pid is None or link.pid <= 0:
        return NotRun.NO_PID, "the agent reported no process id, so nothing can be attributed"
    return None


def classify_link(link: LinkRecord, lineage: Lineage, consumed_actions: Collection[str]) -> LinkResult:
    events = lineage.events
    harness = harness_events(lineage.root, events)
    usable = [ev for i, ev in enumerate(events) if i not in harness and ev.action in consumed_actions]
    fired = [a for a in lineage.alerts if not a.suppressed]
    suppressed = [a for a in lineage.alerts if a.suppressed]
    exact = any(techniques_related(t, link.technique_id) for a in fired for t in a.techniques)

    # The harness's own events stay out: they are not the technique, and the executor's fork carries the
    # agent's command line (its enrolment token) into a report meant for CI logs.
    used = {id(ev) for ev in usable}
    rest = [
        ev
        for i, ev in enumerate(events)
        if i not in harness and ev.action != Action.LOSS and id(ev) not in used
    ]
    evidence = sorted((usable + rest)[:EVIDENCE_SHOWN], key=lambda ev: ev.timestamp)

    def result(outcome: Outcome, reason: str, code: NotRun | None = None) -> LinkResult:
        return LinkResult(
            link=link,
            outcome=outcome,
            reason=reason,
            root=lineage.root,
            events_seen=len(events),
            usable_events=len(usable),
            alerts=list(lineage.alerts),
            exact=exact and outcome == Outcome.DETECTED,
            reason_code=code,
            evidence=evidence,
        )

    not_run = not_executed_reason(link)
    if not_run is not None:
        return result(Outcome.NOT_EXECUTED, not_run[1], not_run[0])
    if fired:
        rules = sorted({f"{a.rule_id} ({a.title})" for a in fired})
        how = "" if exact else f"; no alert carries {link.technique_id}, so the match is not exact"
        return result(Outcome.DETECTED, "alerted by " + "; ".join(rules[:5]) + how)
    if suppressed:
        parts = sorted(
            {
                f"{a.title} suppressed by {a.suppressed_by.entry_id}: {a.suppressed_by.reason}"
                for a in suppressed
                if a.suppressed_by is not None
            }
        )
        return result(Outcome.MISSED_SUPPRESSED, "; ".join(parts[:5]))
    if lineage.losses:
        dropped = sum(int(lo.get("loss.count", 0)) for lo in lineage.losses)
        blind = [str(lo.get("loss.reason")) for lo in lineage.losses if lo.get("loss.reason")]
        if blind and not dropped:
            return result(Outcome.INCONCLUSIVE, blind[0] + "; no alert, but telemetry is incomplete")
        return result(
            Outcome.INCONCLUSIVE,
            f"the sensor dropped {dropped} events while this link ran; no alert, but telemetry is incomplete",
        )
    if lineage.root is None:
        return result(
            Outcome.MISSED_NO_TELEMETRY,
            f"no process of pid {link.pid} was seen while the link ran: the sensor saw nothing of it",
        )
    if not usable:
        seen = f" (only {_describe(events)})" if events else ""
        return result(
            Outcome.MISSED_NO_TELEMETRY,
            "the sensor saw nothing of this lineage that the rules could use" + seen,
        )
    return result(Outcome.MISSED_NO_RULE, f"telemetry present, no rule matched: {_describe(usable)}")


@dataclass
class TechniqueResult:
    technique_id: str
    name: str
    tactic: str
    outcome: Outcome
    mapped: bool
    links: list[LinkResult]

    @property
    def reason(self) -> str:
        chosen = self.chosen
        return chosen.reason if chosen else ""

    @property
    def chosen(self) -> LinkResult | None:
        """The link the technique's outcome comes from (an exact detection first, when there is one)."""
        same = [lk for lk in self.links if lk.outcome == self.outcome]
        return next((lk for lk in same if lk.exact), same[0] if same else None)

    @property
    def exact(self) -> bool:
        """Detected by an alert that carries this technique (or its parent or a sub-technique)."""
        return any(lk.exact for lk in self.links)

    @property
    def reason_code(self) -> NotRun | None:
        chosen = self.chosen
        return chosen.reason_code if chosen else None


def _technique_name(tid: str) -> str:
    found = attack.catalogue().get(tid)
    return found.name if found else tid


def is_mapped(technique_id: str, mapped: Collection[str]) -> bool:
    """Mapped when a loaded rule carries the technique itself or its parent (a family-level rule)."""
    return technique_id in mapped or technique_id.split(".")[0] in mapped


def rollup(results: list[LinkResult], mapped: Collection[str]) -> list[TechniqueResult]:
    by_technique: dict[str, list[LinkResult]] = {}
    for res in results:
        if not res.link.cleanup:
            by_technique.setdefault(res.link.technique_id, []).append(res)
    out: list[TechniqueResult] = []
    for tid, links in by_technique.items():
        best = min(links, key=lambda r: TECHNIQUE_PRECEDENCE.index(r.outcome)).outcome
        out.append(
            TechniqueResult(
                technique_id=tid,
                name=_technique_name(tid),
                tactic=next((r.link.tactic for r in links if r.link.tactic), ""),
                outcome=best,
                mapped=is_mapped(tid, mapped),
                links=links,
            )
        )
    return out
