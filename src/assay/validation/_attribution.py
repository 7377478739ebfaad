"""Join telemetry and alerts to links through process lineage.

A link's *root* is the process the agent started for it. An event belongs to the link when the root is in the
event's lineage (the process itself or any ancestor); an alert, when the root is in its lineage or in the
lineage of any event that triggered it (a correlation spans several processes).

Identity is pid plus start time (an entity id), never the pid alone: pids are reused, and a short link on a
busy host can share its pid with an unrelated process minutes later.

Across a pid namespace (an agent in ``assay.sandbox``): the agent reports the pid it sees, its namespace pid.
Start ticks are boot-relative and the same inside and outside, and the sensor reports every process of a
non-host pid namespace with ``process.ns_pid`` beside its host pid. So the root is the host entity whose
events say (namespace pid, start ticks) = the link's (pid, start ticks), and ``process.entity_id`` keeps
meaning host pid:start ticks everywhere.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from assay.events import Action, Alert, Event
from assay.validation._records import LinkRecord

# Agents stamp times with their own clock and the sensor with the kernel's; on one host they agree to well
# under this, and across hosts NTP keeps them within it. Used only to find a pid-only link's root.
CLOCK_SLACK = 2.0


@dataclass
class Lineage:
    """What is known about one link's process tree."""

    root: str | None
    events: list[Event] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    losses: list[Event] = field(default_factory=list)


def _alert_lineages(alert: Alert) -> set[str]:
    ids = set(alert.lineage)
    for ev in alert.events:
        ids.update(ev.lineage)
    return ids


def _entities(events: Sequence[Event]) -> tuple[set[str], dict[tuple[int, int], str]]:
    """Entity ids seen, and (namespace pid, start ticks) → host entity id for processes in a pid namespace."""
    seen: set[str] = set()
    by_ns_pid: dict[tuple[int, int], str] = {}
    for ev in events:
        eid = ev.entity_id
        if not eid:
            continue
        seen.add(eid)
        ns_pid = ev.get("process.ns_pid")
        if isinstance(ns_pid, int) and ns_pid != ev.pid:
            ticks = eid.rpartition(":")[2]
            if ticks.isdigit():
                by_ns_pid.setdefault((ns_pid, int(ticks)), eid)
    return seen, by_ns_pid


def resolve_roots(links: Sequence[LinkRecord], events: Sequence[Event]) -> dict[str, str | None]:
    """Link id → root entity id (a host entity id, also for links run inside a pid namespace).

    Assay's agent reports the start ticks, so the root is exact. For a pid-only link, the root is the entity
    with that pid whose first event falls inside the link's run (with :data:`CLOCK_SLACK`).
    """
    roots: dict[str, str | None] = {}
    pending: dict[int, list[LinkRecord]] = defaultdict(list)
    host_entities, by_ns_pid = _entities(events)
    for link in links:
        exact = link.root_entity_id
        if exact is not None and exact not in host_entities and link.start_ticks is not None:
            # Not a host process the sensor saw: a pid reported from inside a pid namespace (see module doc).
            exact = by_ns_pid.get((link.pid or 0, link.start_ticks), exact)
        roots[link.link_id] = exact
        if exact is None and link.pid and link.pid > 0 and link.window is not None:
            pending[link.pid].append(link)
    if not pending:
        return roots
    first_seen: dict[str, tuple[int, float]] = {}
    for ev in events:
        pid, eid = ev.pid, ev.entity_id
        if pid in pending and eid:
            seen = first_seen.get(eid)
            if seen is None or ev.timestamp < seen[1]:
                first_seen[eid] = (pid, ev.timestamp)
    for pid, candidates in pending.items():
        entities = [(eid, ts) for eid, (p, ts) in first_seen.items() if p == pid]
        for link in candidates:
            begin, end = link.window  # type: ignore[misc]  # filtered above
            inside = [(ts, eid) for eid, ts in entities if begin - CLOCK_SLACK <= ts <= end + CLOCK_SLACK]
            roots[link.link_id] = min(inside)[1] if inside else None
    return roots


def _overlaps(loss: Event, window: tuple[float, float] | None, host: str | None) -> bool:
    if window is None:
        return False
    if host and loss.host and loss.host != host:
        return False
    start = loss.get("loss.window.start", loss.timestamp)
    end = loss.get("loss.window.end", loss.timestamp)
    return bool(start <= window[1] and end >= window[0])


