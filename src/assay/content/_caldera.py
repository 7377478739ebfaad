"""Caldera (stockpile) ability and adversary YAML → :mod:`assay.content` values.

Both ability shapes load: v0 (``technique: {attack_id, name}``, ``platforms: {linux: {sh,bash: {...}}}``) and
v1 (``technique_id``, ``executors: [{name, platform, ...}]``). Every error names the file, the line and the
field, and bad abilities in a list do not stop the good ones beside them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from assay import attack
from assay.content._model import (
    DEFAULT_TIMEOUT,
    KNOWN_EXECUTORS,
    KNOWN_PLATFORMS,
    PARSER_ALIASES,
    REQUIREMENT_ALIASES,
    Ability,
    Adversary,
    Executor,
    ParserConfig,
    Privilege,
    Requirement,
    Safety,
)
from assay.content._yaml import YList, YMap
from assay.errors import AttackError, ContentError, ErrorCollector, Source

# Top-level ability keys with a meaning here; the rest is kept in `additional_info` (as Caldera does).
_ABILITY_KEYS = frozenset(
    {
        "id",
        "ability_id",
        "name",
        "description",
        "tactic",
        "technique",
        "technique_id",
        "technique_name",
        "platforms",
        "executors",
        "privilege",
        "repeatable",
        "singleton",
        "delete_payload",
        "requirements",
        "buckets",
        "safety",
        "access",
        "plugin",
        "additional_info",
    }
)
# Executor keys with a meaning here, and Caldera's own keys Assay keeps without acting on them.
_EXECUTOR_KEYS = frozenset(
    {"name", "platform", "command", "cleanup", "payloads", "uploads", "parsers", "timeout", "additional_info"}
)
_EXECUTOR_KEPT = frozenset({"variations", "language"})
_EXECUTOR_UNSUPPORTED = frozenset({"code", "build_target"})  # Caldera's builder plugin compiles these
_ADVERSARY_KEYS = frozenset(
    {"id", "adversary_id", "name", "description", "atomic_ordering", "phases", "objective", "tags", "plugin"}
)


class _Where:
    """Builds sources for one file; keeps the loaders' error sites short."""

    def __init__(self, file: str) -> None:
        self.file = file

    def at(self, node: YMap | YList, key: str | int | None = None, field: str | None = None) -> Source:
        line = node.line
        if isinstance(node, YMap) and isinstance(key, str):
            line = node.line_of(key)
        if isinstance(node, YList) and isinstance(key, int):
            line = node.line_of(key)
        return Source(file=self.file, line=line, field=field)


def _text(where: _Where, node: YMap, key: str, field: str, *, required: bool = False) -> str | None:
    value = node.get(key)
    if value is None:
        if required:
            raise ContentError(f"missing required field '{field}'", where.at(node, None, field))
        return None
    if isinstance(value, YMap | YList | bool):
        raise ContentError(
            f"'{field}' must be a string, got {type(value).__name__}", where.at(node, key, field)
        )
    return str(value)


def _required(where: _Where, node: YMap, key: str, field: str) -> str:
    value = _text(where, node, key, field, required=True)
    if not value:
        raise ContentError(f"field '{field}' is empty", where.at(node, key, field))
    return value


def _string_list(where: _Where, node: YMap, key: str, field: str) -> tuple[str, ...]:
    value = node.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, YList) or any(isinstance(v, YMap | YList) for v in value):
        raise ContentError(f"'{field}' must be a string or a list of strings", where.at(node, key, field))
    return tuple(str(v) for v in value if v is not None)


def _bool(where: _Where, node: YMap, key: str, default: bool) -> bool:
    value = node.get(key, default)
    if not isinstance(value, bool):
        raise ContentError(f"'{key}' must be true or false, got {value!r}", where.at(node, key, key))
    return value


def _technique(where: _Where, node: YMap) -> tuple[str, str]:
    tech = node.get("technique")
    if isinstance(tech, YMap):  # v0
        raw = _required(where, tech, "attack_id", "technique.attack_id")
        name = _text(where, tech, "name", "technique.name") or ""
        site = where.at(tech, "attack_id", "technique.attack_id")
    elif tech is not None:
        raise ContentError(
            "'technique' must be a mapping {attack_id, name}", where.at(node, "technique", "technique")
        )
    else:
        raw = _required(where, node, "technique_id", "technique_id")
        name = _text(where, node, "technique_name", "technique_name") or ""
        site = where.at(node, "technique_id", "technique_id")
    try:
        return attack.normalize(raw), name
    except AttackError as exc:
        raise ContentError(exc.message, site) from exc


