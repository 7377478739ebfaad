"""The detection engine: events in, alerts out.

Rules are grouped by the ``event.action`` values their condition can match (every rule is ANDed with its
logsource's actions by the pipeline), and each group is one generated matcher function (``_codegen``). An
event therefore runs only the rules that could ever match it. Matches of base rules feed the correlation
state; every alert passes the allowlists, which flag (never drop) what they suppress.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sigma.correlations import SigmaCorrelationRule
from sigma.rule import SigmaRule

from assay.detection._allowlist import Allowlist, load_allowlists
from assay.detection._codegen import Matcher
from assay.detection._correlation import Correlation, Fired, Hit
from assay.detection._index import IndexedMatcher
from assay.detection._loader import LoadedRule, RuleInfo, load_rules, unsupported
from assay.detection._pipeline import Unmappable, event_field
from assay.detection._provenance import RecentFiles
from assay.errors import AssayError, DetectionError, ErrorCollector, RuleUnsupported, Source
from assay.events import Alert, Event


def builtin_rule_paths() -> list[Path]:
    """Rule directories registered through the ``rule_paths`` hook (the built-ins and any plugin's)."""
    from assay.plugins import plugin_manager

    out: list[Path] = []
    for paths in plugin_manager().hook.rule_paths():
        out.extend(Path(p) for p in paths)
    return out


def builtin_allowlist_paths() -> list[Path]:
    """Allowlist files registered through the ``allowlist_paths`` hook (the shipped defaults)."""
    from assay.plugins import plugin_manager

    out: list[Path] = []
    for paths in plugin_manager().hook.allowlist_paths():
        out.extend(Path(p) for p in paths)
    return out


@dataclass(slots=True)
class _Bucket:
    """The rules an ``event.action`` can reach, their generated matcher, and per rule (by the matcher's
    indices) what a match does: the alert to raise (None for a correlation's silent base rule) and the
    correlations it feeds. Precomputed so that a match costs no lookups."""

    matcher: Matcher
    rules: list[LoadedRule]
    plan: list[tuple[RuleInfo | None, tuple[tuple[Correlation, str], ...]]]


RENAME, WRITE, DELETE = "file_rename", "file_write", "file_delete"
_PROVENANCE = frozenset({RENAME, WRITE, DELETE})


class Engine:
    """Sigma rules compiled to Python, with correlation and allowlists. See :meth:`load`."""

    def __init__(
        self,
        loaded: Sequence[LoadedRule],
        errors: Sequence[AssayError] = (),
        allowlist: Allowlist | None = None,
        max_groups: int = 10_000,
    ) -> None:
        self.errors: list[AssayError] = list(errors)
        self.allowlist = allowlist or Allowlist()
        self.suppressed: Counter[str] = Counter()  # allowlist entry id → matches it silenced
        self.recent = RecentFiles()  # paths this host wrote lately: cleanup is not destruction
        # Copies: linking correlations marks base rules (emit), and loaded rules are shared by a cache.
        self._loaded = [dataclasses.replace(r) for r in loaded]
        self._correlations: dict[str, Correlation] = {}
        self._subscribers: dict[str, list[tuple[Correlation, str]]] = {}
        self._link_correlations(max_groups)
        self.rules: list[RuleInfo] = [r.info for r in self._loaded]
        self._by_id = {r.info.id: r for r in self._loaded}
        self._active = [r for r in self._loaded if r.info.supported and r.node is not None]
        self._buckets: dict[str, _Bucket] = {}
        # A correlation's base rule that does not alert on its own (no `generate`) maps nothing itself.
        self.mapped_techniques: frozenset[str] = frozenset(
            t for r in self._loaded if r.info.supported and r.emit for t in r.info.techniques
        )
        consumed: set[str] = set()
        for r in self._active:
            if r.actions is not None:
                consumed |= r.actions
        if WRITE in consumed:
            consumed.add(RENAME)  # the file-write rules see renames too (see _rename)
        self.consumed_actions: frozenset[str] = frozenset(consumed)

    @classmethod
    def load(
        cls,
        rule_paths: Iterable[str | Path] = (),
        allowlist_paths: Iterable[str | Path] = (),
        include_builtin: bool = True,
        include_default_allowlists: bool | None = None,
    ) -> Engine:
        """Load rules (and the built-ins registered through the ``rule_paths`` hook) and allowlists (and the
        shipped defaults, unless ``include_default_allowlists`` is false; it follows ``include_builtin``).
        Bad rules and allowlist entries are reported in :attr:`errors` with file:line and id; the rest
        load."""
        errors = ErrorCollector()
        paths: list[str | Path] = [*builtin_rule_paths()] if include_builtin else []
        paths.extend(rule_paths)
        loaded = load_rules(paths, errors)
        defaults = include_builtin if include_default_allowlists is None else include_default_allowlists
        allow_paths: list[str | Path] = [*builtin_allowlist_paths()] if defaults else []
        allow_paths.extend(allowlist_paths)
        allowlist = load_allowlists(allow_paths, errors)
        return cls(loaded, errors.errors, allowlist)

    # -- correlation wiring --------------------------------------------------------------------------
    def _link_correlations(self, max_groups: int) -> None:
        index: dict[str, LoadedRule] = {}
        for r in self._loaded:
            index.setdefault(r.info.id, r)
            if r.name:
                index.setdefault(r.name, r)
        generated: dict[str, bool] = {}
        for pos, r in enumerate(self._loaded):
            if not isinstance(r.rule, SigmaCorrelationRule):
                continue
            try:
                refs = self._resolve(r, index)
                corr = self._correlation(r, refs, index, max_groups)
            except RuleUnsupported as exc:
                self._loaded[pos] = unsupported(r, exc.message)
                continue
            corr.rule_id = r.info.id
            self._correlations[r.info.id] = corr
            for ref in refs:
                self._subscribers.setdefault(ref, []).append((corr, ref))
                generated[ref] = generated.get(ref, False) or bool(r.rule.generate)
        for r in self._loaded:
            if r.info.id in generated and not generated[r.info.id]:
                r.emit = False  # Sigma: a correlation's base rules alert on their own only with `generate`

    def _resolve(self, r: LoadedRule, index: dict[str, LoadedRule]) -> list[str]:
        assert isinstance(r.rule, SigmaCorrelationRule)
        refs: list[str] = []
        for ref in r.rule.rules or []:
            target = index.get(ref.reference)
            if target is None:
                self.errors.append(
                    DetectionError(
                        f"correlation references unknown rule '{ref.reference}'",
                        Source(file=r.info.file, line=r.info.line, rule=r.info.id),
                    )
                )
                raise RuleUnsupported(f"references unknown rule '{ref.reference}'")
            if not target.info.supported and target.info.kind == "rule":
                raise RuleUnsupported(f"references unsupported rule '{ref.reference}': {target.info.reason}")
            refs.append(target.info.id)
        if not refs:
            raise RuleUnsupported("correlation references no rules")
        return refs

    def _correlation(
        self, r: LoadedRule, refs: list[str], index: dict[str, LoadedRule], max_groups: int
    ) -> Correlation:
        rule = r.rule
        assert isinstance(rule, SigmaCorrelationRule)
        aliases = {a.alias: {k.reference: v for k, v in a.mapping.items()} for a in rule.aliases}
        group_fields: dict[str, list[str]] = {}
        value_fields: dict[str, str] = {}
        cond_field = getattr(rule.condition, "fieldref", None)
        for ref in refs:
            target = self._by_ref(ref)
            names: list[str] = []
            for g in rule.group_by or []:
                sigma_name = g
                if g in aliases:
                    alias = aliases[g]
                    sigma_name = next((alias[k] for k in (target.name, target.info.id) if k in alias), g)
                names.append(self._field_of(target, sigma_name))
            group_fields[ref] = names
            if isinstance(cond_field, str):
                value_fields[ref] = self._field_of(target, cond_field)
            elif cond_field is not None:
                raise RuleUnsupported("value_count over several fields is not implemented")
        return Correlation(rule, refs, group_fields, value_fields, max_groups)

    def _by_ref(self, rule_id: str) -> LoadedRule:
        for r in self._loaded:
            if r.info.id == rule_id:
                return r
        raise RuleUnsupported(
            f"rule '{rule_id}' vanished while linking"
        )  # unreachable: ids come from _resolve

    def _field_of(self, target: LoadedRule, name: str) -> str:
        if isinstance(target.rule, SigmaCorrelationRule):
            if name not in (target.rule.group_by or []):
                raise RuleUnsupported(
                    f"field '{name}' is not a group-by field of correlation '{target.info.id}'"
                )
            return name
        assert isinstance(target.rule, SigmaRule)
        try:
            return event_field(target.rule, name)
        except Unmappable as exc:
            raise RuleUnsupported(f"group-by/condition {exc}") from exc

    # -- matching ------------------------------------------------------------------------------------
    def _bucket(self, action: str) -> tuple[Matcher, list[LoadedRule]]:
        found = self._buckets.get(action)
        if found is None:
            found = self._build_bucket(action)
        return found.matcher, found.rules

    def _build_bucket(self, action: str) -> _Bucket:
        # Sigma compares case-insensitively, event.action too (bounds hold lower-cased values).
        low = action.lower()
        rules = [r for r in self._active if r.actions is None or low in r.actions]
        matcher = IndexedMatcher([(i, r.node) for i, r in enumerate(rules) if r.node is not None], action)
        plan = [(r.info if r.emit else None, tuple(self._subscribers.get(r.info.id, ()))) for r in rules]
        # the generated function itself, not the IndexedMatcher around it: one call less per event
        found = self._buckets[action] = _Bucket(matcher.function, rules, plan)
        return found

    def match(self, event: Event) -> list[LoadedRule]:
        """The supported detection rules whose condition holds for ``event`` (no alerts, no allowlists)."""
        action = event.fields.get("event.action", "")
        matcher, rules = self._bucket(action if isinstance(action, str) else str(action))
        return [rules[i] for i in matcher(event.fields)]

    def process(self, event: Event) -> list[Alert]:
        """Alerts for one event: rule matches (suppressed ones flagged) and correlations it completes.

        This runs for every event the sensor sees, and nearly all of them match nothing: that path is one
        dict lookup for the action's bucket and one call of its generated matcher."""
        f = event.fields
        action = f.get("event.action", "")
        if action in _PROVENANCE:
            self._note_file(f, action)
        bucket = self._buckets.get(action) if action.__class__ is str else None
        if bucket is None:
            bucket = self._build_bucket(action if isinstance(action, str) else str(action))
        hits = bucket.matcher(f)
        if action == RENAME and f.get("file.target_path"):
            return self._rename(event, bucket, hits)
        if not hits:
            return []
        return self._raise(event, bucket, hits, [])

    def _note_file(self, f: dict[str, Any], action: str) -> None:
        """Keep what this host wrote, and mark a deletion of it (see ``_provenance``)."""
        path = f.get("file.target_path") if action == RENAME else f.get("file.path")
        ts = f.get("@timestamp")
        if not isinstance(path, str) or not isinstance(ts, (int, float)):
            return
        if action == DELETE:
            if self.recent.made(path, ts):
                f["file.recently_created"] = True
        else:
            self.recent.wrote(path, ts)

    def _raise(self, event: Event, bucket: _Bucket, hits: Iterable[int], alerts: list[Alert]) -> list[Alert]:
        f = event.fields
        plan = bucket.plan
        hit: Hit | None = None
        for i in hits:
            info, subs = plan[i]
            if info is not None:
                alerts.append(self._alert(info, (event,), correlation=False))
            if subs:
                if hit is None:
                    hit = Hit(f["@timestamp"], f.get, (event,))
                for corr, key in subs:
                    for fired in corr.on_hit(key, hit):
                        self._fired(corr, fired, alerts)
        return alerts

    def _rename(self, event: Event, bucket: _Bucket, hits: list[int]) -> list[Alert]:
        """A rename onto a path writes that path: ``sed -i``, editors and installers write a temporary file
        and rename it over the target. So the file-write rules (``file_event``) also see the rename, as a
        write of its new name; the alert's evidence is the rename itself."""
        alerts = self._raise(event, bucket, hits, [])
        f = event.fields
        written = {**f, "event.action": WRITE, "file.path": f["file.target_path"]}
        writes = self._buckets.get(WRITE) or self._build_bucket(WRITE)
        # Rules that take renames (or every action) have already seen this event as it is.
        fresh = [
            i for i in writes.matcher(written) if (acts := writes.rules[i].actions) and RENAME not in acts
        ]
        return self._raise(event, writes, fresh, alerts) if fresh else alerts

    def _feed(self, ref: str, hit: Hit, alerts: list[Alert]) -> None:
        for corr, key in self._subscribers.get(ref, ()):
            for fired in corr.on_hit(key, hit):
                self._fired(corr, fired, alerts)

    def _fired(self, corr: Correlation, fired: Fired, alerts: list[Alert]) -> None:
        info = self._by_id[corr.rule_id].info
        alerts.append(self._alert(info, fired.events, correlation=True))
        if info.id in self._subscribers:  # a chain: this correlation is referenced by another one
            self._feed(info.id, Hit(fired.timestamp, fired.group.get, fired.events), alerts)

    def _alert(self, info: RuleInfo, events: Sequence[Event], *, correlation: bool) -> Alert:
        suppression = (
            self.allowlist.check(info.id, info.title, info.techniques, events[-1])
            if events and self.allowlist
            else None
        )
        if suppression is not None:
            self.suppressed[suppression.entry_id] += 1
        return Alert.for_events(
            rule_id=info.id,
            title=info.title,
            level=info.level,
            techniques=info.techniques,
            events=events,
            correlation=correlation,
            suppressed_by=suppression,
            rule_file=info.file,
        )

    def flush(self, now: float) -> list[Alert]:
        """Alerts of correlation windows that close at time ``now``; also drops expired correlation state."""
        alerts: list[Alert] = []
        for corr in self._correlations.values():
            for fired in corr.flush(now):
                self._fired(corr, fired, alerts)
        return alerts

    def correlation_state(self) -> dict[str, int]:
        """Items held per correlation rule (bounded: see ``_correlation``), and groups evicted by the cap."""
        out: dict[str, int] = {}
        for rid, c in self._correlations.items():
            out[rid] = c.state_size()
            if c.evicted:
                out[rid + ":evicted"] = c.evicted
        return out
