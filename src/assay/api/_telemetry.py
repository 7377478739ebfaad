"""Decoding a telemetry batch from the sensor: every bad record is named by index and field, or none is kept.

A batch is all or nothing, so a client that fixes or drops the named records can send it again without
storing anything twice. Batches already stored are never touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from assay.errors import EventError
from assay.events import Alert, Event, alert_from_dict, event_from_dict

_QUOTED = re.compile(r"'([^']+)'")
# Indexed columns must have these types, or the database would refuse (or worse, coerce) them.
_TYPED = {"process.pid": int, "host.name": str, "process.entity_id": str, "event.source": str}


@dataclass(frozen=True, slots=True)
class BadRecord:
    index: str  # "events[3]"
    field: str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "message": self.message}


def _field_of(message: str) -> str | None:
    if message.startswith("@timestamp"):
        return "@timestamp"
    found = _QUOTED.search(message)
    return found.group(1) if found else None


def _check_types(index: str, fields: dict[str, Any]) -> BadRecord | None:
    for name, kind in _TYPED.items():
        value = fields.get(name)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            return BadRecord(index, name, f"must be {kind.__name__}, got {type(value).__name__}")
    return None


def decode_batch(body: Any) -> tuple[list[Event], list[Alert], list[BadRecord]]:
    if not isinstance(body, dict):
        return [], [], [BadRecord("", None, 'body must be a JSON object {"events": [...], "alerts": [...]}')]
    bad: list[BadRecord] = []
    unknown = sorted(set(body) - {"events", "alerts"})
    if unknown:
        bad.append(BadRecord("", unknown[0], "unknown key (expected 'events' and 'alerts')"))
    events: list[Event] = []
    alerts: list[Alert] = []
    raw_events, raw_alerts = body.get("events") or [], body.get("alerts") or []
    for key, raw in (("events", raw_events), ("alerts", raw_alerts)):
        if not isinstance(raw, list):
            bad.append(BadRecord(key, key, "must be a list"))
    if bad:
        return [], [], bad
    for i, raw in enumerate(raw_events):
        index = f"events[{i}]"
        try:
            event = event_from_dict(raw)
        except EventError as exc:
            bad.append(BadRecord(index, _field_of(exc.message), exc.message))
            continue
        problem = _check_types(index, event.fields)
        if problem:
            bad.append(problem)
        else:
            events.append(event)
    for i, raw in enumerate(raw_alerts):
        index = f"alerts[{i}]"
        try:
            alert = alert_from_dict(raw)
        except EventError as exc:
            bad.append(BadRecord(index, _field_of(exc.message), exc.message))
            continue
        except (TypeError, ValueError, AttributeError) as exc:  # a field of the wrong JSON type
            bad.append(BadRecord(index, None, f"malformed alert: {exc}"))
            continue
        # The codec keeps JSON values as they came; the typed columns need the declared types.
        problem = _check_types(index, {"process.pid": alert.pid, "process.entity_id": alert.entity_id})
        if problem:
            bad.append(problem)
        else:
            alerts.append(alert)
    return events, alerts, bad
