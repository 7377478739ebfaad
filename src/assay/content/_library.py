"""Load content from files and directories, and the built-in library registered through plugins."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from assay.content._caldera import iter_abilities, parse_adversary
from assay.content._model import Library
from assay.content._yaml import YList, YMap, load_yaml_file
from assay.errors import ContentError, ErrorCollector, Source


@dataclass(slots=True)
class LoadResult:
    """A library and everything that went wrong loading it (errors skip an item; warnings keep it)."""

    library: Library = field(default_factory=Library)
    errors: ErrorCollector = field(default_factory=ErrorCollector)


def _files(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file()))
        else:
            out.append(path)
    return out


def _load_file(path: Path, result: LoadResult) -> None:
    name = str(path)
    doc = load_yaml_file(path)
    lib, errors = result.library, result.errors
    if isinstance(doc, YList):
        _add_abilities(doc, name, result)
    elif isinstance(doc, YMap) and ("atomic_ordering" in doc or "phases" in doc or "adversary_id" in doc):
        adversary = parse_adversary(doc, name)
        first_adv = lib.adversaries.get(adversary.id)
        if first_adv is not None:
            raise ContentError(
                f"duplicate adversary id {adversary.id!r} (first defined at {first_adv.origin})",
                adversary.origin,
            )
        lib.adversaries[adversary.id] = adversary
    elif isinstance(doc, YMap) and ("platforms" in doc or "executors" in doc):
        holder = YList([doc])
        holder.line, holder.item_lines = doc.line, [doc.line]
        _add_abilities(holder, name, result)
    elif isinstance(doc, YMap) and "facts" in doc:
        # Fact sources arrive with issue 3's fact engine; say so rather than skip them silently.
        errors.warn(
            ContentError("fact sources are not loaded yet; skipped", Source(file=name, line=doc.line))
        )
    else:
        line = doc.line if isinstance(doc, YMap | YList) else None
        raise ContentError(
            "not Caldera content: expected a list of abilities or an adversary with 'atomic_ordering'",
            Source(file=name, line=line),
        )


def _add_abilities(doc: YList, name: str, result: LoadResult) -> None:
    lib, errors = result.library, result.errors
    for ability in iter_abilities(doc, name, errors):
        first = lib.abilities.get(ability.id)
        if first is not None:
            errors.add(
                ContentError(
                    f"duplicate ability id {ability.id!r} (first defined at {first.origin})", ability.origin
                )
            )
            continue
        lib.abilities[ability.id] = ability


def load_paths(paths: Iterable[Path | str]) -> LoadResult:
    """Load every ``.yml``/``.yaml`` under ``paths``. One bad file or ability never stops the rest."""
    result = LoadResult()
    for path in _files(Path(p) for p in paths):
        with result.errors.capture():
            _load_file(path, result)
    return result


def builtin_paths() -> list[Path]:
    """Content directories registered through the ``content_paths`` hook (built-ins and plugins)."""
    from assay.plugins import plugin_manager

    out: list[Path] = []
    for paths in plugin_manager().hook.content_paths():
        out.extend(paths)
    return out


def load_builtin(extra: Iterable[Path | str] = ()) -> LoadResult:
    return load_paths([*builtin_paths(), *extra])
