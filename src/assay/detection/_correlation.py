"""Sigma v2 correlation rules, evaluated on the stream with bounded memory.

Supported types: ``event_count``, ``value_count``, ``temporal`` and ``temporal_ordered``, with ``group-by``,
``timespan``, ``aliases``, ``generate`` and chains (a correlation referencing a correlation). The metric
types of pySigma 2 (``value_sum`` ...) and extended (boolean) conditions are refused with a reason.

Windows and memory:

- A lower-bounded condition (``gt``/``gte``) fires as soon as it holds in the sliding window that ends at the
  newest event, so an alert is raised while the attack runs, not when a window closes. Per group the state
  keeps only as many timestamps (or distinct values) as the threshold needs: memory is bounded by the
  threshold, whatever the event rate.
- An upper-bounded condition (``lt``/``lte``/``eq``/``neq``) can only be decided once the window is over: the
  window opens at the group's first event, and is decided on the first later event or by ``flush(now)``.
- Groups live in an LRU map capped at ``max_groups`` per rule; evictions are counted, never silent.
"""

from __future__ import annotations

import math
import operator
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sigma.correlations import (
    SigmaCorrelationCondition,
    SigmaCorrelationConditionOperator,
    SigmaCorrelationRule,
    SigmaCorrelationType,
)

from assay.errors import RuleUnsupported

Key = tuple[Any, ...]
Getter = Callable[[str], Any]

_OPS: dict[SigmaCorrelationConditionOperator, Callable[[float, float], bool]] = {
    SigmaCorrelationConditionOperator.LT: operator.lt,
    SigmaCorrelationConditionOperator.LTE: operator.le,
    SigmaCorrelationConditionOperator.GT: operator.gt,
    SigmaCorrelationConditionOperator.GTE: operator.ge,
    SigmaCorrelationConditionOperator.EQ: operator.eq,
    SigmaCorrelationConditionOperator.NEQ: operator.ne,
}
_LOWER_BOUNDED = {SigmaCorrelationConditionOperator.GT, SigmaCorrelationConditionOperator.GTE}
MAX_EVIDENCE = 10  # events kept per alert: the first and the most recent ones
# What on_hit returns when nothing fired: shared, so that the common case allocates nothing. Callers only
# iterate over it.
_NOTHING: list[Fired] = []


@dataclass(slots=True)
class Hit:
    """One match of a referenced rule: when, how to read its fields, and the events behind it."""

    timestamp: float
    get: Getter
    events: tuple[Any, ...]


@dataclass(slots=True)
class Fired:
    key: Key
    events: tuple[Any, ...]
    timestamp: float
    group: dict[str, Any]


class _Single:
    """A key seen once by a lazy correlation (see ``Correlation._lazy``)."""

    __slots__ = ("hit", "last", "ref")

    def __init__(self, last: float, ref: str, hit: Hit) -> None:
        self.last = last
        self.ref = ref
        self.hit = hit


