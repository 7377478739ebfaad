"""Reading Sigma rule files: YAML with line numbers, pySigma parsing, the pipeline, compilation.

Each document of each file becomes a :class:`LoadedRule`: supported and compiled, or unsupported with a
precise reason. A file or document that is not valid Sigma at all becomes a :class:`DetectionError` naming
file:line and rule id, collected so one bad rule never hides the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError, SigmaRuleLocation
from sigma.rule import SigmaRule

from assay import attack
from assay.detection._codegen import check_renderable
from assay.detection._compiler import compile_rule
from assay.detection._ir import Node, action_bound
from assay.detection._pipeline import Unmappable, assay_pipeline
from assay.errors import AttackError, DetectionError, ErrorCollector, RuleUnsupported, Source
from assay.yaml_limits import BoundedLoader, describe, read_yaml_text


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """What ``engine.rules`` and ``assay rules check`` report about one rule."""

    id: str
    title: str
    file: str | None
    line: int | None
    logsource: dict[str, str]
    supported: bool
    reason: str | None
    techniques: tuple[str, ...]
    level: str = ""
    kind: str = "rule"  # or "correlation"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "file": self.file,
            "line": self.line,
            "logsource": dict(self.logsource),
            "supported": self.supported,
            "reason": self.reason,
            "techniques": list(self.techniques),
            "level": self.level,
            "kind": self.kind,
        }


@dataclass
class LoadedRule:
    info: RuleInfo
    rule: SigmaRule | SigmaCorrelationRule
    node: Node | None = None  # compiled condition, for supported detection rules
    actions: frozenset[str] | None = None  # event.action bound of the condition
    name: str | None = None  # Sigma `name`, referenced by correlations
    emit: bool = True  # False for base rules of a correlation without `generate: true`
    extra: dict[str, Any] = field(default_factory=dict)


def _line_index(node: yaml.Node, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], int]]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                p = (*path, str(key.value))
                yield p, key.start_mark.line + 1
                yield from _line_index(value, p)


@dataclass
class _Document:
    data: Any
    line: int
    lines: dict[tuple[str, ...], int]

    def line_of_field(self, field_name: str) -> int:
        """First line under ``detection`` whose key names ``field_name`` (before any ``|modifier``)."""
        for path, line in self.lines.items():
            if len(path) >= 3 and path[0] == "detection" and path[-1].split("|", 1)[0] == field_name:
                return line
        return self.lines.get(("detection",), self.line)


def read_documents(path: Path) -> list[_Document]:
    text = read_yaml_text(path, DetectionError)
    docs: list[_Document] = []
    loader: BoundedLoader | None = None
    try:
        # Compose each document once, bounded (alias bombs, depth), and construct the data from its nodes.
        loader = BoundedLoader(text)
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            data = loader.construct_document(node)
            if data is not None:
                docs.append(_Document(data, node.start_mark.line + 1, dict(_line_index(node))))
    except yaml.YAMLError as exc:
        message, line = describe(exc, text)
        raise DetectionError(f"invalid YAML: {message}", Source(str(path), line)) from exc
    finally:
        if loader is not None:
            loader.dispose()
    return docs


def rule_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Every rule file under ``paths``, each once: a directory named twice (or a file and its directory)
    must not load its rules twice, or every match would raise two alerts."""
    seen: set[Path] = set()
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(x for x in path.rglob("*") if x.suffix in {".yml", ".yaml"} and x.is_file())
        elif path.exists():
            found = [path]
        else:
            raise DetectionError("no such rule file or directory", Source(file=str(path)))
        for file in found:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                yield file


def _techniques(tags: Iterable[Any], src: Source) -> tuple[str, ...]:
    out: list[str] = []
    for tag in tags:
        text = str(tag)
        if not text.lower().startswith("attack.t"):
            continue
        try:
            tid = attack.from_tag(text)
        except AttackError as exc:
            raise DetectionError(f"bad ATT&CK tag {text!r}: {exc.message}", src) from exc
        if tid and tid not in out:
            out.append(tid)
    return tuple(out)


