"""The benign baseline: alerts per hour by rule while a benign workload runs (the false-positive rate).

Alerts are split by whose process tree raised them (the same lineage join as attribution):

- **workload**: the benign workload's tree. Unsuppressed ones are false alerts: the figure the efficacy
  target holds to (at most 1 per hour). Suppressed ones (an allowlist matched) are listed apart.
- **agent**: the idle agent's tree. Its beacons must raise nothing; any alert here is a false alert too.
- **setup**: the workload's scaffolding (generating its sshd's keys, starting sshd and the cron stand-in)
  before measuring starts: listed, not counted, since a host does that once and not every hour.
- **outside**: everything else the sensor saw on the host meanwhile (other users, system daemons). Reported,
  not counted as the workload's, since the workload did not cause them.

Pure: takes alerts and step records, returns the report.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from assay.events import Alert
from assay.validation._report import redact

BASELINE_VERSION = 1


@dataclass
class RuleRate:
    rule_id: str
    title: str
    level: str
    techniques: tuple[str, ...]
    count: int
    per_hour: float
    example: str | None = None
    suppressed_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "title": self.title,
            "level": self.level,
            "techniques": list(self.techniques),
            "count": self.count,
            "per_hour": round(self.per_hour, 2),
            "example": self.example,
            "suppressed_by": self.suppressed_by,
        }


@dataclass
class StepSummary:
    step: str
    runs: int
    ok: int
    commands: int
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "runs": self.runs,
            "ok": self.ok,
            "commands": self.commands,
            "errors": self.errors[:5],
        }


@dataclass
class BaselineReport:
    started: float
    ended: float
    false_alerts: list[RuleRate]
    suppressed: list[RuleRate]
    outside: list[RuleRate]
    setup: list[RuleRate]
    agent_alerts: int
    steps: list[StepSummary]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def hours(self) -> float:
        return max(self.ended - self.started, 1e-9) / 3600.0

    @property
    def false_alert_count(self) -> int:
        return sum(r.count for r in self.false_alerts)

    @property
    def false_alerts_per_hour(self) -> float:
        return self.false_alert_count / self.hours

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": BASELINE_VERSION,
            "meta": self.meta,
            "started": self.started,
            "ended": self.ended,
            "duration_seconds": round(self.ended - self.started, 3),
            "false_alerts": {
                "count": self.false_alert_count,
                "per_hour": round(self.false_alerts_per_hour, 2),
                "by_rule": [r.to_dict() for r in self.false_alerts],
            },
            "agent_alerts": self.agent_alerts,
            "suppressed": [r.to_dict() for r in self.suppressed],
            "setup": [r.to_dict() for r in self.setup],
            "outside_workload": [r.to_dict() for r in self.outside],
            "steps": [s.to_dict() for s in self.steps],
        }


def _lineages(alert: Alert) -> set[str]:
    ids = set(alert.lineage)
    for ev in alert.events:
        ids.update(ev.lineage)
    return ids


def _example(alert: Alert) -> str | None:
    for ev in reversed(alert.events):
        line = ev.get("process.command_line")
        path = ev.get("file.path")
        if line or path:
            return redact(" ".join(str(x) for x in (line, path) if x))[:300]
    return None


def _rates(alerts: Sequence[Alert], hours: float, *, suppressed: bool = False) -> list[RuleRate]:
    groups: dict[tuple[str, str | None], list[Alert]] = defaultdict(list)
    for a in alerts:
        key = (a.rule_id, a.suppressed_by.entry_id if (suppressed and a.suppressed_by) else None)
        groups[key].append(a)
    out = []
    for (rule_id, entry), group in groups.items():
        first = group[0]
        out.append(
            RuleRate(
                rule_id=rule_id,
                title=first.title,
                level=first.level,
                techniques=first.techniques,
                count=len(group),
                per_hour=len(group) / hours,
                example=_example(first),
                suppressed_by=entry,
            )
        )
    return sorted(out, key=lambda r: (-r.count, r.title))


def step_summaries(records: Iterable[Mapping[str, Any]]) -> list[StepSummary]:
    """Roll the workload's step records (``StepRecord.to_dict()``) up by step."""
    by_step: dict[str, StepSummary] = {}
    for rec in records:
        name = str(rec["step"])
        s = by_step.setdefault(name, StepSummary(name, 0, 0, 0))
        s.runs += 1
        s.ok += bool(rec.get("ok"))
        s.commands += len(rec.get("commands") or ())
        if rec.get("error"):
            s.errors.append(str(rec["error"]))
    return list(by_step.values())


def baseline_report(
    alerts: Iterable[Alert],
    *,
    workload_root: str,
    agent_root: str | None,
    started: float,
    ended: float,
    setup_started: float | None = None,
    step_records: Iterable[Mapping[str, Any]],
    meta: dict[str, Any] | None = None,
) -> BaselineReport:
    """Alerts raised between ``started`` and ``ended``, split by process tree and rated per hour.

    The workload's alerts between ``setup_started`` and ``started`` are its set-up's."""
    hours = max(ended - started, 1e-9) / 3600.0
    first = started if setup_started is None else min(setup_started, started)
    setup: list[Alert] = []
    workload: list[Alert] = []
    suppressed: list[Alert] = []
    agent: list[Alert] = []
    outside: list[Alert] = []
    for alert in alerts:
        if not first <= alert.timestamp <= ended:
            continue
        ids = _lineages(alert)
        if alert.timestamp < started:
            if workload_root in ids:
                setup.append(alert)
            continue
        if agent_root is not None and agent_root in ids:
            agent.append(alert)
        elif workload_root in ids:
            (suppressed if alert.suppressed else workload).append(alert)
        else:
            outside.append(alert)
    agent_live = [a for a in agent if not a.suppressed]
    return BaselineReport(
        started=started,
        ended=ended,
        false_alerts=_rates(workload + agent_live, hours),
        suppressed=_rates(suppressed + [a for a in agent if a.suppressed], hours, suppressed=True),
        outside=_rates(outside, hours),
        setup=_rates(setup, hours),
        agent_alerts=len(agent_live),
        steps=step_summaries(step_records),
        meta=dict(meta or {}),
    )
