"""Load content from files and directories, and the built-in library registered through plugins."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from assay.content._atomic import is_atomic, parse_atomic
from assay.content._caldera import iter_abilities, parse_adversary
from assay.content._definitions import parse_objective, parse_planner
from assay.content._model import Ability, ContentSkip, Library, Safety
from assay.content._safety import classify
from assay.content._sources import parse_source
from assay.content._yaml import YList, YMap, load_yaml_file
from assay.errors import ContentError, ErrorCollector, Source


@dataclass(slots=True)
class LoadResult:
    """A library and everything that went wrong loading it (errors skip an item; warnings keep it).

    ``loaded`` counts what each kind of file contributed: ``abilities`` (Caldera format), ``atomic tests``,
    ``adversaries``, ``sources``, ``objectives``, ``planners``; ``files`` is how many files were read.
    ``skips`` is valid content Assay will not run, each with its reason (never an error).
    """

    library: Library = field(default_factory=Library)
    errors: ErrorCollector = field(default_factory=ErrorCollector)
    loaded: Counter[str] = field(default_factory=Counter)
    files: int = 0
    # Safety overrides read from ``safety_overrides:`` files: ability id → (class, where it was set).
    overrides: dict[str, tuple[Safety, Source]] = field(default_factory=dict)
    skips: list[ContentSkip] = field(default_factory=list)


# A Caldera plugin or a stockpile checkout keeps its content in data/<kind>/; everything else in the tree
# (app/, templates/, .github/ workflows, conf/) is code or configuration, not content.
CONTENT_DIRS = ("abilities", "adversaries", "sources", "objectives", "planners")


def _data_dirs(root: Path) -> list[Path]:
    """The ``data/`` directories of a Caldera-style tree: the root itself, ``root/data``, ``root/*/data``
    (a plugin directory) and ``root/plugins/*/data`` (a Caldera checkout). Empty: not such a tree."""
    candidates = [root, root / "data", *sorted(root.glob("*/data")), *sorted(root.glob("plugins/*/data"))]
    return [d for d in candidates if d.is_dir() and any((d / kind).is_dir() for kind in CONTENT_DIRS)]


def _yaml_under(path: Path) -> list[Path]:
    return sorted(
        p
        for p in path.rglob("*")
        if p.suffix in (".yml", ".yaml")
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )


def _files(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if not path.is_dir():
            out.append(path)
            continue
        data = _data_dirs(path)
        if not data:
            out.extend(_yaml_under(path))
            continue
        for directory in data:
            for kind in CONTENT_DIRS:
                if (directory / kind).is_dir():
                    out.extend(_yaml_under(directory / kind))
    return list(dict.fromkeys(out))


def content_payload_dirs(paths: Iterable[Path | str]) -> list[Path]:
    """``payloads/`` directories beside content: ``<data>/payloads`` of a Caldera-style tree."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(d / "payloads" for d in _data_dirs(path) if (d / "payloads").is_dir())
    return out


