"""Parsers: a link's output → relationships between facts. Pure functions of (configs, output, used facts).

Each parser config maps output onto ``source`` [-``edge``-> ``target``] traits. As in Caldera, a trait equal
to one of the link's *used* facts takes that fact's value instead of the parsed one, which ties what a link
learned to what it used (``host.dir.staged`` -has_compressed_file-> ``host.dir.compress``).

============  ===============================================================================================
``line``      every non-empty output line is a value (stockpile ``basic``, ``filename``, ``find``, ``ssh``)
``regex``     ``custom_parser_vals.regex``; the value is group ``source`` / group 1 / the whole match, the
              target value group ``target`` / group 2
``json``      output is JSON; every value under ``custom_parser_vals.json_key`` (optionally of
              ``json_type``: str, int, float, bool, list, dict) anywhere in the document (stockpile ``json``)
``kv``        ``key=value`` or ``key: value`` lines; the key is ``custom_parser_vals.key``, else the source
              trait itself (so a command can print ``host.user.name=alice``)
``static``    values given in ``custom_parser_vals`` ``source`` / ``target``, whatever the output
``scan``      ``address:port`` lines: address → source, port → target
``ipaddr``    every IPv4 address in the output
``broadcastip`` the broadcast address after ``brd``/``broadcast``
============  ===============================================================================================
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from assay.content import PARSER_ALIASES, ParserConfig
from assay.emulation._model import Relationship
from assay.errors import EmulationError

Pair = tuple[str, str | None]  # (source value, target value)
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
_SCAN = re.compile(r"^\s*(\S+):(\d{1,5})\s*$", re.MULTILINE)
_BROADCAST = re.compile(r"\b(?:brd|broadcast|Bcast:?)\s*((?:\d{1,3}\.){3}\d{1,3})")
_KV = re.compile(r"^\s*([^=:\s][^=:]*?)\s*[=:]\s*(.*?)\s*$")
_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "list": list,
    "dict": dict,
}


def _line(cfg: ParserConfig, blob: str) -> Iterator[Pair]:
    for line in blob.splitlines():
        if line.strip():
            yield line.strip(), line.strip()


def _regex(cfg: ParserConfig, blob: str) -> Iterator[Pair]:
    pattern = cfg.custom.get("regex")
    if not isinstance(pattern, str):
        raise EmulationError(f"parser 'regex' for {cfg.source!r} needs custom_parser_vals.regex")
    try:
        compiled = re.compile(pattern, re.MULTILINE)
    except re.error as exc:
        raise EmulationError(f"parser 'regex' for {cfg.source!r}: bad regex: {exc}") from exc
    names = compiled.groupindex
    for match in compiled.finditer(blob):
        if "source" in names:
            source = match.group("source")
        elif compiled.groups:
            source = match.group(1)
        else:
            source = match.group(0)
        if "target" in names:
            target = match.group("target")
        elif compiled.groups >= 2:
            target = match.group(2)
        else:
            target = source
        if source is not None:
            yield source.strip(), None if target is None else target.strip()


def _walk(node: Any, key: str) -> Iterator[Any]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _walk(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, key)


def _json(cfg: ParserConfig, blob: str) -> Iterator[Pair]:
    key = cfg.custom.get("json_key")
    if not isinstance(key, str):
        raise EmulationError(f"parser 'json' for {cfg.source!r} needs custom_parser_vals.json_key")
    try:
        document = json.loads(blob)
    except ValueError:
        return  # output that is not JSON holds no facts for this parser
    wanted = cfg.custom.get("json_type")
    names = [wanted] if isinstance(wanted, str) else list(wanted or [])
    kinds = tuple(_JSON_TYPES[n] for n in names if n in _JSON_TYPES)
    for value in _walk(document, key):
        if kinds and not isinstance(value, kinds):
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        yield text, text


def _kv(cfg: ParserConfig, blob: str) -> Iterator[Pair]:
    key = str(cfg.custom.get("key") or cfg.source)
    target_key = cfg.custom.get("target_key") or cfg.target
    pairs: list[tuple[str, str]] = []
    for line in blob.splitlines():
        m = _KV.match(line)
        if m:
            pairs.append((m.group(1), m.group(2)))
    targets = [v for k, v in pairs if k == target_key] if target_key else []
    for k, v in pairs:
        if k == key and v:
            yield v, targets[0] if targets else v


def _static(cfg: ParserConfig, blob: str) -> Iterator[Pair]:
    source = cfg.custom.get("source")
    if source is not None:
        target = cfg.custom.get("target", source)
        yield str(source), None if target is None else str(target)


def _scan(cfg: ParserConfig, blob: str) -> Iterator[Pair]:
    for m in _SCAN.finditer(blob):
        yield m.group(1), m.group(2)


def _valid_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _ipaddr(cfg: ParserConfig, blob: str) -> Iterator[Pair]:
    for address in dict.fromkeys(a for a in _IPV4.findall(blob) if _valid_ipv4(a)):
        yield address, address


def _broadcast(cfg: ParserConfig, blob: str) -> Iterator[Pair]:
    for address in dict.fromkeys(_BROADCAST.findall(blob)):
        yield address, address


PARSERS: dict[str, Callable[[ParserConfig, str], Iterator[Pair]]] = {
    "line": _line,
    "regex": _regex,
    "json": _json,
    "kv": _kv,
    "static": _static,
    "scan": _scan,
    "ipaddr": _ipaddr,
    "broadcastip": _broadcast,
}


def parser_name(module: str) -> str | None:
    """Assay's parser for a module name (Assay's own or Caldera's ``plugins.stockpile.app.parsers.*``)."""
    return PARSER_ALIASES.get(module)


def parse(
    configs: Sequence[ParserConfig], output: str, used: Mapping[str, str], *, origin: str = ""
) -> tuple[list[Relationship], list[str]]:
    """Relationships found in ``output``, and a note per config that could not run (never silently)."""
    relationships: list[Relationship] = []
    notes: list[str] = []
    for cfg in configs:
        name = parser_name(cfg.module)
        if name is None:
            notes.append(f"parser {cfg.module!r} has no Assay equivalent; nothing parsed")
            continue
        try:
            pairs = list(PARSERS[name](cfg, output))
        except EmulationError as exc:
            notes.append(exc.message)
            continue
        for source_value, target_value in pairs:
            source = (cfg.source, used.get(cfg.source, source_value))
            target: tuple[str, str] | None = None
            if cfg.target:
                value = used.get(cfg.target, target_value if target_value is not None else source_value)
                target = (cfg.target, value)
            if not source[1]:
                continue
            relationships.append(Relationship(source, cfg.edge, target, origin=origin))
    return relationships, notes
