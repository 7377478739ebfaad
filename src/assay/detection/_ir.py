"""The intermediate form of a compiled rule condition: a small boolean tree over field tests.

pySigma's parsed condition (after the processing pipeline) is lowered into this tree by ``_compiler``; the
tree is then simplified (values of the same test on the same field merged, so one ``endswith`` on a tuple
replaces a chain of ORs) and turned into Python source by ``_codegen``. Keeping the tree separate from both
ends lets the engine ask questions of a rule, such as which ``event.action`` values it can possibly match.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

# The virtual field keyword (field-less) values are searched in: see ``fulltext`` in ``_codegen``.
FULLTEXT = "@fulltext"

StrKind = Literal["eq", "prefix", "suffix", "contains", "glob", "any"]
CompareOp = Literal["lt", "lte", "gt", "gte", "neq"]


@dataclass(frozen=True, slots=True)
class FieldRef:
    """An event field, optionally one element of a list field (auditd ``a1`` is ``process.args[1]``)."""

    name: str
    index: int | None = None

    def __str__(self) -> str:
        return self.name if self.index is None else f"{self.name}[{self.index}]"


class Test:
    """What a field's value must satisfy. Every test is false on an absent field (two-valued logic)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class StrTest(Test):
    """String comparison. ``values`` are lower-cased unless ``cased``; ``glob`` values are regex sources."""

    kind: StrKind
    values: tuple[str, ...]
    cased: bool = False


@dataclass(frozen=True, slots=True)
class RegexTest(Test):
    pattern: str
    flags: int


@dataclass(frozen=True, slots=True)
class NumEqTest(Test):
    number: int | float


@dataclass(frozen=True, slots=True)
class BoolTest(Test):
    value: bool


@dataclass(frozen=True, slots=True)
class NullTest(Test):
    """Sigma ``field: null``: the field is absent (or null)."""


@dataclass(frozen=True, slots=True)
class ExistsTest(Test):
    exists: bool


@dataclass(frozen=True, slots=True)
class CompareTest(Test):
    op: CompareOp
    number: int | float


@dataclass(frozen=True, slots=True)
class CidrTest(Test):
    networks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FieldEqTest(Test):
    """``fieldref``: this field equals (starts with, ends with, contains) another field's value."""

    other: FieldRef
    kind: Literal["eq", "prefix", "suffix", "contains"]


@dataclass(frozen=True, slots=True)
class TimePartTest(Test):
    part: Literal["minute", "hour", "day", "week", "month", "year"]
    number: int


class Node:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Match(Node):
    field: FieldRef
    test: Test


@dataclass(frozen=True, slots=True)
class And(Node):
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or(Node):
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not(Node):
    child: Node


@dataclass(frozen=True, slots=True)
class Const(Node):
    value: bool


def simplify(node: Node) -> Node:
    """Flatten nested AND/OR, fold constants, and merge same-field string tests under an OR."""
    if isinstance(node, Not):
        inner = simplify(node.child)
        if isinstance(inner, Const):
            return Const(not inner.value)
        if isinstance(inner, Not):
            return inner.child
        return Not(inner)
    if isinstance(node, And | Or):
        is_and = isinstance(node, And)
        kids: list[Node] = []
        for child in node.children:
            c = simplify(child)
            if isinstance(c, type(node)):
                kids.extend(c.children)
            elif isinstance(c, Const):
                if c.value != is_and:  # False under AND, True under OR decides the whole node
                    return c
            else:
                kids.append(c)
        if not is_and:
            kids = _merge_or(kids)
        if not kids:
            return Const(is_and)
        if len(kids) == 1:
            return kids[0]
        return And(tuple(kids)) if is_and else Or(tuple(kids))
    return node


def _merge_or(kids: list[Node]) -> list[Node]:
    """``a endswith x or a endswith y`` → ``a endswith (x, y)``: one C call instead of a Python chain."""
    out: list[Node] = []
    slot: dict[tuple[FieldRef, str, bool], int] = {}
    for kid in kids:
        if isinstance(kid, Match) and isinstance(kid.test, StrTest) and kid.test.kind != "any":
            key = (kid.field, kid.test.kind, kid.test.cased)
            at = slot.get(key)
            if at is not None:
                prev = out[at]
                assert isinstance(prev, Match) and isinstance(prev.test, StrTest)
                merged = tuple(dict.fromkeys(prev.test.values + kid.test.values))
                out[at] = Match(kid.field, StrTest(kid.test.kind, merged, kid.test.cased))
                continue
            slot[key] = len(out)
        out.append(kid)
    return out


ACTION = FieldRef("event.action")


def action_bound(node: Node) -> frozenset[str] | None:
    """The ``event.action`` values under which ``node`` can be true, or ``None`` when it is not bounded.

    The engine dispatches each event only to the rules whose bound holds its action, and publishes the union
    of the bounds as ``consumed_actions``. A wrong bound would cost detections, so every doubt is ``None``.
    """
    if isinstance(node, Match):
        t = node.test
        if node.field == ACTION and isinstance(t, StrTest) and t.kind == "eq" and not t.cased:
            return frozenset(t.values)
        return None
    if isinstance(node, And):
        bounds = [b for b in (action_bound(c) for c in node.children) if b is not None]
        if not bounds:
            return None
        out = bounds[0]
        for b in bounds[1:]:
            out = out & b
        return out
    if isinstance(node, Or):
        acc: frozenset[str] = frozenset()
        for c in node.children:
            child = action_bound(c)
            if child is None:
                return None
            acc = acc | child
        return acc
    if isinstance(node, Const):
        return None if node.value else frozenset()
    return None


def walk(node: Node) -> Iterator[Node]:
    """``node`` and every node under it."""
    yield node
    if isinstance(node, And | Or):
        for c in node.children:
            yield from walk(c)
    elif isinstance(node, Not):
        yield from walk(node.child)


def fields_of(node: Node) -> set[FieldRef]:
    """Every field the condition reads (for the per-bucket prologue and for documentation)."""
    if isinstance(node, Match):
        out = {node.field}
        if isinstance(node.test, FieldEqTest):
            out.add(node.test.other)
        return out
    if isinstance(node, And | Or):
        acc: set[FieldRef] = set()
        for c in node.children:
            acc |= fields_of(c)
        return acc
    if isinstance(node, Not):
        return fields_of(node.child)
    return set()


def _str_holds(test: StrTest, value: str) -> bool | None:
    v = value if test.cased else value.lower()
    if test.kind == "any":
        return True
    if test.kind == "eq":
        return v in test.values
    if test.kind == "prefix":
        return v.startswith(test.values)
    if test.kind == "suffix":
        return v.endswith(test.values)
    if test.kind == "contains":
        return any(x in v for x in test.values)
    return None  # glob: left to the generated code


def specialize_action(node: Node, action: str) -> Node:
    """``node`` for events whose ``event.action`` is ``action``: tests on the action become constants.

    The engine runs a rule only on the actions its bound admits, so inside a bucket the action tests are
    known; folding them removes a test per rule per event."""

    def go(n: Node) -> Node:
        if isinstance(n, Match) and n.field == ACTION and isinstance(n.test, StrTest):
            holds = _str_holds(n.test, action)
            return n if holds is None else Const(holds)
        if isinstance(n, And):
            return And(tuple(go(c) for c in n.children))
        if isinstance(n, Or):
            return Or(tuple(go(c) for c in n.children))
        if isinstance(n, Not):
            return Not(go(n.child))
        return n

    return simplify(go(node))
