"""Caldera fact source YAML → :class:`FactSource`: seed facts, rules, relationships, visibility adjustments.

id: ed32b9c3-...            name: basic
facts:         [{trait: host.user.name, value: alice, score: 1}]
rules:         [{action: DENY, trait: host.user.name, match: '.*'}, {action: ALLOW, ...}]
relationships: [{source: {trait: a, value: x}, edge: has, target: {trait: b, value: y}, score: 1}]
adjustments:   {<ability id>: {<trait>: [{value: x, offset: 10}]}}
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from assay.content._model import (
    Adjustment,
    FactRule,
    FactSource,
    RuleAction,
    SeedFact,
    SeedRelationship,
)
from assay.content._yaml import YList, YMap
from assay.errors import ContentError, ErrorCollector, Source

_SOURCE_KEYS = frozenset({"id", "name", "facts", "rules", "relationships", "adjustments", "plugin"})


def _at(file: str, node: YMap | YList, key: str | int | None, field: str | None) -> Source:
    if isinstance(node, YMap) and isinstance(key, str):
        return Source(file=file, line=node.line_of(key), field=field)
    if isinstance(node, YList) and isinstance(key, int):
        return Source(file=file, line=node.line_of(key), field=field)
    return Source(file=file, line=node.line, field=field)


def _scalar(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _list(file: str, node: YMap, key: str) -> YList:
    raw = node.get(key)
    if raw is None:
        empty = YList()
        empty.line, empty.item_lines = node.line, []
        return empty
    if not isinstance(raw, YList):
        raise ContentError(f"'{key}' must be a list", _at(file, node, key, key))
    return raw


def _score(file: str, node: YMap, field: str) -> int:
    score = node.get("score", 1)
    if not isinstance(score, int) or isinstance(score, bool):
        raise ContentError(f"'score' must be an integer, got {score!r}", _at(file, node, "score", field))
    return score


def _facts(file: str, node: YMap) -> tuple[SeedFact, ...]:
    out: list[SeedFact] = []
    raw = _list(file, node, "facts")
    for i, item in enumerate(raw):
        field = f"facts[{i}]"
        if not isinstance(item, YMap):
            raise ContentError("a fact must be a mapping {trait, value}", _at(file, raw, i, field))
        trait = _scalar(item.get("trait", item.get("name")))  # Caldera accepts `name` as an alias
        value = _scalar(item.get("value"))
        if not trait:
            raise ContentError("a fact needs 'trait'", _at(file, item, None, f"{field}.trait"))
        if value is None:
            raise ContentError("a fact needs a scalar 'value'", _at(file, item, "value", f"{field}.value"))
        out.append(SeedFact(trait, value, _score(file, item, field)))
    return tuple(out)


def check_rule_match(match: str) -> str | None:
    """Why ``match`` cannot be a rule pattern (None when it can): an address/CIDR, or a valid regex."""
    try:
        ipaddress.ip_network(match, strict=False)
        return None
    except ValueError:
        pass
    try:
        re.compile(match)
    except re.error as exc:
        return f"not a regular expression or an address/CIDR: {exc}"
    return None


def _rules(file: str, node: YMap) -> tuple[FactRule, ...]:
    out: list[FactRule] = []
    raw = _list(file, node, "rules")
    for i, item in enumerate(raw):
        field = f"rules[{i}]"
        if not isinstance(item, YMap):
            raise ContentError("a rule must be a mapping {action, trait, match}", _at(file, raw, i, field))
        action = str(item.get("action", "")).upper()
        if action not in ("ALLOW", "DENY"):
            raise ContentError(
                f"'action' must be ALLOW or DENY, got {item.get('action')!r}",
                _at(file, item, "action", f"{field}.action"),
            )
        trait = _scalar(item.get("trait"))
        if not trait:
            raise ContentError("a rule needs 'trait'", _at(file, item, None, f"{field}.trait"))
        match = _scalar(item.get("match")) or ".*"
        problem = check_rule_match(match)
        if problem:  # Caldera's "Alice Filters" ship `*.255`, which is neither; say so instead of guessing
            raise ContentError(problem, _at(file, item, "match", f"{field}.match"))
        out.append(FactRule(RuleAction(action), trait, match))
    return tuple(out)


def _end(file: str, item: YMap, key: str, field: str) -> tuple[str, str | None]:
    end = item.get(key)
    if not isinstance(end, YMap) or not _scalar(end.get("trait")):
        raise ContentError(f"'{key}' must be a mapping {{trait, value}}", _at(file, item, key, field))
    return str(end["trait"]), _scalar(end.get("value"))


def _relationships(file: str, node: YMap) -> tuple[SeedRelationship, ...]:
    out: list[SeedRelationship] = []
    raw = _list(file, node, "relationships")
    for i, item in enumerate(raw):
        field = f"relationships[{i}]"
        if not isinstance(item, YMap):
            raise ContentError("a relationship must be a mapping", _at(file, raw, i, field))
        source = _end(file, item, "source", f"{field}.source")
        target = _end(file, item, "target", f"{field}.target") if item.get("target") is not None else None
        edge = _scalar(item.get("edge"))
        if target is not None and not edge:
            raise ContentError("a relationship 'target' needs an 'edge'", _at(file, item, "target", field))
        out.append(SeedRelationship(source, edge, target, _score(file, item, field)))
    return tuple(out)


def _adjustments(file: str, node: YMap) -> tuple[Adjustment, ...]:
    raw = node.get("adjustments")
    if raw is None:
        return ()
    if isinstance(raw, YList):  # Caldera's REST shape: [{ability_id, trait, value, offset}]
        flat: list[Adjustment] = []
        for i, adj in enumerate(raw):
            field = f"adjustments[{i}]"
            values = (
                {k: _scalar(adj.get(k)) for k in ("ability_id", "trait", "value")}
                if isinstance(adj, YMap)
                else {}
            )
            offset = adj.get("offset") if isinstance(adj, YMap) else None
            if not all(values.get(k) for k in ("ability_id", "trait")) or values.get("value") is None:
                raise ContentError(
                    "an adjustment needs 'ability_id', 'trait' and 'value'", _at(file, raw, i, field)
                )
            if not isinstance(offset, int) or isinstance(offset, bool):
                raise ContentError(
                    "an adjustment needs an integer 'offset'", _at(file, raw, i, f"{field}.offset")
                )
            flat.append(
                Adjustment(str(values["ability_id"]), str(values["trait"]), str(values["value"]), offset)
            )
        return tuple(flat)
    if not isinstance(raw, YMap):
        raise ContentError("'adjustments' must be a mapping", _at(file, node, "adjustments", "adjustments"))
    out: list[Adjustment] = []
    for ability_id, by_trait in raw.items():
        field = f"adjustments.{ability_id}"
        if not isinstance(by_trait, YMap):
            raise ContentError("must be a mapping {trait: [...]}", _at(file, raw, ability_id, field))
        for trait, items in by_trait.items():
            if not isinstance(items, YList):
                raise ContentError(
                    "must be a list of {value, offset}", _at(file, by_trait, trait, f"{field}.{trait}")
                )
            for j, adj in enumerate(items):
                sub = f"{field}.{trait}[{j}]"
                offset = adj.get("offset") if isinstance(adj, YMap) else None
                value = _scalar(adj.get("value")) if isinstance(adj, YMap) else None
                if value is None or not isinstance(offset, int) or isinstance(offset, bool):
                    raise ContentError(
                        "an adjustment needs 'value' and an integer 'offset'", _at(file, items, j, sub)
                    )
                out.append(Adjustment(str(ability_id), str(trait), value, offset))
    return tuple(out)


def parse_source(node: YMap, file: str, errors: ErrorCollector) -> FactSource:
    """One fact source mapping; raises :class:`ContentError` naming file:line and field."""
    source_id = _scalar(node.get("id"))
    if not source_id:
        raise ContentError("missing required field 'id'", _at(file, node, None, "id"))
    extra: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _SOURCE_KEYS:
            extra[key] = value
            errors.warn(
                ContentError(f"unknown key '{key}' kept in additional_info", _at(file, node, key, key))
            )
    return FactSource(
        id=source_id,
        name=_scalar(node.get("name")) or source_id,
        facts=_facts(file, node),
        rules=_rules(file, node),
        relationships=_relationships(file, node),
        adjustments=_adjustments(file, node),
        plugin=_scalar(node.get("plugin")) or "",
        additional_info=extra,
        origin=_at(file, node, None, None),
    )