def _load_file(path: Path, result: LoadResult) -> None:
    name = str(path)
    doc = load_yaml_file(path)
    lib, errors = result.library, result.errors
    if isinstance(doc, YList):
        _add_abilities(_classified(iter_abilities(doc, name, errors)), result, "abilities")
    elif is_atomic(doc):
        # Commands name files shipped in the atomics folder (PathToAtomicsFolder, expanded at import):
        # scripts and binaries the classifier does not read.
        atomics = str(path.resolve().parent.parent)
        _add_abilities(_classified(parse_atomic(doc, name, errors), atomics), result, "atomic tests")
    elif isinstance(doc, YMap) and "safety_overrides" in doc:
        _read_overrides(doc, name, result)
    elif isinstance(doc, YMap) and ("atomic_ordering" in doc or "phases" in doc or "adversary_id" in doc):
        adversary = parse_adversary(doc, name, errors)
        first_adv = lib.adversaries.get(adversary.id)
        if first_adv is not None:
            raise ContentError(
                f"duplicate adversary id {adversary.id!r} (first defined at {first_adv.origin})",
                adversary.origin,
            )
        lib.adversaries[adversary.id] = adversary
        result.loaded["adversaries"] += 1
    elif isinstance(doc, YMap) and ("platforms" in doc or "executors" in doc):
        holder = YList([doc])
        holder.line, holder.item_lines = doc.line, [doc.line]
        _add_abilities(_classified(iter_abilities(holder, name, errors)), result, "abilities")
    elif isinstance(doc, YMap) and ("facts" in doc or "rules" in doc or "adjustments" in doc):
        source = parse_source(doc, name, errors)
        first_src = lib.sources.get(source.id)
        if first_src is not None:
            raise ContentError(
                f"duplicate fact source id {source.id!r} (first defined at {first_src.origin})", source.origin
            )
        lib.sources[source.id] = source
        result.loaded["sources"] += 1
    elif isinstance(doc, YMap) and "goals" in doc:
        objective = parse_objective(doc, name, errors)
        first_obj = lib.objectives.get(objective.id)
        if first_obj is not None:
            raise ContentError(
                f"duplicate objective id {objective.id!r} (first defined at {first_obj.origin})",
                objective.origin,
            )
        lib.objectives[objective.id] = objective
        result.loaded["objectives"] += 1
    elif isinstance(doc, YMap) and "module" in doc:
        definition = parse_planner(doc, name, errors)
        first_plan = lib.planners.get(definition.id)
        if first_plan is not None:  # stockpile's own caldera_attacker.yml reuses sequential's id
            result.skips.append(
                ContentSkip(
                    "planner",
                    definition.id,
                    definition.name,
                    f"duplicate planner id (first defined at {first_plan.origin}); the first is kept",
                    definition.origin,
                )
            )
            return
        lib.planners[definition.id] = definition
        result.loaded["planners"] += 1
        if not definition.runs_as:
            result.skips.append(
                ContentSkip("planner", definition.id, definition.name,
                            f"module {definition.module!r} has no Assay planner "
                            "(Assay runs atomic, batch, buckets, look_ahead and guided)", definition.origin)
            )  # fmt: skip
    else:
        # A scalar or empty document is the whole file: point at its first line.
        line = doc.line if isinstance(doc, YMap | YList) else 1
        got = (
            ""
            if isinstance(doc, YMap | YList)
            else f" (got {'nothing' if doc is None else type(doc).__name__})"
        )
        raise ContentError(
            "not Caldera content (nor Atomic Red Team): expected a list of abilities, an adversary with "
            f"'atomic_ordering', a fact source, or an atomic with 'atomic_tests'{got}",
            Source(file=name, line=line),
        )


def _classified(abilities: Iterable[Ability], *opaque: str) -> Iterable[Ability]:
    """Abilities that say their safety class keep it; the others (Atomic tests, Caldera's stockpile) get the
    classifier's, with its reason. Payloads are files the classifier cannot read: at least disruptive."""
    for ability in abilities:
        if ability.safety is not None:
            yield (
                ability
                if ability.safety_reason
                else dataclasses.replace(ability, safety_reason="declared by the ability")
            )
            continue
        safety, reason = classify(ability, opaque_paths=opaque)
        if safety is Safety.SAFE and any(e.payloads for e in ability.executors):
            safety, reason = Safety.DISRUPTIVE, "runs payloads, which the classifier does not read"
        yield dataclasses.replace(ability, safety=safety, safety_reason=f"classified: {reason}")