def _rule_id(data: Any, fallback: str) -> str:
    if isinstance(data, dict):
        rid = data.get("id") or data.get("name") or data.get("title")
        if rid:
            return str(rid)
    return fallback


def _sigma_message(exc: SigmaError) -> str:
    text = str(exc)
    # pySigma appends the absolute source path; we print file:line ourselves.
    return text.split(" in rule ")[0] if " in rule " in text else text


# Top-level Sigma fields and the YAML shapes pySigma expects of them. pySigma calls str methods on what it
# takes for strings, so a list where a title goes is an AttributeError inside it, not a SigmaError.
_TEXT_FIELDS = ("title", "id", "name", "status", "description", "author", "level", "license", "related")
_LIST_FIELDS = ("tags", "references", "falsepositives", "fields")
_MAP_FIELDS = ("logsource", "detection", "correlation")


def _check_shape(data: dict[str, Any], doc: _Document, src: Source) -> None:
    def refuse(key: str, wanted: str) -> DetectionError:
        got = type(data[key]).__name__
        line = doc.lines.get((str(key),), doc.line)
        return DetectionError(f"'{key}' must be {wanted}, got {got}", src.with_(line=line, field=str(key)))

    for key in _TEXT_FIELDS:
        if key in data and key != "related" and isinstance(data[key], dict | list | bool):
            raise refuse(key, "a string")
    for key in _LIST_FIELDS:
        value = data.get(key)
        if value is not None and (
            not isinstance(value, list) or any(isinstance(v, dict | list) for v in value)
        ):
            raise refuse(key, "a list of strings")
    for key in _MAP_FIELDS:
        if key in data and not isinstance(data[key], dict):
            raise refuse(key, "a mapping")
    if isinstance(data.get("logsource"), dict) and any(
        isinstance(v, dict | list) for v in data["logsource"].values()
    ):
        raise refuse("logsource", "a mapping of strings (product, category, service)")
    corr = data.get("correlation")
    if isinstance(corr, dict):
        for key in ("type", "timespan", "generate"):
            if isinstance(corr.get(key), dict | list):
                field = f"correlation.{key}"
                line = doc.lines.get(("correlation", key), doc.line)
                raise DetectionError(
                    f"'{field}' must be a single value, got {type(corr[key]).__name__}",
                    src.with_(line=line, field=field),
                )


def load_document(path: Path, doc: _Document, index: int) -> LoadedRule:
    """Parse, map and compile one YAML document. Raises DetectionError for a document that is not Sigma."""
    src = Source(file=str(path), line=doc.line)
    data = doc.data
    fallback = f"{path.name}#{index + 1}"
    rid = _rule_id(data, fallback)
    src = src.with_(rule=rid)
    if not isinstance(data, dict):
        raise DetectionError("a Sigma rule must be a YAML mapping", src)
    _check_shape(data, doc, src)
    location = SigmaRuleLocation(path, doc.line)
    try:
        if "correlation" in data:
            parsed: SigmaRule | SigmaCorrelationRule = SigmaCorrelationRule.from_dict(data, source=location)
        elif "filter" in data and "detection" not in data:
            raise DetectionError(
                "Sigma filter documents are not applied by Assay; express exceptions as allowlist entries",
                src,
            )
        else:
            parsed = SigmaRule.from_dict(data, source=location)
    except SigmaError as exc:
        raise DetectionError(f"pySigma rejects the rule: {_sigma_message(exc)}", src) from exc
    except (TypeError, AttributeError, ValueError, KeyError, IndexError) as exc:
        # pySigma's parsing assumes shapes it does not check (a list where it reads a string, deeper down
        # than _check_shape looks): its crash on this document is this document's error, never the loader's.
        raise DetectionError(
            f"pySigma cannot read the rule (a field of the wrong type?): {type(exc).__name__}: {exc}"[:300],
            src,
        ) from exc
    techniques = _techniques(parsed.tags or [], src)
    title = str(parsed.title or "")
    level = parsed.level.name.lower() if parsed.level else ""
    name = str(data.get("name")) if data.get("name") else None
    if isinstance(parsed, SigmaCorrelationRule):
        info = RuleInfo(rid, title, str(path), doc.line, {}, True, None, techniques, level, "correlation")
        return LoadedRule(info, parsed, name=name)
    logsource = {
        k: str(v)
        for k, v in (
            ("product", parsed.logsource.product),
            ("category", parsed.logsource.category),
            ("service", parsed.logsource.service),
        )
        if v
    }
    node: Node | None = None
    reason: str | None = None
    line = doc.line
    try:
        assay_pipeline().apply(parsed)
        node = compile_rule(parsed)
        check_renderable(node)
    except Unmappable as exc:
        reason = str(exc).split(" in rule ")[0]
        line = _line_for_reason(doc, reason)
    except RuleUnsupported as exc:
        reason = exc.message
    except SigmaError as exc:
        raise DetectionError(f"pySigma rejects the rule: {_sigma_message(exc)}", src) from exc
    info = RuleInfo(rid, title, str(path), line, logsource, reason is None, reason, techniques, level)
    actions = action_bound(node) if node is not None else None
    return LoadedRule(info, parsed, node=node, actions=actions, name=name)