# A beat's span starts where the previous one ended, so spans are contiguous while the watcher lives; the
# slack only absorbs clock skew between the agent's stamps and the watcher's. Not the beat interval: what
# the watcher saw after its last beat never reached the server.
COVERAGE_SLACK = 0.25


def coverage_gaps(heartbeats: Sequence[Event], window: tuple[float, float] | None) -> list[Event]:
    """The parts of ``window`` no heartbeat of the host's sensor covers, each as a ``loss`` of unknown count.

    Only where the host's sensor sent heartbeats at all (a source that sends none, a replay for instance,
    keeps its word on losses alone). A sensor killed outright cannot report its loss; the end of its
    heartbeats says when it stopped watching.
    """
    if window is None or not heartbeats:
        return []
    spans = sorted(
        (float(b.get("sensor.covered.start", b.timestamp)), float(b.get("sensor.covered.end", b.timestamp)))
        for b in heartbeats
    )
    gaps: list[tuple[float, float]] = []
    cursor = window[0]
    for start, end in spans:
        if start - COVERAGE_SLACK > cursor:
            gaps.append((cursor, min(start, window[1])))
        cursor = max(cursor, end)
        if cursor >= window[1]:
            break
    if cursor < window[1]:  # no slack at the end: the link's last instant (its last exec) may be the one
        gaps.append((cursor, window[1]))
    host = heartbeats[0].host
    last = max(end for _, end in spans)
    return [
        Event.of(
            Action.LOSS,
            "coverage",
            begin,
            host=host,
            values={
                "loss.count": 0,
                "loss.window.start": begin,
                "loss.window.end": end,
                "loss.reason": f"the sensor was not reporting for {end - begin:.1f} s of this link's run "
                f"(its heartbeats stop at {last:.1f}, or pause)",
            },
        )
        for begin, end in gaps
        if end > begin
    ]


def attribute(
    links: Sequence[LinkRecord],
    events: Iterable[Event],
    alerts: Iterable[Alert],
    alert_links: Mapping[str, Sequence[str]] | None = None,
) -> tuple[dict[str, Lineage], list[Alert]]:
    """Return each link's lineage (keyed by link id) and the alerts no link explains.

    Cleanup links take part: an alert raised by a cleanup command is explained (by the cleanup), not a
    false-positive candidate. An alert named in ``alert_links`` (a stored attribution) goes to the links it
    names that are in this round, whatever its lineage says; the others are attributed by lineage.
    """
    event_list = list(events)
    roots = resolve_roots(links, event_list)
    by_root: dict[str, list[str]] = defaultdict(list)
    out: dict[str, Lineage] = {}
    for link in links:
        root = roots[link.link_id]
        out[link.link_id] = Lineage(root=root)
        if root:
            by_root[root].append(link.link_id)

    losses = [ev for ev in event_list if ev.action == Action.LOSS]
    for ev in event_list:
        if ev.action == Action.LOSS:
            continue
        for eid in ev.lineage:
            for link_id in by_root.get(eid, ()):
                out[link_id].events.append(ev)
    unexplained: list[Alert] = []
    stored = alert_links or {}
    for alert in alerts:
        hit = False
        if alert.id in stored:
            for link_id in dict.fromkeys(stored[alert.id]):
                if link_id in out:
                    out[link_id].alerts.append(alert)
                    hit = True
            if not hit:
                unexplained.append(alert)
            continue
        for eid in _alert_lineages(alert):
            for link_id in by_root.get(eid, ()):
                out[link_id].alerts.append(alert)
                hit = True
        if not hit:
            unexplained.append(alert)
    beats: dict[str | None, list[Event]] = defaultdict(list)
    for ev in event_list:
        if ev.action == Action.SENSOR:
            beats[ev.host].append(ev)
    for link in links:
        found = [lo for lo in losses if _overlaps(lo, link.window, link.host)]
        if link.host in beats or (link.host is None and len(beats) == 1):
            host_beats = beats[link.host] if link.host in beats else next(iter(beats.values()))
            found.extend(coverage_gaps(host_beats, link.window))
        out[link.link_id].losses = found
    return out, unexplained
