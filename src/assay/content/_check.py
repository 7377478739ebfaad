"""`assay content check`: what a set of content files holds, and every error with its file and line.

The JSON shape is fixed (issue 3)::

    {"abilities": [{"id", "name", "technique_id", "platforms": [...], "executors": [...]}],
     "adversaries": [{"id", "name", "abilities": [...], "missing_abilities": [...]}],
     "errors": [{"file", "line", "message"}],
     "warnings": [{"file", "line", "message"}]}

Issue 12 adds ``objectives``, ``planners``, ``sources`` (``[{"id", "name", ...}]``), ``skips`` (valid content
Assay will not run: ``[{"kind", "id", "name", "reason", "file", "line"}]``) and ``counts``
(``{"abilities", "linux_abilities", "adversaries", "sources", "objectives", "planners", "skips",
"errors", "warnings", "files"}``; built-in defaults such as the ``basic`` source are not counted).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from assay.content._library import LoadResult, load_paths, runs_on_linux
from assay.errors import AssayError


def problem(error: AssayError) -> dict[str, Any]:
    """``{"file", "line", "message"}``; the field, agent or link is folded into the message."""
    src = error.source
    where = []
    if src is not None:
        for label, value in (
            ("field", src.field),
            ("agent", src.agent),
            ("link", src.link),
            ("rule", src.rule),
        ):
            if value:
                where.append(f"{label} '{value}'")
    message = f"{', '.join(where)}: {error.message}" if where else error.message
    return {"file": src.file if src else None, "line": src.line if src else None, "message": message}


def report(result: LoadResult) -> dict[str, Any]:
    lib = result.library
    abilities = [
        {
            "id": a.id,
            "name": a.name,
            "technique_id": a.technique_id,
            "platforms": list(a.platforms),
            "executors": list(dict.fromkeys(e.name for e in a.executors)),
        }
        for a in lib.abilities.values()
    ]
    adversaries = [
        {
            "id": adv.id,
            "name": adv.name,
            "abilities": list(adv.atomic_ordering),
            "missing_abilities": lib.missing_abilities(adv),
        }
        for adv in lib.adversaries.values()
    ]
    loaded = result.loaded
    return {
        "abilities": abilities,
        "adversaries": adversaries,
        "sources": [
            {"id": s.id, "name": s.name, "facts": len(s.facts), "rules": len(s.rules)}
            for s in lib.sources.values()
            if not _builtin_default(s.origin)
        ],
        "objectives": [
            {
                "id": o.id,
                "name": o.name,
                "goals": [f"{g.target} {g.operator} {g.value} x{g.count}" for g in o.goals],
            }
            for o in lib.objectives.values()
            if not _builtin_default(o.origin)
        ],
        "planners": [
            {"id": p.id, "name": p.name, "module": p.module, "runs_as": p.runs_as or None}
            for p in lib.planners.values()
        ],
        "skips": [s.to_dict() for s in result.skips],
        "counts": {
            "files": result.files,
            "abilities": len(lib.abilities),
            "linux_abilities": sum(1 for a in lib.abilities.values() if runs_on_linux(a)),
            "adversaries": len(lib.adversaries),
            "sources": loaded.get("sources", 0),
            "objectives": loaded.get("objectives", 0),
            "planners": loaded.get("planners", 0),
            "skips": len(result.skips),
            "errors": len(result.errors.errors),
            "warnings": len(result.errors.warnings),
        },
        "errors": [problem(e) for e in result.errors.errors],
        "warnings": [problem(w) for w in result.errors.warnings],
    }


def _builtin_default(origin: object) -> bool:
    return getattr(origin, "file", None) == "<built-in>"


def check_paths(paths: Iterable[Path | str]) -> tuple[LoadResult, dict[str, Any]]:
    result = load_paths(paths)
    return result, report(result)
