"""JSON Lines codec: flat `Event` fields ⇄ nested ECS objects on disk and on the wire.

On disk an event looks like::

    {"@timestamp": "2026-11-24T22:32:01.123456Z", "event": {"action": "exec", "source": "ebpf"},
     "process": {"pid": 42, "args": ["sh", "-c", "id"], "parent": {"pid": 1}}}

``@timestamp`` is written as ISO 8601 UTC with microseconds; reading also accepts epoch seconds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from assay.errors import EventError, Source
from assay.events._model import Alert, Event, Suppression

# A recorded event nests a few levels (process.parent.pid); JSON Lines comes from files and from the network.
MAX_DEPTH = 32
# Longer lines are refused as they are read: a file without newlines must not be read whole into memory.
MAX_LINE_CHARS = 16 * 1024 * 1024
# datetime's range (years 1 to 9999): a timestamp outside it cannot be written back.
_MIN_TS, _MAX_TS = -62135596800.0, 253402300799.0


def _too_deep(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


def flatten(nested: dict[str, Any], prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"process": {"pid": 1}}`` → ``{"process.pid": 1}``. Lists are values, never descended into."""
    if out is None:
        out = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flatten(value, name + ".", out)
        else:
            out[name] = value
    return out


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`flatten`."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        parts = name.split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return out


def format_timestamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(value: Any) -> float:
    ts = _timestamp(value)
    if not (math.isfinite(ts) and _MIN_TS <= ts <= _MAX_TS):
        raise EventError(f"@timestamp {str(value)[:40]!r} is out of range (years 1 to 9999)")
    return ts