class _Group:
    """State of one group-by key. Plain slots, containers made on first use: groups are created per key
    (per process, per address), often for a single event, so creation must be cheap."""

    __slots__ = ("count", "fired", "first", "last", "recent", "start", "steps", "times", "values")

    def __init__(
        self,
        start: float,
        times: deque[float] | None,
        values: dict[Any, float] | None,
        steps: dict[int, tuple[float, tuple[Any, ...]]] | None,
    ) -> None:
        # Only the container the correlation type uses is given (the others stay None): a group is made
        # for nearly every hit of a busy building block (one per process), and most never see a second.
        self.start = start
        self.last = start
        self.count = 0
        self.fired = False
        self.times = times
        self.values = values  # value → last seen; insertion order is recency (re-inserted when seen)
        self.steps = steps
        self.first: list[Any] = []  # evidence: the first events of the window and the most recent ones
        self.recent: deque[Any] | None = None

    def keep(self, events: tuple[Any, ...]) -> None:
        """Keep the first and the most recent events as evidence, in constant space."""
        first = self.first
        if len(first) + len(events) <= MAX_EVIDENCE // 2:
            first.extend(events)  # the common case: a group's first event or two
            return
        for e in events:
            if len(first) < MAX_EVIDENCE // 2:
                first.append(e)
            else:
                if self.recent is None:
                    self.recent = deque(maxlen=MAX_EVIDENCE - MAX_EVIDENCE // 2)
                self.recent.append(e)

    @property
    def evidence(self) -> list[Any]:
        return [*self.first, *(self.recent or ())]


def _evidence(old: list[Any], new: Iterable[Any]) -> list[Any]:
    merged = [*old, *new]
    if len(merged) <= MAX_EVIDENCE:
        return merged
    return merged[: MAX_EVIDENCE // 2] + merged[-(MAX_EVIDENCE - MAX_EVIDENCE // 2) :]


class Correlation:
    """The running state of one correlation rule."""

    def __init__(
        self,
        rule: SigmaCorrelationRule,
        refs: Sequence[str],
        group_fields: dict[str, list[str]],
        value_fields: dict[str, str] | None = None,
        max_groups: int = 10_000,
    ) -> None:
        """``refs``: keys of the referenced rules, in order. ``group_fields[ref]``: for each group-by name,
        the event field that holds it in that rule's events. ``value_fields[ref]``: value_count's field."""
        self.rule = rule
        self.rule_id = ""  # set by the engine: the id alerts carry
        self.refs = list(refs)
        self.first_step = {self.refs[0]} if self.refs else set()
        self.group_names = list(rule.group_by or [])
        self.group_fields = group_fields
        self.value_fields = value_fields or {}
        self.type = rule.type
        self.timespan = float(rule.timespan.seconds)
        self.max_groups = max_groups
        self.evicted = 0
        self.groups: OrderedDict[Key, _Group] = OrderedDict()
        cond = rule.condition
        if self.type in (SigmaCorrelationType.EVENT_COUNT, SigmaCorrelationType.VALUE_COUNT):
            if not isinstance(cond, SigmaCorrelationCondition):
                raise RuleUnsupported("extended (boolean) correlation conditions are not implemented")
            self.op = cond.op
            self.threshold = float(cond.count)
        elif self.type in (SigmaCorrelationType.TEMPORAL, SigmaCorrelationType.TEMPORAL_ORDERED):
            self.op = SigmaCorrelationConditionOperator.GTE
            self.threshold = float(len(self.refs))
        else:
            raise RuleUnsupported(f"correlation type '{self.type.name.lower()}' is not implemented")
        self.lower_bounded = self.op in _LOWER_BOUNDED
        # How much history a lower-bounded condition needs: the threshold-th newest item decides it.
        self.keep = int(self.threshold) + 1

        self._names = {ref: tuple(fields) for ref, fields in group_fields.items()}
        # For sliding windows, the smallest item count the condition accepts (counts are integers).
        self._min_count = (
            math.ceil(self.threshold)
            if self.op is SigmaCorrelationConditionOperator.GTE
            else math.floor(self.threshold) + 1
        )
        # temporal_ordered: hits of a later step start nothing when no chain is open for their key
        self._late_refs = (
            set(self.refs) - self.first_step
            if self.type is SigmaCorrelationType.TEMPORAL_ORDERED
            else set[str]()
        )
        # Lower-bounded counts need two items or more to fire: their first sighting of a key is kept as
        # the hit alone, and a group is made on the second. Busy building blocks (every outbound
        # connection, per process) mostly see a key once.
        self._lazy = (
            self.lower_bounded
            and self.type in (SigmaCorrelationType.EVENT_COUNT, SigmaCorrelationType.VALUE_COUNT)
            and self._min_count >= 2
        )
        self._singles: OrderedDict[Key, _Single] = OrderedDict()
        self._step = {
            SigmaCorrelationType.EVENT_COUNT: self._count,
            SigmaCorrelationType.VALUE_COUNT: self._values,
            SigmaCorrelationType.TEMPORAL: self._temporal,
            SigmaCorrelationType.TEMPORAL_ORDERED: self._ordered,
        }[self.type]

    def _holds(self, n: float) -> bool:
        return _OPS[self.op](n, self.threshold)

    def _new_group(self, ts: float) -> _Group:
        kind = self.type
        if kind is SigmaCorrelationType.VALUE_COUNT:
            return _Group(ts, None, {}, None)
        if kind is SigmaCorrelationType.EVENT_COUNT:
            return _Group(ts, deque() if self.lower_bounded else None, None, None)
        return _Group(ts, None, None, {})

    def on_hit(self, ref: str, hit: Hit) -> list[Fired]:
        """Feed one match of the referenced rule ``ref``; returns what fired (usually nothing).

        This runs for every match of a building block (every outbound connection, every rename), so the
        common case, a new group or a group below its threshold, is kept to a few dict operations."""
        names = self._names.get(ref)
        if names is None or (not self.groups and ref in self._late_refs):
            return _NOTHING  # not ours, or a later step of a sequence no key has started
        key = (hit.get(names[0]),) if len(names) == 1 else tuple(map(hit.get, names))
        if None in key:
            return _NOTHING  # an event without a group-by field joins no group (as SQL GROUP BY on NULL)
        ts = hit.timestamp
        groups = self.groups
        out = _NOTHING
        if self.lower_bounded:
            if groups:
                self._expire(groups, ts)
            if self._singles:
                self._expire(self._singles, ts)
        else:
            g = groups.get(key)
            if g is not None and ts - g.start > self.timespan:
                fired = self._close(key, g)
                if fired:
                    out = [fired]
                del groups[key]
        g = groups.get(key)
        if g is None:
            if ref in self._late_refs:
                return out  # a later step with no chain started: nothing to remember (keeps memory bounded)
            if self._lazy:
                first = self._singles.pop(key, None)
                if first is None:
                    # A first sighting cannot reach a threshold of two or more: remember just the hit.
                    self._singles[key] = _Single(ts, ref, hit)
                    self._cap()
                    return out
                g = groups[key] = self._new_group(first.last)
                self._step(key, g, first.hit, first.ref)  # cannot fire: one item, threshold two or more
            else:
                g = groups[key] = self._new_group(ts)
                self._cap()
        else:
            groups.move_to_end(key)
        g.last = ts
        fired_ = self._step(key, g, hit, ref)
        if fired_ is not None:
            return [*out, fired_]
        return out

    def _cap(self) -> None:
        """Keep at most ``max_groups`` keys, evicting the least recently seen (first sightings first:
        they hold the least)."""
        if len(self.groups) + len(self._singles) > self.max_groups:
            (self._singles or self.groups).popitem(last=False)
            self.evicted += 1

    def _expire(self, groups: OrderedDict[Key, Any], now: float, budget: int = 4) -> None:
        """Drop a few groups whose window has passed, oldest first (the LRU order is the order of their
        last events). Amortised over hits, this keeps the state to what the timespan can still use, so
        the cap on groups is a safety net rather than the normal way groups leave."""
        for _ in range(budget):
            key = next(iter(groups))
            if now - groups[key].last <= self.timespan:
                return
            del groups[key]
            if not groups:
                return

    def _fire(self, key: Key, g: _Group, ts: float, events: Iterable[Any]) -> Fired:
        return Fired(key, tuple(events), ts, dict(zip(self.group_names, key, strict=False)))

    def _count(self, key: Key, g: _Group, hit: Hit, ref: str) -> Fired | None:
        g.keep(hit.events)
        if not self.lower_bounded:
            g.count += 1
            return None
        times = g.times
        assert times is not None  # made for event_count groups
        ts = hit.timestamp
        times.append(ts)
        while ts - times[0] > self.timespan:
            times.popleft()  # never empties: ts itself is in the window
        if len(times) > self.keep:
            times.popleft()
        if len(times) >= self._min_count:
            fired = self._fire(key, g, ts, g.evidence)
            del self.groups[key]  # a fresh window: the next alert needs a full threshold again
            return fired
        return None

    def _values(self, key: Key, g: _Group, hit: Hit, ref: str) -> Fired | None:
        fname = self.value_fields.get(ref)
        value = hit.get(fname) if fname else None
        if value is None:
            return None
        values = g.values
        assert values is not None  # made for value_count groups
        if isinstance(value, str):
            value = value.lower()
        ts = hit.timestamp
        if value in values:
            del values[value]  # re-inserted below: the newest is last
        values[value] = ts
        g.keep(hit.events)
        if not self.lower_bounded:
            return None
        while True:  # never empties: the value just seen is in the window
            oldest = next(iter(values))
            if ts - values[oldest] <= self.timespan and len(values) <= self.keep:
                break
            del values[oldest]
        if len(values) >= self._min_count:
            fired = self._fire(key, g, ts, g.evidence)
            del self.groups[key]
            return fired
        return None

    def _temporal(self, key: Key, g: _Group, hit: Hit, ref: str) -> Fired | None:
        steps = g.steps
        assert steps is not None  # made for temporal groups
        idx = self.refs.index(ref)
        steps[idx] = (hit.timestamp, hit.events)
        for i, (seen, _) in list(steps.items()):
            if hit.timestamp - seen > self.timespan:
                del steps[i]
        if len(steps) == len(self.refs):
            events = [e for i in sorted(steps, key=lambda i: steps[i][0]) for e in steps[i][1]]
            fired = self._fire(key, g, hit.timestamp, _evidence([], events))
            del self.groups[key]
            return fired
        return None

    def _ordered(self, key: Key, g: _Group, hit: Hit, ref: str) -> Fired | None:
        """Step i holds (start of the latest chain that reached it, its events). A later start is kept since
        it leaves the most time for the remaining steps."""
        steps = g.steps
        assert steps is not None  # made for temporal groups
        fired: Fired | None = None
        for idx in sorted((i for i, r in enumerate(self.refs) if r == ref), reverse=True):
            if idx == 0:
                steps[0] = (hit.timestamp, hit.events)
            else:
                prev = steps.get(idx - 1)
                if prev is None or hit.timestamp - prev[0] > self.timespan:
                    continue
                steps[idx] = (prev[0], prev[1] + hit.events)
            if idx == len(self.refs) - 1:
                events = steps[idx][1]
                fired = self._fire(key, g, hit.timestamp, _evidence([], events))
                del self.groups[key]
                return fired
        return fired

    def _close(self, key: Key, g: _Group) -> Fired | None:
        """Decide an upper-bounded condition on a window that is over."""
        if self.type is SigmaCorrelationType.EVENT_COUNT:
            n = g.count
        elif self.type is SigmaCorrelationType.VALUE_COUNT:
            n = len(g.values or ())
        else:
            return None
        if self._holds(n) and not g.fired:
            g.fired = True
            return self._fire(key, g, g.start + self.timespan, g.evidence)
        return None

    def flush(self, now: float) -> list[Fired]:
        out: list[Fired] = []
        for key, single in list(self._singles.items()):
            if now - single.last > self.timespan:
                del self._singles[key]
        for key, g in list(self.groups.items()):
            # A sliding (lower-bounded) window lives as long as its newest event can still count.
            if now - (g.start if not self.lower_bounded else g.last) > self.timespan:
                if not self.lower_bounded:
                    fired = self._close(key, g)
                    if fired:
                        out.append(fired)
                del self.groups[key]
            elif self.lower_bounded and g.times is not None:
                while g.times and now - g.times[0] > self.timespan:
                    g.times.popleft()
        return out

    def state_size(self) -> int:
        return sum(
            len(g.times or ())
            + len(g.values or ())
            + len(g.steps or ())
            + len(g.first)
            + len(g.recent or ())
            + 1
            for g in self.groups.values()
        ) + sum(2 + len(single.hit.events) for single in self._singles.values())
