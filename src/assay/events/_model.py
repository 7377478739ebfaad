"""`Event` and `Alert`: the records every package passes around.

An :class:`Event` holds its fields in one *flat* dict keyed by ECS-style dotted names (``process.pid``). Flat
keys make the detection engine's hot path one dict lookup per field; the nested shape of DESIGN §3 exists only
on disk and on the wire (see ``_codec``).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from assay.events._taxonomy import Action

# /proc/PID/stat reports start time in USER_HZ ticks; Linux fixes USER_HZ at 100 for user space.
USER_HZ = 100
_NS_PER_TICK = 1_000_000_000 // USER_HZ


def entity_id(pid: int, start_ticks: int) -> str:
    """A process identity that survives pid reuse: ``"<pid>:<start ticks since boot>"``.

    Every component computes the same value: the eBPF sensor from ``task->start_boottime`` (see
    :func:`ticks_from_boottime_ns`), the agent and the /proc snapshot from field 22 of ``/proc/PID/stat``.
    """
    return f"{pid}:{start_ticks}"


def ticks_from_boottime_ns(start_boottime_ns: int) -> int:
    """Convert ``task->start_boottime`` (ns) to /proc's clock ticks, exactly as the kernel does."""
    return start_boottime_ns // _NS_PER_TICK


def split_entity_id(value: str) -> tuple[int, int]:
    pid, _, ticks = value.partition(":")
    return int(pid), int(ticks)


@dataclass(slots=True, eq=True)
class Event:
    """One normalized telemetry record (DESIGN §3)."""

    fields: dict[str, Any]

    @classmethod
    def of(
        cls,
        action: Action | str,
        source: str,
        timestamp: float,
        host: str | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> Event:
        f: dict[str, Any] = {
            "@timestamp": float(timestamp),
            "event.action": str(action),
            "event.source": str(source),
        }
        if host is not None:
            f["host.name"] = host
        if values:
            f.update(values)
        return cls(f)

    # Typed accessors for the fields every consumer uses.
    @property
    def action(self) -> str:
        return self.fields["event.action"]  # type: ignore[no-any-return]

    @property
    def source(self) -> str:
        return self.fields.get("event.source", "")  # type: ignore[no-any-return]

    @property
    def timestamp(self) -> float:
        return self.fields["@timestamp"]  # type: ignore[no-any-return]

    @property
    def host(self) -> str | None:
        return self.fields.get("host.name")

    @property
    def pid(self) -> int | None:
        return self.fields.get("process.pid")

    @property
    def entity_id(self) -> str | None:
        return self.fields.get("process.entity_id")

    @property
    def parent_entity_id(self) -> str | None:
        return self.fields.get("process.parent.entity_id")

    @property
    def lineage(self) -> tuple[str, ...]:
        """Entity ids of this process and its ancestors, nearest first (what attribution joins on)."""
        out: list[str] = []
        eid = self.fields.get("process.entity_id")
        if eid:
            out.append(eid)
        ancestry = self.fields.get("process.ancestry")
        if ancestry:
            out.extend(ancestry)
        else:
            parent = self.fields.get("process.parent.entity_id")
            if parent:
                out.append(parent)
        return tuple(out)

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def __contains__(self, name: object) -> bool:
        return name in self.fields

    def copy(self) -> Event:
        return Event(dict(self.fields))


# Alert ids only need to be unique, not secret: a generator seeded once from the OS (and again in a forked
# child) gives random version-4 UUIDs without a getrandom() call per alert, which costs microseconds in a VM
# and was a visible share of the detection engine's time per alert.
_ids = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))
_UUID4_CLEAR = ~((0xF << 76) | (0x3 << 62))
_UUID4_SET = (0x4 << 76) | (0x2 << 62)


def new_alert_id() -> str:
    """A random RFC 4122 version-4 UUID, as 32 hex digits."""
    return "%032x" % (_ids.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET)


@dataclass(frozen=True, slots=True)
class Suppression:
    """An allowlist entry that silenced a rule match (kept, so validation can say `missed_suppressed`)."""

    entry_id: str
    reason: str


@dataclass(slots=True)
class Alert:
    """A rule (or correlation) that matched.

    ``lineage`` lists the entity ids of the triggering process and its ancestors, nearest first: validation
    attributes the alert to a link when the link's process appears in it.
    """

    rule_id: str
    title: str
    level: str
    techniques: tuple[str, ...]
    timestamp: float
    host: str | None = None
    entity_id: str | None = None
    pid: int | None = None
    lineage: tuple[str, ...] = ()
    events: tuple[Event, ...] = ()
    correlation: bool = False
    suppressed_by: Suppression | None = None
    rule_file: str | None = None
    id: str = field(default_factory=lambda: new_alert_id())

    @property
    def suppressed(self) -> bool:
        return self.suppressed_by is not None

    @classmethod
    def for_events(
        cls,
        *,
        rule_id: str,
        title: str,
        level: str,
        techniques: Iterable[str],
        events: Iterable[Event],
        correlation: bool = False,
        suppressed_by: Suppression | None = None,
        rule_file: str | None = None,
    ) -> Alert:
        """Build an alert whose process identity and lineage come from the last triggering event."""
        evs = tuple(events)
        last = evs[-1] if evs else None
        return cls(
            rule_id=rule_id,
            title=title,
            level=level,
            techniques=tuple(techniques),
            timestamp=last.timestamp if last else 0.0,
            host=last.host if last else None,
            entity_id=last.entity_id if last else None,
            pid=last.pid if last else None,
            lineage=last.lineage if last else (),
            events=evs,
            correlation=correlation,
            suppressed_by=suppressed_by,
            rule_file=rule_file,
        )
