"""A YAML loader for hostile files: bounded size, depth and alias expansion, and marked errors only.

Content (Caldera, Atomic Red Team) and Sigma rules come from other people's repositories. PyYAML's
``SafeLoader`` is safe from code execution, not from the rest:

- a *billion laughs* file (nine levels of ten aliases each) is a few hundred bytes that stand for 10⁹ nodes;
  PyYAML shares the aliased objects, so loading is quick, but every later walk over the data (pySigma, our
  line index, ``json.dumps``) never ends;
- a recursive alias (``&a [*a]``) builds a list that contains itself, and every walk over it recurses
  until ``RecursionError``; so does nesting a few thousand ``[`` deep, in PyYAML's own composer;
- scalar constructors raise bare ``ValueError`` for input that matches a tag's pattern but is no value of it
  (``2001-13-45``, a 5000-digit integer, ``!!float x``), which no caller expects from a YAML parser.

:class:`BoundedLoader` refuses all of these while composing, with a :class:`yaml.MarkedYAMLError` that
carries the line, so callers turn them into their own errors (``ContentError``, ``DetectionError``) the
same way they turn a syntax error.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent
from yaml.nodes import Node

from assay.errors import AssayError, Source

# Real content nests a handful of levels (Sigma: detection → selection → field → list); 64 leaves room and
# keeps PyYAML's recursive composer and constructor far from Python's recursion limit.
MAX_DEPTH = 64
# Nodes that aliases stand for, counted at their full (expanded) size, per document. Content rarely uses
# aliases at all; a billion-laughs file needs 10⁹.
MAX_ALIAS_NODES = 100_000
# A YAML content file or rule file larger than this is refused before it is read (the biggest Atomic Red
# Team file is well under 1 MiB).
MAX_YAML_BYTES = 16 * 1024 * 1024


class BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` with the limits above; every refusal is a :class:`yaml.MarkedYAMLError`."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._alias_nodes = 0
        self._expanded = 0
        self._sizes: dict[int, int] = {}  # id(anchored node) → expanded node count, once composed

    def compose_document(self) -> Node | None:
        self._depth, self._alias_nodes, self._expanded = 0, 0, 0
        self._sizes.clear()
        return super().compose_document()

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        mark: Any = event.start_mark  # PyYAML's stubs type a mark two ways
        if isinstance(event, AliasEvent):
            anchored = self.anchors.get(event.anchor)
            if anchored is not None:  # an unknown anchor: PyYAML's own error says so
                size = self._sizes.get(id(anchored))
                if size is None:
                    raise ComposerError(
                        None,
                        None,
                        f"alias *{event.anchor} is inside the node it refers to (a recursive alias)",
                        mark,
                    )
                self._alias_nodes += size
                self._expanded += size
                if self._alias_nodes > MAX_ALIAS_NODES:
                    raise ComposerError(
                        None,
                        None,
                        f"aliases expand to more than {MAX_ALIAS_NODES} nodes (an alias bomb?)",
                        mark,
                    )
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
        before = self._expanded
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._expanded += 1
        if getattr(event, "anchor", None) is not None:
            self._sizes[id(node)] = self._expanded - before
        return node


Constructor = Callable[[Any, Any], Any]


def _marked(construct: Constructor) -> Constructor:
    def marked(loader: Any, node: Any) -> Any:
        try:
            return construct(loader, node)
        # ValueError: ``2001-13-45``; AttributeError: ``!!timestamp nope`` (PyYAML assumes its regex matched);
        # IndexError: ``!!int ''``; KeyError: ``!!bool maybe``.
        except (ValueError, OverflowError, TypeError, AttributeError, IndexError, KeyError) as exc:
            tag = str(node.tag).rsplit(":", 1)[-1]
            shown = str(node.value)[:60]
            raise ConstructorError(
                None, None, f"{shown!r} is no valid {tag}: {exc}", node.start_mark
            ) from exc

    return marked


# Scalar constructors (int, float, timestamp, ...) raise ValueError on values that match their pattern but
# are no value, and worse on an explicit tag (``!!timestamp nope``); collections' constructors are
# generators and raise ConstructorError themselves.
BoundedLoader.yaml_constructors = {
    tag: construct if inspect.isgeneratorfunction(construct) else _marked(construct)
    for tag, construct in yaml.SafeLoader.yaml_constructors.items()
}


def describe(exc: yaml.YAMLError, text: str) -> tuple[str, int | None]:
    """What a YAML error says and its 1-based line, for Assay's own errors. A reader error (a character YAML
    does not allow) carries only a character position: the line is counted from it."""
    if isinstance(exc, yaml.reader.ReaderError):
        char = exc.character
        code = ord(char) if isinstance(char, str) else char
        return f"character #x{code:04x} is not allowed in YAML", text.count("\n", 0, exc.position) + 1
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        return str(exc.problem or exc.context or exc), (mark.line + 1 if mark is not None else None)
    return str(exc), None


def read_yaml_text(path: Path, error: type[AssayError]) -> str:
    """The text of a YAML file, or ``error`` naming the file (and the line of a byte that is not UTF-8):
    a file over :data:`MAX_YAML_BYTES` is refused before it is read."""
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise error(f"file is larger than {MAX_YAML_BYTES} bytes", Source(file=str(path)))
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"cannot read: {exc.strerror or exc}", Source(file=str(path))) from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise error(f"not UTF-8 text (byte {exc.start})", Source(file=str(path), line=line)) from exc