def _read_overrides(doc: YMap, name: str, result: LoadResult) -> None:
    """``safety_overrides: {<ability id>: safe|disruptive|destructive}``: the user's word over the
    classifier's, per ability."""
    raw = doc["safety_overrides"]
    if not isinstance(raw, YMap):
        raise ContentError(
            "'safety_overrides' must map ability ids to safe, disruptive or destructive",
            Source(file=name, line=doc.line_of("safety_overrides"), field="safety_overrides"),
        )
    for ability_id, value in raw.items():
        where = Source(file=name, line=raw.line_of(ability_id), field=f"safety_overrides.{ability_id}")
        try:
            safety = Safety(str(value).lower())
        except ValueError:
            result.errors.add(
                ContentError(f"safety must be safe, disruptive or destructive, got {value!r}", where)
            )
            continue
        result.overrides[str(ability_id)] = (safety, where)


def apply_overrides(result: LoadResult, overrides: Mapping[str, tuple[Safety, Source]]) -> None:
    """Set each named ability's class, recording where the override came from; an id no loaded ability has
    is a warning naming the override's file and line (or option)."""
    for ability_id, (safety, where) in overrides.items():
        ability = result.library.abilities.get(ability_id)
        if ability is None:
            result.errors.warn(ContentError(f"safety override for unknown ability {ability_id!r}", where))
            continue
        result.library.abilities[ability_id] = dataclasses.replace(
            ability,
            safety=safety,
            safety_reason=f"overridden at {where}: {safety.value} (was {ability.safety or 'unclassified'})",
        )


def _add_abilities(abilities: Iterable[Ability], result: LoadResult, kind: str) -> None:
    lib, errors = result.library, result.errors
    for ability in abilities:
        first = lib.abilities.get(ability.id)
        if first is not None:
            errors.add(
                ContentError(
                    f"duplicate ability id {ability.id!r} (first defined at {first.origin})", ability.origin
                )
            )
            continue
        lib.abilities[ability.id] = ability
        result.loaded[kind] += 1


def load_paths(paths: Iterable[Path | str]) -> LoadResult:
    """Load every ``.yml``/``.yaml`` under ``paths``. One bad file or ability never stops the rest."""
    result = LoadResult()
    for path in _files(Path(p) for p in paths):
        result.files += 1
        with result.errors.capture():
            _load_file(path, result)
    apply_overrides(result, result.overrides)
    result.skips.extend(ability_skips(result.library))
    result.library.add_defaults()
    return result


# Executors Assay's agent runs on Linux (a Caldera agent on Linux runs `sh` and `proc` itself).
LINUX_EXECUTORS = frozenset({"sh", "bash", "python", "python3", "proc"})


def runs_on_linux(ability: Ability) -> bool:
    return any(e.name in LINUX_EXECUTORS for e in ability.executors_for("linux"))


def ability_skips(library: Library) -> list[ContentSkip]:
    """Every loaded ability Assay will not run on Linux, and why (each executor's own reason)."""
    out: list[ContentSkip] = []
    for ability in library.abilities.values():
        for e in ability.executors:
            if e.unsupported:
                reason = f"{e.platform}/{e.name}: {e.unsupported}"
                out.append(ContentSkip("executor", ability.id, ability.name, reason, ability.origin))
        if runs_on_linux(ability):
            continue
        linux = [e for e in ability.executors if e.platform == "linux"]
        if not linux:
            reason = f"no Linux executor (platforms: {', '.join(ability.platforms)})"
        elif all(e.unsupported for e in linux):
            reason = "no Linux executor Assay can run: " + "; ".join(e.unsupported for e in linux)
        else:
            names = sorted({e.name for e in linux if not e.unsupported})
            reason = f"Linux executors {names} are not ones Assay runs ({', '.join(sorted(LINUX_EXECUTORS))})"
        out.append(ContentSkip("ability", ability.id, ability.name, reason, ability.origin))
    return out


def builtin_paths() -> list[Path]:
    """Content directories registered through the ``content_paths`` hook (built-ins and plugins)."""
    from assay.plugins import plugin_manager

    out: list[Path] = []
    for paths in plugin_manager().hook.content_paths():
        out.extend(paths)
    return out


def load_builtin(extra: Iterable[Path | str] = ()) -> LoadResult:
    return load_paths([*builtin_paths(), *extra])
