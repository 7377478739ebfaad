"""The round report: the validation table a detection engineer wants, and `assay-report.json`.

Summary definitions. Every count is a subset of the count it is a rate of:

- ``mapped``: techniques carried by the loaded, supported rules;
- ``in_profile``: techniques of the adversary's abilities;
- ``executed``: techniques with at least one link that actually ran (outcome other than ``not_executed``);
- ``testable``: executed techniques that are also mapped (a rule claims them, or their parent);
- ``detected``: testable techniques with a ``detected`` outcome (detected ⊆ testable);
- ``detected_exact``: of those, the ones an alert carrying the technique itself detected;
- ``detected_unmapped``: executed techniques no rule claims that were detected anyway, by a rule written for
  another technique (the alert is real, the mapping is not; not testable, so never in ``detected``);
- ``detection_rate_testable`` = detected / testable; ``detection_rate_executed`` = (detected +
  detected_unmapped) / executed.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from assay.events import Alert, Event, alert_to_dict, format_timestamp
from assay.validation._attribution import attribute
from assay.validation._classify import LinkResult, TechniqueResult, classify_link, rollup
from assay.validation._records import LinkRecord, Outcome

# 2: detected ⊆ testable, detected_exact, detected_unmapped, reason codes; 3: each link's "events" (a sample)
REPORT_VERSION = 3


@dataclass
class Summary:
    mapped: int
    in_profile: int
    executed: int
    testable: int
    detected: int
    detection_rate_testable: float
    detection_rate_executed: float
    detected_exact: int = 0
    detected_unmapped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "mapped": self.mapped,
            "in_profile": self.in_profile,
            "executed": self.executed,
            "testable": self.testable,
            "detected": self.detected,
            "detected_exact": self.detected_exact,
            "detected_unmapped": self.detected_unmapped,
            "detection_rate_testable": self.detection_rate_testable,
            "detection_rate_executed": self.detection_rate_executed,
        }


@dataclass
class RoundReport:
    summary: Summary
    techniques: list[TechniqueResult]
    links: list[LinkResult]
    cleanup_links: list[LinkResult]
    unexplained_alerts: list[Alert]
    mapped_not_validated: list[str]
    events_total: int
    events_dropped: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def misses(self) -> list[TechniqueResult]:
        return [t for t in self.techniques if t.outcome != Outcome.DETECTED]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "meta": self.meta,
            "summary": self.summary.to_dict(),
            "techniques": [
                {
                    "technique_id": t.technique_id,
                    "name": t.name,
                    "tactic": t.tactic,
                    "outcome": str(t.outcome),
                    "reason": t.reason,
                    "reason_code": None if t.reason_code is None else str(t.reason_code),
                    "mapped": t.mapped,
                    "exact": t.exact,
                    "links": [r.link.link_id for r in t.links],
                }
                for t in self.techniques
            ],
            "links": [_link_dict(r) for r in self.links],
            "cleanup_links": [_link_dict(r) for r in self.cleanup_links],
            "unexplained_alerts": [alert_to_dict(a) for a in self.unexplained_alerts],
            "mapped_not_validated": self.mapped_not_validated,
            "sensor": {"events": self.events_total, "dropped": self.events_dropped},
        }


def _link_dict(r: LinkResult) -> dict[str, Any]:
    link = r.link
    return {
        "link_id": link.link_id,
        "ability_id": link.ability_id,
        "ability_name": link.ability_name,
        "technique_id": link.technique_id,
        "tactic": link.tactic,
        "command": link.command,
        "pid": link.pid,
        "entity_id": r.root,
        "exit_code": link.exit_code,
        "status": link.status,
        "started": format_timestamp(link.started) if link.started is not None else None,
        "finished": format_timestamp(link.finished) if link.finished is not None else None,
        "outcome": str(r.outcome),
        "reason": r.reason,
        "reason_code": None if r.reason_code is None else str(r.reason_code),
        "exact": r.exact,
        "alerts": [
            {
                "id": a.id,
                "rule_id": a.rule_id,
                "title": a.title,
                "level": a.level,
                "techniques": list(a.techniques),
                "suppressed_by": a.suppressed_by.entry_id if a.suppressed_by else None,
            }
            for a in r.alerts
        ],
        "events_seen": r.events_seen,
        "usable_events": r.usable_events,
        "events": [event_row(ev) for ev in r.evidence],
    }


# Secrets given on a command line (the agent's own, or a procedure's) stay out of reports meant for CI logs.
_SECRET_ARG = re.compile(
    r"(--(?:enrol-token|api-key|tls-key|token|password|passwd|secret)(?:=|\s+))\S+", re.IGNORECASE
)


def redact(text: str) -> str:
    """``text`` with the value of every secret-bearing option (``--enrol-token T``) replaced."""
    return _SECRET_ARG.sub(r"\1<redacted>", text)


def event_row(ev: Event) -> dict[str, Any]:
    """One event as a report shows it: when, what, which process, and the one detail that says most."""
    get = ev.fields.get
    detail = get("file.path") or get("process.command_line") or ""
    if get("destination.ip"):
        port = get("destination.port")
        detail = f"{get('destination.ip')}:{port}" if port is not None else str(get("destination.ip"))
    return {
        "time": format_timestamp(ev.timestamp),
        "action": ev.action,
        "pid": get("process.pid"),
        "process": get("process.name") or get("process.executable"),
        "detail": redact(str(detail))[:300],
    }


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def validate(
    links: Sequence[LinkRecord],
    events: Iterable[Event],
    alerts: Iterable[Alert],
    *,
    mapped_techniques: Collection[str],
    consumed_actions: Collection[str],
    profile_techniques: Collection[str] | None = None,
    meta: dict[str, Any] | None = None,
    alert_links: Mapping[str, Sequence[str]] | None = None,
) -> RoundReport:
    """Classify every link of a round and roll the outcomes up per technique.

    ``events`` and ``alerts`` are those recorded while the round ran, on the hosts it ran on; they may
    include unrelated activity (it is simply not attributed). ``alert_links`` (alert id → link ids, as a
    stored round keeps them) attributes those alerts as stored instead of by lineage: re-scoring a round
    keeps the attribution it was scored with.
    """
    event_list = list(events)
    lineages, unexplained = attribute(links, event_list, alerts, alert_links)
    results = [classify_link(link, lineages[link.link_id], consumed_actions) for link in links]
    main = [r for r in results if not r.link.cleanup]
    cleanup = [r for r in results if r.link.cleanup]
    techniques = sorted(rollup(main, mapped_techniques), key=lambda t: (t.tactic, t.technique_id))

    mapped = set(mapped_techniques)
    profile = {t.technique_id for t in techniques} if profile_techniques is None else set(profile_techniques)
    executed = {t.technique_id for t in techniques if t.outcome != Outcome.NOT_EXECUTED}
    testable = {t.technique_id for t in techniques if t.technique_id in executed and t.mapped}
    detected_any = {t.technique_id for t in techniques if t.outcome == Outcome.DETECTED}
    detected = detected_any & testable
    exact = {t.technique_id for t in techniques if t.exact} & detected
    unmapped = detected_any - testable
    validated_families = executed | {tid.split(".")[0] for tid in executed}
    dropped = sum(int(ev.get("loss.count", 0)) for ev in event_list if ev.action == "loss")

    return RoundReport(
        summary=Summary(
            mapped=len(mapped),
            in_profile=len(profile),
            executed=len(executed),
            testable=len(testable),
            detected=len(detected),
            detection_rate_testable=_rate(len(detected), len(testable)),
            detection_rate_executed=_rate(len(detected_any), len(executed)),
            detected_exact=len(exact),
            detected_unmapped=len(unmapped),
        ),
        techniques=techniques,
        links=main,
        cleanup_links=cleanup,
        unexplained_alerts=unexplained,
        mapped_not_validated=sorted(mapped - validated_families),
        events_total=sum(1 for ev in event_list if ev.action not in ("loss", "sensor")),
        events_dropped=dropped,
        meta=dict(meta or {}),
    )