def _parsers(where: _Where, parent: YMap, prefix: str) -> tuple[ParserConfig, ...]:
    raw = parent.get("parsers")
    if raw is None:
        return ()
    out: list[ParserConfig] = []
    # v0: {module: [cfg, ...]}; v1: [{module, parserconfigs: [cfg, ...]}]
    if isinstance(raw, YMap):
        groups = [(str(module), cfgs, raw, module) for module, cfgs in raw.items()]
    elif isinstance(raw, YList):
        groups = []
        for i, item in enumerate(raw):
            if not isinstance(item, YMap) or "module" not in item:
                raise ContentError("a parser needs 'module'", where.at(raw, i, f"{prefix}.parsers[{i}]"))
            groups.append((str(item["module"]), item.get("parserconfigs"), item, "parserconfigs"))
    else:
        raise ContentError(
            "'parsers' must be a mapping or a list", where.at(parent, "parsers", f"{prefix}.parsers")
        )
    for module, cfgs, holder, key in groups:
        if cfgs is None:
            continue
        if not isinstance(cfgs, YList):
            raise ContentError(
                "parser configs must be a list", where.at(holder, key, f"{prefix}.parsers.{module}")
            )
        for j, cfg in enumerate(cfgs):
            field = f"{prefix}.parsers.{module}[{j}]"
            if not isinstance(cfg, YMap) or "source" not in cfg:
                raise ContentError("a parser config needs 'source'", where.at(cfgs, j, field))
            for end in ("source", "edge", "target"):
                if isinstance(cfg.get(end), YMap | YList | bool):
                    raise ContentError(f"a parser '{end}' must be a trait name", where.at(cfg, end, field))
            if cfg.get("target") is not None and cfg.get("edge") is None:
                raise ContentError("a parser 'target' needs an 'edge'", where.at(cfg, "target", field))
            custom = cfg.get("custom_parser_vals") or {}
            out.append(
                ParserConfig(
                    module=module,
                    source=str(cfg["source"]),
                    edge=None if cfg.get("edge") is None else str(cfg["edge"]),
                    target=None if cfg.get("target") is None else str(cfg["target"]),
                    custom=dict(custom) if isinstance(custom, dict) else {},
                )
            )
    return tuple(out)


def _unknown_keys(
    where: _Where, node: YMap, known: frozenset[str], errors: ErrorCollector, prefix: str = ""
) -> dict[str, Any]:
    """Keys nobody here knows: kept (returned) and reported as warnings, as the issue asks."""
    extra: dict[str, Any] = {}
    for key, value in node.items():
        if key in known:
            continue
        extra[key] = value
        field = f"{prefix}{key}"
        errors.warn(ContentError(f"unknown key '{key}' kept in additional_info", where.at(node, key, field)))
    return extra


def _executor(
    where: _Where, body: YMap, name: str, platform: str, site: Source, errors: ErrorCollector
) -> Executor:
    if name not in KNOWN_EXECUTORS:
        known = ", ".join(sorted(KNOWN_EXECUTORS))
        raise ContentError(f"unknown executor {name!r} (known: {known})", site)
    if platform not in KNOWN_PLATFORMS:
        raise ContentError(f"unknown platform {platform!r} (known: linux, windows, darwin)", site)
    prefix = f"{platform}.{name}"
    command = (_text(where, body, "command", f"{prefix}.command") or "").strip()
    cleanup = tuple(c.strip() for c in _string_list(where, body, "cleanup", f"{prefix}.cleanup") if c.strip())
    built = sorted(_EXECUTOR_UNSUPPORTED & set(body))
    unsupported = ""
    if (
        built
    ):  # Caldera's builder plugin compiles `code` into `build_target`: valid content, not runnable here
        language = body.get("language")
        unsupported = (
            f"compiled by Caldera's builder plugin ({', '.join(built)}"
            + (f", language {language}" if language else "")
            + "); Assay does not build payloads"
        )
    if not command and not cleanup and not body.get("payloads") and not built:
        raise ContentError("missing required field 'command'", where.at(body, None, f"{prefix}.command"))
    timeout = body.get("timeout", DEFAULT_TIMEOUT)
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0:
        raise ContentError(
            f"'timeout' must be a positive integer, got {timeout!r}",
            where.at(body, "timeout", f"{prefix}.timeout"),
        )
    prefix_dot = f"{prefix}."
    extra = _unknown_keys(
        where, body, _EXECUTOR_KEYS | _EXECUTOR_KEPT | _EXECUTOR_UNSUPPORTED, errors, prefix_dot
    )
    for key in _EXECUTOR_KEPT | _EXECUTOR_UNSUPPORTED:
        if key in body:
            extra[key] = body[key]
    info = body.get("additional_info")
    if isinstance(info, dict):
        extra = {**info, **extra}
    parsers = _parsers(where, body, prefix)
    for module in dict.fromkeys(p.module for p in parsers):
        if module not in PARSER_ALIASES:
            errors.warn(
                ContentError(
                    f"parser {module!r} has no Assay equivalent; its output will not become facts",
                    where.at(body, "parsers", f"{prefix}.parsers"),
                )
            )
    return Executor(
        name=name,
        platform=platform,
        command=command,
        cleanup=cleanup,
        timeout=timeout,
        payloads=_string_list(where, body, "payloads", f"{prefix}.payloads"),
        uploads=_string_list(where, body, "uploads", f"{prefix}.uploads"),
        parsers=parsers,
        additional_info=extra,
        unsupported=unsupported,
    )