def _timestamp(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError as exc:  # an integer too large for a float
            raise EventError(f"@timestamp {str(value)[:40]!r} is out of range (years 1 to 9999)") from exc
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise EventError(f"@timestamp {value[:60]!r} is neither ISO 8601 nor epoch seconds") from exc
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    raise EventError(f"@timestamp has type {type(value).__name__}, expected a string or a number")


def event_to_dict(event: Event) -> dict[str, Any]:
    flat = dict(event.fields)
    flat["@timestamp"] = format_timestamp(event.timestamp)
    return nest(flat)


def event_from_dict(data: Any) -> Event:
    if not isinstance(data, dict):
        raise EventError(f"an event must be a JSON object, got {type(data).__name__}")
    if _too_deep(data):
        raise EventError(f"an event must not nest deeper than {MAX_DEPTH} levels")
    flat = flatten(data)
    if "@timestamp" not in flat:
        raise EventError("missing '@timestamp'")
    if not isinstance(flat.get("event.action"), str) or not flat["event.action"]:
        raise EventError("missing 'event.action'")
    flat["@timestamp"] = parse_timestamp(flat["@timestamp"])
    return Event(flat)


def dumps(event: Event) -> str:
    return json.dumps(event_to_dict(event), separators=(",", ":"), ensure_ascii=False)


def loads(line: str) -> Event:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise EventError(f"invalid JSON: {exc.msg} at column {exc.colno}") from exc
    except RecursionError as exc:  # json's own bound on nesting ([[[[...)
        raise EventError(f"invalid JSON: nested deeper than {MAX_DEPTH} levels") from exc
    return event_from_dict(data)


def read_jsonl(path: str | Path) -> Iterator[Event]:
    """Yield the events of a JSON Lines file; a bad line raises :class:`EventError` naming file:line."""
    p = Path(path)
    with _open(p) as fh:
        yield from iter_jsonl(fh, str(p))


def _open(path: Path) -> IO[bytes]:
    # Binary: each line is decoded alone, so a byte that is not UTF-8 is reported at its own line.
    try:
        return path.open("rb")
    except OSError as exc:
        raise EventError(f"cannot read: {exc.strerror or exc}", Source(file=str(path))) from exc


def _lines(stream: IO[str] | IO[bytes], name: str) -> Iterator[tuple[int, str]]:
    """Numbered lines, each at most :data:`MAX_LINE_CHARS` long (a file without newlines is never read
    whole); bytes that are not UTF-8 are an error at their line."""
    lineno = 0
    while True:
        lineno += 1
        try:
            raw = stream.readline(MAX_LINE_CHARS + 1)
            line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError as exc:
            raise EventError(f"not UTF-8 text: {exc.reason}", Source(file=name, line=lineno)) from exc
        if not line:
            return
        if len(raw) > MAX_LINE_CHARS:
            raise EventError(
                f"line is longer than {MAX_LINE_CHARS} characters", Source(file=name, line=lineno)
            )
        yield lineno, line


def iter_jsonl(stream: IO[str] | IO[bytes], name: str = "<stream>") -> Iterator[Event]:
    for lineno, line in _lines(stream, name):
        if not line.strip():
            continue
        try:
            yield loads(line)
        except EventError as exc:
            raise EventError(exc.message, Source(file=name, line=lineno)) from exc


def write_jsonl(events: Iterable[Event], stream: IO[str]) -> int:
    n = 0
    for event in events:
        stream.write(dumps(event))
        stream.write("\n")
        n += 1
    return n


def alert_to_dict(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "@timestamp": format_timestamp(alert.timestamp),
        "rule": {"id": alert.rule_id, "title": alert.title, "level": alert.level, "file": alert.rule_file},
        "techniques": list(alert.techniques),
        "host": {"name": alert.host},
        "process": {"entity_id": alert.entity_id, "pid": alert.pid, "lineage": list(alert.lineage)},
        "correlation": alert.correlation,
        "suppressed_by": (
            {"entry_id": alert.suppressed_by.entry_id, "reason": alert.suppressed_by.reason}
            if alert.suppressed_by
            else None
        ),
        "events": [event_to_dict(e) for e in alert.events],
    }


def alert_from_dict(data: Any) -> Alert:
    if not isinstance(data, dict):
        raise EventError(f"an alert must be a JSON object, got {type(data).__name__}")
    if not isinstance(data.get("rule"), dict):
        raise EventError(f"alert 'rule' must be an object, got {type(data.get('rule')).__name__}")
    for key, kind in (("process", dict), ("host", dict), ("suppressed_by", dict)):
        if data.get(key) is not None and not isinstance(data[key], kind):
            raise EventError(f"alert '{key}' must be an object, got {type(data[key]).__name__}")
    for key in ("techniques", "events"):
        if data.get(key) is not None and not isinstance(data[key], list):
            raise EventError(f"alert '{key}' must be a list, got {type(data[key]).__name__}")
    if isinstance(data.get("process"), dict) and not isinstance(data["process"].get("lineage") or [], list):
        raise EventError("alert 'process.lineage' must be a list")
    try:
        rule = data["rule"]
        proc = data.get("process") or {}
        sup = data.get("suppressed_by")
        return Alert(
            id=str(data.get("id") or ""),
            rule_id=str(rule["id"]),
            title=str(rule.get("title", "")),
            level=str(rule.get("level", "")),
            rule_file=rule.get("file"),
            techniques=tuple(data.get("techniques") or ()),
            timestamp=parse_timestamp(data["@timestamp"]),
            host=(data.get("host") or {}).get("name"),
            entity_id=proc.get("entity_id"),
            pid=proc.get("pid"),
            lineage=tuple(proc.get("lineage") or ()),
            correlation=bool(data.get("correlation", False)),
            suppressed_by=Suppression(str(sup["entry_id"]), str(sup.get("reason", ""))) if sup else None,
            events=tuple(event_from_dict(e) for e in data.get("events") or ()),
        )
    except KeyError as exc:
        raise EventError(f"alert is missing {exc.args[0]!r}") from exc


def dumps_alert(alert: Alert) -> str:
    return json.dumps(alert_to_dict(alert), separators=(",", ":"), ensure_ascii=False)


def read_alerts_jsonl(path: str | Path) -> Iterator[Alert]:
    p = Path(path)
    with _open(p) as fh:
        for lineno, line in _lines(fh, str(p)):
            if not line.strip():
                continue
            try:
                yield alert_from_dict(json.loads(line))
            except json.JSONDecodeError as exc:
                raise EventError(f"invalid JSON: {exc.msg}", Source(file=str(p), line=lineno)) from exc
            except RecursionError as exc:
                raise EventError("invalid JSON: nested too deeply", Source(file=str(p), line=lineno)) from exc
            except EventError as exc:
                raise EventError(exc.message, Source(file=str(p), line=lineno)) from exc
