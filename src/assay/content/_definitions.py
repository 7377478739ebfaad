"""Caldera objective and planner YAML (stockpile's ``data/objectives``, ``data/planners``) → values.

id: 495a9828-...   name: default
                   goals: [{target: exhaustion, value: complete, count: 1048576, operator: '=='}]
id: aaa7c857-...   name: atomic    module: plugins.stockpile.app.atomic   params: {}
                   stopping_conditions: [{host.user.password: blah}]   ignore_enforcement_modules: []

A planner definition whose module Assay implements (atomic, batch, buckets, look_ahead, guided) runs as that
planner with the definition's parameters; any other loads as a definition and is listed with its reason.
"""

from __future__ import annotations

from typing import Any

from assay.content._model import GOAL_OPERATORS, Goal, Objective, PlannerDefinition
from assay.content._yaml import YList, YMap
from assay.errors import ContentError, ErrorCollector, Source

# Caldera planner modules (the last dotted component) Assay implements, and the Assay planner for each.
PLANNER_MODULES: dict[str, str] = {
    "atomic": "atomic",
    "batch": "batch",
    "buckets": "buckets",
    "look_ahead": "look_ahead",
    "guided": "guided",
}
_MAX_COUNT = 2**20


def _at(file: str, node: YMap | YList, key: str | int | None = None, field: str | None = None) -> Source:
    if isinstance(node, YMap) and isinstance(key, str):
        return Source(file=file, line=node.line_of(key), field=field)
    if isinstance(node, YList) and isinstance(key, int):
        return Source(file=file, line=node.line_of(key), field=field)
    return Source(file=file, line=node.line, field=field)


def _scalar(value: Any) -> str:
    if value is None or isinstance(value, dict | list):
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).strip()


def _required_id(file: str, node: YMap) -> str:
    value = _scalar(node.get("id"))
    if not value:
        raise ContentError("missing required field 'id'", _at(file, node, None, "id"))
    return value


def parse_objective(node: YMap, file: str, errors: ErrorCollector) -> Objective:
    """An objective mapping; raises :class:`ContentError` naming file:line and field."""
    objective_id = _required_id(file, node)
    goals: list[Goal] = []
    raw = node.get("goals")
    if raw is not None and not isinstance(raw, YList):
        raise ContentError("'goals' must be a list", _at(file, node, "goals", "goals"))
    goal_list: YList = raw if raw is not None else YList()
    for i, item in enumerate(goal_list):
        field = f"goals[{i}]"
        if not isinstance(item, YMap):
            raise ContentError(
                "a goal must be a mapping {target, value, count, operator}", _at(file, goal_list, i, field)
            )
        target = _scalar(item.get("target"))
        if not target:
            raise ContentError(
                "a goal needs 'target' (a fact trait)", _at(file, item, None, f"{field}.target")
            )
        operator = _scalar(item.get("operator")) or "=="
        if operator not in GOAL_OPERATORS:
            raise ContentError(
                f"'operator' must be one of {', '.join(sorted(GOAL_OPERATORS))}, got {operator!r}",
                _at(file, item, "operator", f"{field}.operator"),
            )
        count = item.get("count", 1)
        if count is None:
            count = 1
        if not isinstance(count, int) or isinstance(count, bool) or not 0 < count <= _MAX_COUNT:
            raise ContentError(
                f"'count' must be an integer 1..{_MAX_COUNT}, got {count!r}",
                _at(file, item, "count", f"{field}.count"),
            )
        goals.append(Goal(target, _scalar(item.get("value")), count, operator))
    for key in node:
        if key not in ("id", "name", "description", "goals"):
            errors.warn(ContentError(f"unknown objective key '{key}' ignored", _at(file, node, key, key)))
    return Objective(
        id=objective_id,
        name=_scalar(node.get("name")) or objective_id,
        goals=tuple(goals),
        description=_scalar(node.get("description")),
        origin=_at(file, node),
    )


def planner_module(module: str) -> str:
    """The Assay planner for a Caldera planner module (``plugins.stockpile.app.look_ahead``), or ''."""
    return PLANNER_MODULES.get(module.rsplit(".", 1)[-1], "")


def parse_planner(node: YMap, file: str, errors: ErrorCollector) -> PlannerDefinition:
    """A planner definition mapping; raises :class:`ContentError` naming file:line and field."""
    planner_id = _required_id(file, node)
    module = _scalar(node.get("module"))
    if not module:
        raise ContentError("missing required field 'module'", _at(file, node, None, "module"))
    params = node.get("params")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ContentError("'params' must be a mapping", _at(file, node, "params", "params"))
    conditions: list[tuple[str, str]] = []
    raw = node.get("stopping_conditions")
    if raw is not None and not isinstance(raw, YList):
        raise ContentError(
            "'stopping_conditions' must be a list of {trait: value}",
            _at(file, node, "stopping_conditions", "stopping_conditions"),
        )
    condition_list: YList = raw if raw is not None else YList()
    for i, item in enumerate(condition_list):
        if not isinstance(item, YMap) or not item:
            raise ContentError(
                "a stopping condition must be a mapping {trait: value}",
                _at(file, condition_list, i, f"stopping_conditions[{i}]"),
            )
        conditions.extend((str(trait), _scalar(value)) for trait, value in item.items())
    ignored = node.get("ignore_enforcement_modules") or []
    if not isinstance(ignored, list) or any(isinstance(m, dict | list) for m in ignored):
        raise ContentError(
            "'ignore_enforcement_modules' must be a list of module names",
            _at(file, node, "ignore_enforcement_modules", "ignore_enforcement_modules"),
        )
    repeatable = node.get("allow_repeatable_abilities", False)
    if not isinstance(repeatable, bool):
        raise ContentError(
            f"'allow_repeatable_abilities' must be true or false, got {repeatable!r}",
            _at(file, node, "allow_repeatable_abilities", "allow_repeatable_abilities"),
        )
    known = {"id", "name", "description", "module", "params", "stopping_conditions",
             "ignore_enforcement_modules", "allow_repeatable_abilities", "plugin"}  # fmt: skip
    for key in node:
        if key not in known:
            errors.warn(ContentError(f"unknown planner key '{key}' ignored", _at(file, node, key, key)))
    return PlannerDefinition(
        id=planner_id,
        name=_scalar(node.get("name")) or planner_id,
        module=module,
        description=_scalar(node.get("description")),
        params=dict(params),
        stopping_conditions=tuple(conditions),
        ignore_enforcement_modules=tuple(str(m) for m in ignored),
        allow_repeatable_abilities=repeatable,
        runs_as=planner_module(module),
        plugin=_scalar(node.get("plugin")),
        origin=_at(file, node),
    )