def _executors(where: _Where, node: YMap, errors: ErrorCollector) -> tuple[Executor, ...]:
    out: list[Executor] = []
    platforms = node.get("platforms")
    executors = node.get("executors")
    if platforms is not None:  # v0: platform keys and executor keys may both be comma lists
        if not isinstance(platforms, YMap):
            raise ContentError("'platforms' must be a mapping", where.at(node, "platforms", "platforms"))
        for plat_key, by_exec in platforms.items():
            if not isinstance(by_exec, YMap):
                raise ContentError(
                    "executors must be a mapping", where.at(platforms, plat_key, f"platforms.{plat_key}")
                )
            for exec_key, body in by_exec.items():
                site = where.at(by_exec, exec_key, f"platforms.{plat_key}.{exec_key}")
                if not isinstance(body, YMap):
                    raise ContentError("an executor must be a mapping (command, cleanup, ...)", site)
                for plat in (p.strip().lower() for p in plat_key.split(",") if p.strip()):
                    for name in (e.strip() for e in exec_key.split(",") if e.strip()):
                        out.append(_executor(where, body, name, plat, site, errors))
    elif executors is not None:  # v1
        if not isinstance(executors, YList):
            raise ContentError("'executors' must be a list", where.at(node, "executors", "executors"))
        for i, body in enumerate(executors):
            field = f"executors[{i}]"
            if not isinstance(body, YMap):
                raise ContentError("an executor must be a mapping", where.at(executors, i, field))
            exec_name = _required(where, body, "name", f"{field}.name")
            plat_name = _required(where, body, "platform", f"{field}.platform").lower()
            site = where.at(body, "name", f"{field}.name")
            out.append(_executor(where, body, exec_name, plat_name, site, errors))
    else:
        raise ContentError(
            "missing required field 'platforms' (or 'executors')", where.at(node, None, "platforms")
        )
    if not out:
        raise ContentError(
            "no executors", where.at(node, "platforms" if platforms is not None else "executors", "platforms")
        )
    return tuple(out)


def _requirements(where: _Where, node: YMap) -> tuple[Requirement, ...]:
    raw = node.get("requirements")
    if raw is None:
        return ()
    if not isinstance(raw, YList):
        raise ContentError("'requirements' must be a list", where.at(node, "requirements", "requirements"))
    out: list[Requirement] = []
    for i, item in enumerate(raw):
        if not isinstance(item, YMap):
            raise ContentError("a requirement must be a mapping", where.at(raw, i, f"requirements[{i}]"))
        if "module" in item:  # v1
            out.append(
                Requirement(
                    str(item["module"]),
                    _matches(where, item, "relationship_match", f"requirements[{i}].relationship_match"),
                )
            )
        else:  # v0: {module: [relationship, ...]}
            for module in item:
                out.append(Requirement(module, _matches(where, item, module, f"requirements[{i}].{module}")))
    return tuple(out)


def _matches(where: _Where, holder: YMap, key: str, field: str) -> tuple[dict[str, Any], ...]:
    """A requirement's relationship matches: a list of {source, edge?, target?} mappings."""
    raw = holder.get(key)
    if raw is None:
        return ()
    if not isinstance(raw, YList) or not all(isinstance(r, YMap) for r in raw):
        raise ContentError("must be a list of {source, edge, target} mappings", where.at(holder, key, field))
    return tuple(dict(r) for r in raw)


