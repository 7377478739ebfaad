"""Allowlists: known-good activity that silences rule matches, each entry with the reason it is safe.

A suppressed match is not dropped: the engine still returns the alert, flagged ``suppressed_by`` (entry id
and reason), so validation can report ``missed_suppressed`` instead of a silent miss. File format::

    allowlist:
      - id: package-managers
        reason: apt and dpkg run maintainer scripts that call discovery tools
        rules: ["*"]                      # rule ids, titles or technique ids (globs); default: every rule
        executable: [/usr/bin/dpkg, /usr/bin/apt*]
        parent_executable: [/usr/bin/dpkg]
        parent_command_line: ["*/var/lib/dpkg/info/*"]
        args: ["*--configure*"]           # globs on the command line
        user: [root]                      # user names or numeric uids
        cgroup: ["*/apt-daily.service"]

Within an entry every criterion given must hold (AND); each criterion is a list of alternatives (OR).
Patterns are shell globs (``fnmatch``), case-sensitive as Linux paths are.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from assay.errors import DetectionError, ErrorCollector, Source
from assay.events import Event, Suppression
from assay.yaml_limits import BoundedLoader, describe, read_yaml_text

# criterion name → event fields it reads (any of them may match)
CRITERIA: dict[str, tuple[str, ...]] = {
    "executable": ("process.executable",),
    "parent_executable": ("process.parent.executable",),
    "parent_command_line": ("process.parent.command_line",),
    "args": ("process.command_line",),
    "user": ("user.name", "user.id"),
    "cgroup": ("cgroup.path",),
    "file_path": ("file.path",),
}


@dataclass(frozen=True)
class AllowlistEntry:
    id: str
    reason: str
    criteria: dict[str, tuple[str, ...]]
    rules: tuple[str, ...] = ("*",)
    source: Source | None = None

    def applies_to(self, rule_id: str, title: str, techniques: Iterable[str]) -> bool:
        names = (rule_id, title, *techniques)
        return any(fnmatch.fnmatchcase(n, pat) for pat in self.rules for n in names)

    def matches(self, event: Event) -> bool:
        f = event.fields
        for criterion, patterns in self.criteria.items():
            values = [f.get(name) for name in CRITERIA[criterion]]
            texts = [str(v) for v in values if v is not None and not isinstance(v, list | dict)]
            if not any(fnmatch.fnmatchcase(t, p) for t in texts for p in patterns):
                return False
        return True


@dataclass
class Allowlist:
    entries: list[AllowlistEntry] = field(default_factory=list)

    def check(self, rule_id: str, title: str, techniques: Iterable[str], event: Event) -> Suppression | None:
        """The first entry that silences this rule on this event, as the alert's ``suppressed_by``."""
        techs = tuple(techniques)
        for entry in self.entries:
            if entry.applies_to(rule_id, title, techs) and entry.matches(event):
                return Suppression(entry.id, entry.reason)
        return None

    def __len__(self) -> int:
        return len(self.entries)


def _strings(value: Any, what: str, src: Source) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise DetectionError(f"'{what}' must be a string or a list of strings, got {item!r}", src)
        out.append(str(item))
    if not out:
        raise DetectionError(f"'{what}' is an empty list: it would match nothing", src)
    return tuple(out)


def _entry(raw: Any, src: Source) -> AllowlistEntry:
    if not isinstance(raw, dict):
        raise DetectionError("an allowlist entry must be a mapping", src)
    entry_id = raw.get("id")
    reason = raw.get("reason")
    if not isinstance(entry_id, str) or not entry_id:
        raise DetectionError("allowlist entry without an 'id'", src)
    src = src.with_(rule=entry_id)
    if not isinstance(reason, str) or not reason.strip():
        raise DetectionError("allowlist entry without a 'reason': say why this activity is safe", src)
    unknown = set(raw) - {"id", "reason", "rules", *CRITERIA}
    if unknown:
        raise DetectionError(
            f"unknown allowlist keys {sorted(unknown)}; known: id, reason, rules, {', '.join(CRITERIA)}", src
        )
    criteria = {k: _strings(raw[k], k, src) for k in CRITERIA if k in raw}
    if not criteria:
        raise DetectionError("allowlist entry with no criterion would silence everything", src)
    rules = _strings(raw["rules"], "rules", src) if "rules" in raw else ("*",)
    return AllowlistEntry(entry_id, reason.strip(), criteria, rules, src)


def load_allowlists(paths: Iterable[str | Path], errors: ErrorCollector) -> Allowlist:
    allow = Allowlist()
    seen: dict[str, Source | None] = {}
    for p in paths:
        path = Path(p)
        with errors.capture():
            text = read_yaml_text(path, DetectionError)
            loader: BoundedLoader | None = None
            try:
                loader = BoundedLoader(text)  # bounded like rule files: alias bombs, depth, bad scalars
                root = loader.get_single_node()
                data = loader.construct_document(root) if root is not None else None
            except yaml.YAMLError as exc:
                message, line = describe(exc, text)
                raise DetectionError(f"invalid YAML: {message}", Source(str(path), line)) from exc
            finally:
                if loader is not None:
                    loader.dispose()
            if not isinstance(data, dict) or not isinstance(data.get("allowlist"), list):
                raise DetectionError(
                    "an allowlist file is a mapping with an 'allowlist' list", Source(str(path), 1)
                )
            lines = _entry_lines(root)
            for i, raw in enumerate(data["allowlist"]):
                with errors.capture():
                    src = Source(file=str(path), line=lines[i] if i < len(lines) else None)
                    entry = _entry(raw, src)
                    if entry.id in seen:
                        raise DetectionError(
                            f"allowlist entry id '{entry.id}' already defined at {seen[entry.id]}", src
                        )
                    seen[entry.id] = src
                    allow.entries.append(entry)
    return allow


def _entry_lines(root: yaml.Node | None) -> list[int]:
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if (
            isinstance(key, yaml.ScalarNode)
            and key.value == "allowlist"
            and isinstance(value, yaml.SequenceNode)
        ):
            return [item.start_mark.line + 1 for item in value.value]
    return []
