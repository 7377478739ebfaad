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


@dataclass
class Hit:
    """One match of a referenced rule: when, how to read its fields, and the events behind it."""

    timestamp: float
    get: Getter
    events: tuple[Any, ...]


@dataclass
class Fired:
    key: Key
    events: tuple[Any, ...]
    timestamp: float
    group: dict[str, Any]


class _Group:
    """State of one group-by key. Plain slots, containers made on first use: groups are created per key
    (per process, per address), often for a single event, so creation must be cheap."""

    __slots__ = ("count", "fired", "first", "last", "recent", "start", "steps", "times", "values")

    def __init__(self, start: float) -> None:
        self.start = start
        self.last = start
        self.count = 0
        self.fired = False
        self.times: deque[float] = deque()
        self.values: OrderedDict[Any, float] = OrderedDict()
        self.steps: dict[int, tuple[float, tuple[Any, ...]]] = {}
        self.first: list[Any] = []  # evidence: the first events of the window and the most recent ones
        self.recent: deque[Any] | None = None

    def keep(self, events: Iterable[Any]) -> None:
        """Keep the first and the most recent events as evidence, in constant space."""
        for e in events:
            if len(self.first) < MAX_EVIDENCE // 2:
                self.first.append(e)
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

    def _holds(self, n: float) -> bool:
        return _OPS[self.op](n, self.threshold)

    def _group(self, key: Key, ts: float) -> _Group:
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = _Group(ts)
            if len(self.groups) > self.max_groups:
                self.groups.popitem(last=False)
                self.evicted += 1
        else:
            self.groups.move_to_end(key)
        return g

    def on_hit(self, ref: str, hit: Hit) -> list[Fired]:
        names = self.group_fields.get(ref)
        if names is None:
            return []
        get = hit.get
        key = tuple([get(f) for f in names])
        if None in key:
            return []  # an event without a group-by field joins no group (as SQL GROUP BY on NULL would not)
        out: list[Fired] = []
        ts = hit.timestamp
        if self.lower_bounded and self.groups:
            self._expire(ts)
        if not self.lower_bounded:
            g = self.groups.get(key)
            if g is not None and ts - g.start > self.timespan:
                fired = self._close(key, g)
                if fired:
                    out.append(fired)
                del self.groups[key]
        if (
            self.type is SigmaCorrelationType.TEMPORAL_ORDERED
            and ref not in self.first_step
            and key not in self.groups
        ):
            return out  # a later step with no chain started: nothing to remember (keeps memory bounded)
        g = self._group(key, ts)
        g.last = ts
        if self.type is SigmaCorrelationType.EVENT_COUNT:
            fired_ = self._count(key, g, hit)
        elif self.type is SigmaCorrelationType.VALUE_COUNT:
            fired_ = self._values(key, g, hit, ref)
        elif self.type is SigmaCorrelationType.TEMPORAL:
            fired_ = self._temporal(key, g, hit, ref)
        else:
            fired_ = self._ordered(key, g, hit, ref)
        if fired_ is not None:
            out.append(fired_)
        return out

    def _expire(self, now: float, budget: int = 4) -> None:
        """Drop a few groups whose window has passed, oldest first (the LRU order is the order of their
        last events). Amortised over hits, this keeps the state to what the timespan can still use, so
        the cap on groups is a safety net rather than the normal way groups leave."""
        groups = self.groups
        for _ in range(budget):
            key = next(iter(groups))
            if now - groups[key].last <= self.timespan:
                return
            del groups[key]
            if not groups:
                return

    def _fire(self, key: Key, g: _Group, ts: float, events: Iterable[Any]) -> Fired:
        return Fired(key, tuple(events), ts, dict(zip(self.group_names, key, strict=False)))

    def _count(self, key: Key, g: _Group, hit: Hit) -> Fired | None:
        if not self.lower_bounded:
            g.count += 1
            g.keep(hit.events)
            return None
        g.times.append(hit.timestamp)
        g.keep(hit.events)
        while g.times and hit.timestamp - g.times[0] > self.timespan:
            g.times.popleft()
        while len(g.times) > self.keep:
            g.times.popleft()
        if self._holds(len(g.times)):
            fired = self._fire(key, g, hit.timestamp, g.evidence)
            del self.groups[key]  # a fresh window: the next alert needs a full threshold again
            return fired
        return None

    def _values(self, key: Key, g: _Group, hit: Hit, ref: str) -> Fired | None:
        fname = self.value_fields.get(ref)
        value = hit.get(fname) if fname else None
        if value is None:
            return None
        value = value.lower() if isinstance(value, str) else value
        g.values[value] = hit.timestamp
        g.values.move_to_end(value)
        g.keep(hit.events)
        if not self.lower_bounded:
            return None
        while g.values:
            oldest, seen = next(iter(g.values.items()))
            if hit.timestamp - seen <= self.timespan and len(g.values) <= self.keep:
                break
            del g.values[oldest]
        if self._holds(len(g.values)):
            fired = self._fire(key, g, hit.timestamp, g.evidence)
            del self.groups[key]
            return fired
        return None

    def _temporal(self, key: Key, g: _Group, hit: Hit, ref: str) -> Fired | None:
        idx = self.refs.index(ref)
        g.steps[idx] = (hit.timestamp, hit.events)
        for i, (seen, _) in list(g.steps.items()):
            if hit.timestamp - seen > self.timespan:
                del g.steps[i]
        if len(g.steps) == len(self.refs):
            events = [e for i in sorted(g.steps, key=lambda i: g.steps[i][0]) for e in g.steps[i][1]]
            fired = self._fire(key, g, hit.timestamp, _evidence([], events))
            del self.groups[key]
            return fired
        return None

    def _ordered(self, key: Key, g: _Group, hit: Hit, ref: str) -> Fired | None:
        """Step i holds (start of the latest chain that reached it, its events). A later start is kept since
        it leaves the most time for the remaining steps."""
        fired: Fired | None = None
        for idx in sorted((i for i, r in enumerate(self.refs) if r == ref), reverse=True):
            if idx == 0:
                g.steps[0] = (hit.timestamp, hit.events)
            else:
                prev = g.steps.get(idx - 1)
                if prev is None or hit.timestamp - prev[0] > self.timespan:
                    continue
                g.steps[idx] = (prev[0], prev[1] + hit.events)
            if idx == len(self.refs) - 1:
                events = g.steps[idx][1]
                fired = self._fire(key, g, hit.timestamp, _evidence([], events))
                del self.groups[key]
                return fired
        return fired

    def _close(self, key: Key, g: _Group) -> Fired | None:
        """Decide an upper-bounded condition on a window that is over."""
        if self.type is SigmaCorrelationType.EVENT_COUNT:
            n = g.count
        elif self.type is SigmaCorrelationType.VALUE_COUNT:
            n = len(g.values)
        else:
            return None
        if self._holds(n) and not g.fired:
            g.fired = True
            return self._fire(key, g, g.start + self.timespan, g.evidence)
        return None

    def flush(self, now: float) -> list[Fired]:
        out: list[Fired] = []
        for key, g in list(self.groups.items()):
            # A sliding (lower-bounded) window lives as long as its newest event can still count.
            if now - (g.start if not self.lower_bounded else g.last) > self.timespan:
                if not self.lower_bounded:
                    fired = self._close(key, g)
                    if fired:
                        out.append(fired)
                del self.groups[key]
            elif self.lower_bounded and self.type is SigmaCorrelationType.EVENT_COUNT:
                while g.times and now - g.times[0] > self.timespan:
                    g.times.popleft()
        return out

    def state_size(self) -> int:
        return sum(
            len(g.times) + len(g.values) + len(g.steps) + len(g.first) + len(g.recent or ()) + 1
            for g in self.groups.values()
        )