def parse_ability(node: Any, file: str, errors: ErrorCollector, *, line: int = 0) -> Ability:
    """One ability mapping → :class:`Ability`; raises :class:`ContentError` naming file:line and field."""
    where = _Where(file)
    if not isinstance(node, YMap):
        raise ContentError("an ability must be a mapping", Source(file=file, line=line or None))
    ability_id = _text(where, node, "id", "id") or _text(where, node, "ability_id", "ability_id")
    if not ability_id:
        raise ContentError("missing required field 'id'", where.at(node, None, "id"))
    technique_id, technique_name = _technique(where, node)
    name = _text(where, node, "name", "name")
    tactic = _text(where, node, "tactic", "tactic")
    for key, value in (("name", name), ("tactic", tactic)):
        if not value:  # Caldera fills these in with "auto-generated" and warns; so do we
            errors.warn(ContentError(f"missing '{key}', using 'auto-generated'", where.at(node, None, key)))
    privilege: Privilege | None = None
    raw_priv = node.get("privilege")
    if raw_priv not in (None, ""):
        try:
            privilege = Privilege(str(raw_priv))
        except ValueError as exc:
            raise ContentError(
                f"'privilege' must be 'User' or 'Elevated', got {raw_priv!r}",
                where.at(node, "privilege", "privilege"),
            ) from exc
    safety: Safety | None = None
    if node.get("safety") is not None:
        try:
            safety = Safety(str(node["safety"]).lower())
        except ValueError as exc:
            raise ContentError(
                f"'safety' must be safe, disruptive or destructive, got {node['safety']!r}",
                where.at(node, "safety", "safety"),
            ) from exc
    extra = _unknown_keys(where, node, _ABILITY_KEYS, errors)
    info = node.get("additional_info")
    if isinstance(info, dict):
        extra = {**info, **extra}
    requirements = _requirements(where, node)
    for req in requirements:
        if req.module not in REQUIREMENT_ALIASES:
            errors.warn(
                ContentError(
                    f"requirement {req.module!r} is not supported; the ability will be skipped for that",
                    where.at(node, "requirements", "requirements"),
                )
            )
    tactic_name = (tactic or "auto-generated").lower()
    return Ability(
        id=ability_id,
        name=name or "auto-generated",
        description=(_text(where, node, "description", "description") or "").strip(),
        tactic=tactic_name,
        technique_id=technique_id,
        technique_name=technique_name,
        executors=_executors(where, node, errors),
        privilege=privilege,
        repeatable=_bool(where, node, "repeatable", False),
        singleton=_bool(where, node, "singleton", False),
        delete_payload=_bool(where, node, "delete_payload", True),
        requirements=requirements,
        buckets=_string_list(where, node, "buckets", "buckets") or (tactic_name,),
        safety=safety,
        access=dict(node["access"]) if isinstance(node.get("access"), dict) else {},
        plugin=_text(where, node, "plugin", "plugin") or "",
        additional_info=extra,
        origin=where.at(node),
    )


def iter_abilities(doc: YList, file: str, errors: ErrorCollector) -> Iterator[Ability]:
    """Each good ability of a file's list; each bad one is recorded in ``errors`` and skipped."""
    for i, item in enumerate(doc):
        with errors.capture():
            yield parse_ability(item, file, errors, line=doc.line_of(i))


def parse_adversary(node: YMap, file: str, errors: ErrorCollector | None = None) -> Adversary:
    where = _Where(file)
    extra = _unknown_keys(where, node, _ADVERSARY_KEYS, errors if errors is not None else ErrorCollector())
    adversary_id = _text(where, node, "adversary_id", "adversary_id") or _text(where, node, "id", "id")
    if not adversary_id:
        raise ContentError("missing required field 'adversary_id'", where.at(node, None, "adversary_id"))
    ordering: list[str] = []
    if "atomic_ordering" in node:
        raw = node["atomic_ordering"]
        if not isinstance(raw, YList):
            raise ContentError(
                "'atomic_ordering' must be a list of ability ids",
                where.at(node, "atomic_ordering", "atomic_ordering"),
            )
        for i, item in enumerate(raw):
            if isinstance(item, YMap | YList) or item is None:
                raise ContentError(
                    "an ability id must be a string", where.at(raw, i, f"atomic_ordering[{i}]")
                )
            ordering.append(str(item))
    elif isinstance(
        node.get("phases"), YMap
    ):  # legacy Caldera: {1: [ids], 2: [ids]} flattened in phase order
        phases = node["phases"]
        for key in sorted(
            phases, key=lambda k: (not str(k).isdigit(), int(k) if str(k).isdigit() else 0, str(k))
        ):
            items = phases[key] or YList()
            if not isinstance(items, YList) or any(isinstance(a, YMap | YList) or a is None for a in items):
                raise ContentError(
                    "a phase must be a list of ability ids", where.at(phases, key, f"phases.{key}")
                )
            ordering.extend(str(a) for a in items)
    else:
        raise ContentError(
            "missing required field 'atomic_ordering'", where.at(node, None, "atomic_ordering")
        )
    return Adversary(
        id=adversary_id,
        name=_text(where, node, "name", "name") or adversary_id,
        description=(_text(where, node, "description", "description") or "").strip(),
        atomic_ordering=tuple(ordering),
        objective=_text(where, node, "objective", "objective"),
        tags=_string_list(where, node, "tags", "tags"),
        plugin=_text(where, node, "plugin", "plugin") or "",
        additional_info=extra,
        origin=where.at(node),
    )