def _line_for_reason(doc: _Document, reason: str) -> int:
    # Reasons name the field as "field 'X'"; point at it. Logsource reasons point at the logsource.
    if "field '" in reason:
        name = reason.split("field '", 1)[1].split("'", 1)[0]
        return doc.line_of_field(name)
    return doc.lines.get(("logsource",), doc.line)


# Parsed files by (path, mtime, size): parsing and compiling a rule with pySigma costs milliseconds, and
# the same files are loaded again by every Engine (tests, `assay rules`, coverage). Entries are never
# mutated by an Engine (it copies what it changes), so sharing them is safe.
_CACHE: dict[tuple[str, int, int], list[LoadedRule | DetectionError]] = {}
_CACHE_MAX = 4096


def _load_file(path: Path) -> list[LoadedRule | DetectionError]:
    try:
        st = path.stat()
        key: tuple[str, int, int] | None = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    except OSError:
        key = None
    if key is not None and key in _CACHE:
        return _CACHE[key]
    out: list[LoadedRule | DetectionError] = []
    try:
        docs = read_documents(path)
    except DetectionError as exc:
        docs = []
        out.append(exc)
    for i, doc in enumerate(docs):
        try:
            out.append(load_document(path, doc, i))
        except DetectionError as exc:
            out.append(exc)
    if key is not None:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        _CACHE[key] = out
    return out


def load_rules(paths: Iterable[str | Path], errors: ErrorCollector) -> list[LoadedRule]:
    """Every rule of every file under ``paths``; bad files and documents go to ``errors``."""
    out: list[LoadedRule] = []
    files: list[Path] = []
    with errors.capture():
        files = list(rule_files(paths))
    first: dict[str, RuleInfo] = {}
    for path in files:
        for item in _load_file(path):
            if isinstance(item, DetectionError):
                errors.add(item)
                continue
            earlier = first.setdefault(item.info.id, item.info)
            if earlier is not item.info:
                # Two rules with one id would both alert and be counted as one rule: keep the first.
                where = f"{earlier.file}:{earlier.line}"
                message = f"duplicate rule id {item.info.id!r} (first defined at {where})"
                errors.add(
                    DetectionError(
                        message, Source(file=item.info.file, line=item.info.line, rule=item.info.id)
                    )
                )
                continue
            out.append(item)
    return out


def unsupported(loaded: LoadedRule, reason: str) -> LoadedRule:
    """A copy of ``loaded`` marked unsupported (used when a correlation's references fail)."""
    i = loaded.info
    info = RuleInfo(i.id, i.title, i.file, i.line, i.logsource, False, reason, i.techniques, i.level, i.kind)
    return LoadedRule(info, loaded.rule, None, None, loaded.name, loaded.emit, loaded.extra)
