"""The content editor: Caldera YAML in a textarea, checked on save by the same loaders that read files.

The text is parsed with the line-keeping YAML loader and then :func:`~assay.content.parse_ability` /
:func:`~assay.content.parse_adversary`, so an error names the line of the text the user typed. Only then is
the item stored, through the same path as ``POST``/``PUT /api/v2/abilities`` (:func:`save_item`).
Content from files (the built-ins, ``--content``) is shown but not changed here: change the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from fastapi import HTTPException

from assay.api._content import save_item
from assay.content import YList, YMap, load_yaml, parse_ability, parse_adversary
from assay.errors import AssayError, ContentError, ErrorCollector

if TYPE_CHECKING:
    from assay.api import ServerState

WHERE = "editor"
MAX_TEXT = 512 * 1024

_NEW = {
    "ability": """\
- id: {id}
  name: My ability
  description: What it does, and why it is safe to run here.
  tactic: discovery
  technique_id: T1082
  technique_name: System Information Discovery
  safety: safe
  platforms:
    linux:
      sh:
        command: uname -a
        timeout: 30
""",
    "adversary": """\
adversary_id: {id}
name: My adversary
description: The abilities it runs, in order.
atomic_ordering:
  - {ability}
""",
}


@dataclass
class EditorResult:
    ok: bool
    item_id: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)  # {"line", "field", "message"}
    warnings: list[str] = field(default_factory=list)


def new_yaml(st: ServerState, kind: str) -> str:
    """A starting point: a safe ability, or an adversary running the first safe ability of the library."""
    import uuid

    safe = next(
        (a.id for a in st.content.library.abilities.values() if str(a.safety) == "safe"), "<ability id>"
    )
    return _NEW[kind].format(id=uuid.uuid4(), ability=safe)


def item_yaml(st: ServerState, kind: str, item_id: str) -> tuple[str, bool]:
    """The item's YAML and whether it can be changed here (stored through the API) or not (from a file)."""
    for _kind, i, data in st.store.content(kind):
        if i == item_id:
            shown = [data] if kind == "ability" else data
            return yaml.safe_dump(shown, sort_keys=False, allow_unicode=True, width=100), True
    library = st.content.library
    item: Any = library.abilities.get(item_id) if kind == "ability" else library.adversaries.get(item_id)
    origin = getattr(item, "origin", None)
    path = Path(origin.file) if origin is not None and origin.file else None
    if path is not None and path.is_file():
        found = _from_file(path, kind, item_id)
        if found is not None:
            return f"# from {path}\n" + found, False
    return f"# {kind} {item_id} comes from {path or 'a file'}; it is not editable here\n", False


def _from_file(path: Path, kind: str, item_id: str) -> str | None:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    items = data if isinstance(data, list) else [data]
    key = "id" if kind == "ability" else "adversary_id"
    for entry in items:
        if isinstance(entry, dict) and str(entry.get(key) or entry.get("ability_id") or "") == item_id:
            shown = [entry] if kind == "ability" else entry
            return yaml.safe_dump(shown, sort_keys=False, allow_unicode=True, width=100)
    return None


def _error(exc: AssayError) -> dict[str, Any]:
    src = exc.source
    return {
        "line": None if src is None else src.line,
        "field": None if src is None else src.field,
        "message": exc.message,
    }


def check_yaml(kind: str, text: str) -> tuple[Any, EditorResult]:
    """Parse ``text`` as one ability (a mapping, or a list holding one, as stockpile files are) or one
    adversary; the plain data to store, and the errors with the line they are on."""
    if len(text) > MAX_TEXT:
        return None, EditorResult(False, errors=[{"line": None, "field": None,
                                                  "message": f"over {MAX_TEXT} bytes"}])  # fmt: skip
    errors = ErrorCollector()
    try:
        node = load_yaml(text, WHERE)
        if isinstance(node, YList):
            if len(node) != 1:
                raise ContentError(f"expected one {kind}, found a list of {len(node)}", None)
            node = node[0]
        if not isinstance(node, YMap):
            raise ContentError(f"expected a YAML mapping (one {kind})", None)
        item = (
            parse_ability(node, WHERE, errors) if kind == "ability" else parse_adversary(node, WHERE, errors)
        )
    except AssayError as exc:
        return None, EditorResult(False, errors=[_error(exc)])
    if errors.errors:
        return None, EditorResult(False, errors=[_error(e) for e in errors.errors])
    plain = yaml.safe_load(text)
    plain = plain[0] if isinstance(plain, list) else plain
    return plain, EditorResult(True, item_id=item.id, warnings=[str(w) for w in errors.warnings])


def save_yaml(st: ServerState, kind: str, text: str, item_id: str | None) -> EditorResult:
    """Check, then store (a new item, or a new version of one stored through the API)."""
    data, result = check_yaml(kind, text)
    if not result.ok:
        return result
    assert isinstance(data, dict) and result.item_id is not None
    if item_id is not None and result.item_id != item_id:
        return EditorResult(False, errors=[{"line": 1, "field": "id", "message":
                                            f"the id changed from {item_id} to {result.item_id}: "
                                            "create a new item instead"}])  # fmt: skip
    try:
        save_item(st, kind, data, None, replace=item_id is not None)
    except HTTPException as exc:
        return EditorResult(False, errors=[{"line": None, "field": None, "message": str(exc.detail)}])
    return result
