"""`assay content check`: what a set of content files holds, and every error with its file and line.

The JSON shape is fixed (issue 3)::

    {"abilities": [{"id", "name", "technique_id", "platforms": [...], "executors": [...]}],
     "adversaries": [{"id", "name", "abilities": [...], "missing_abilities": [...]}],
     "errors": [{"file", "line", "message"}],
     "warnings": [{"file", "line", "message"}]}
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from assay.content._library import LoadResult, load_paths
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
    return {
        "abilities": abilities,
        "adversaries": adversaries,
        "errors": [problem(e) for e in result.errors.errors],
        "warnings": [problem(w) for w in result.errors.warnings],
    }


def check_paths(paths: Iterable[Path | str]) -> tuple[LoadResult, dict[str, Any]]:
    result = load_paths(paths)
    return result, report(result)
