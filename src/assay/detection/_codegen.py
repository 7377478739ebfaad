"""Turn compiled rule trees into Python source: one function per ``event.action`` bucket.

Why generated code rather than closures: the hot path is "which of ~200 rules match this exec event". A
generated function reads each field the bucket needs once, lower-cases it once, and then runs every rule as
an inline boolean expression whose leaves are C-level string methods (``str.endswith(tuple)``, ``in``,
frozenset membership, pre-compiled regexes). That is an order of magnitude faster than a tree of closures.

Every expression is total: a missing field, a list where a string was expected, or a non-numeric value
makes a test false, never raises, so one odd event cannot stop the other rules.
"""

from __future__ import annotations

import ipaddress
import math
import operator
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from assay.detection._ir import (
    FULLTEXT,
    And,
    BoolTest,
    CidrTest,
    CompareTest,
    Const,
    ExistsTest,
    FieldEqTest,
    FieldRef,
    Match,
    Node,
    Not,
    NullTest,
    NumEqTest,
    Or,
    RegexTest,
    StrTest,
    TimePartTest,
)
from assay.detection._literals import glob_literals, min_width, required_literals

# Fields that hold lists: a test on them is true when any element passes (ECS semantics).
LIST_FIELDS = frozenset({"process.args", "process.parent.args", "process.ancestry", "tags"})

Matcher = Callable[[dict[str, Any]], list[int]]


def text(value: Any) -> str | None:
    """The string view of a scalar field value as Sigma compares it; ``None`` for absent or non-scalar."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def fulltext(fields: dict[str, Any]) -> str | None:
    """What keyword (field-less) values search: the raw log line when a source has one, else the command.

    Sigma keywords are a full-text search over the original record. Log sources (authlog) keep that record
    in ``message``; for process telemetry the nearest thing to the auditd EXECVE record is the command line.
    """
    msg = fields.get("message")
    if isinstance(msg, str):
        return msg
    cmd = fields.get("process.command_line")
    return cmd if isinstance(cmd, str) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            f = float(value.strip())
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def _numeq(raw: Any, number: float) -> bool:
    """Sigma number equality: numerically against a number, by spelling against text ('777' is 777,
    '0777' is not), so an argv element or a log field compares the way it was written."""
    if isinstance(raw, bool):
        return False
    if isinstance(raw, int | float):
        return float(raw) == number
    if isinstance(raw, str):
        spelled = str(int(number)) if float(number).is_integer() else repr(number)
        return raw == spelled
    return False


def _bool(raw: Any, value: bool) -> bool:
    if isinstance(raw, bool):
        return raw is value
    t = text(raw)
    return t is not None and t.lower() == ("true" if value else "false")


def _compare(raw: Any, op: str, number: float) -> bool:
    n = _number(raw)
    if n is None:
        return False
    if op == "lt":
        return n < number
    if op == "lte":
        return n <= number
    if op == "gt":
        return n > number
    if op == "gte":
        return n >= number
    return n != number


def _cidr(value: str | None, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    if value is None:
        return False
    try:
        ip = ipaddress.ip_address(value.strip())
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in networks)


def _timepart(raw: Any, part: str, number: int) -> bool:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        dt = datetime.fromtimestamp(raw, tz=UTC)
    elif isinstance(raw, str):
        try:
            dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return False
    else:
        return False
    value = {
        "minute": dt.minute,
        "hour": dt.hour,
        "day": dt.day,
        "week": int(dt.strftime("%W")),
        "month": dt.month,
        "year": dt.year,
    }[part]
    return value == number


def _element(raw: Any, index: int) -> Any:
    return raw[index] if isinstance(raw, list) and len(raw) > index else None


def _texts(raw: Any) -> list[str]:
    if isinstance(raw, list):
        try:
            "".join(raw)  # C-level proof that every element is a str: the common case needs no copy
        except TypeError:
            return [t for t in map(text, raw) if t is not None]
        return raw
    t = text(raw)
    return [t] if t is not None else []


class SharedViews:
    """The views a dispatch function computed (key → its local name), numbered in ``V`` as groups ask
    for them: ``V`` holds only what some group reads (building a tuple costs per element)."""

    def __init__(self, available: dict[tuple[FieldRef, str], str]) -> None:
        self.available = available
        self.used: dict[tuple[FieldRef, str], int] = {}

    def index(self, key: tuple[FieldRef, str]) -> int | None:
        if key not in self.available:
            return None
        return self.used.setdefault(key, len(self.used))

    def tuple_source(self) -> str:
        return "(" + "".join(f"{self.available[k]}, " for k in self.used) + ")"


class Emitter:
    """Accumulates constants and per-field locals while rendering expressions."""

    def __init__(self, shared: SharedViews | None = None) -> None:
        """``shared``: views a caller already computed and passes in the tuple ``V``, so a group function
        run after the prefilter does not read and lower-case the same fields again."""
        self.shared = shared
        self.consts: dict[str, Any] = {
            "_text": text,
            "_fulltext": fulltext,
            "_numeq": _numeq,
            "_bool": _bool,
            "_compare": _compare,
            "_cidr": _cidr,
            "_timepart": _timepart,
            "_element": _element,
            "_texts": _texts,
        }
        self._const_ids: dict[tuple[str, Any], str] = {}
        self.locals: dict[tuple[FieldRef, str], str] = {}
        self.prologue: list[str] = []

    def const(self, kind: str, value: Any) -> str:
        # tables and automata are unhashable and never shared: key them by identity
        key = (kind, id(value)) if kind in ("dict", "auto", "caller") else (kind, value)
        name = self._const_ids.get(key)
        if name is None:
            name = f"_k{len(self._const_ids)}"
            self._const_ids[key] = name
            if kind == "re":
                pattern, flags = value
                self.consts[name] = re.compile(pattern, flags)
            elif kind == "set":
                self.consts[name] = frozenset(value)
            elif kind == "nets":
                self.consts[name] = tuple(ipaddress.ip_network(n, strict=False) for n in value)
            else:
                self.consts[name] = value
        return name

    def var(self, field: FieldRef, view: str) -> str:
        """A local holding ``field`` in one view: raw, text, lower, list or llist (lower-cased list)."""
        key = (field, view)
        name = self.locals.get(key)
        if name is not None:
            return name
        name = f"v{len(self.locals)}"
        self.locals[key] = name
        # Inline expressions rather than helper calls where the common case is a plain string or an
        # absent field: this prologue runs for every event.
        at = self.shared.index(key) if self.shared is not None else None
        if at is not None:
            src = f"V[{at}]"
        elif view == "raw":
            if field.name == FULLTEXT:
                # _fulltext inlined: the message when it is text, else the command line when it is text
                src = (
                    "_m if (_m := f.get('message')).__class__ is str else "
                    "(_c if (_c := f.get('process.command_line')).__class__ is str else None)"
                )
            elif field.index is not None:
                b = self.var(FieldRef(field.name), "raw")
                i = field.index
                src = f"{b}[{i}] if {b}.__class__ is list and len({b}) > {i} else None"
            else:
                src = f"f.get({field.name!r})"
        elif view == "text":
            r = self.var(field, "raw")
            src = f"{r} if {r}.__class__ is str or {r} is None else _text({r})"
        elif view == "lower":
            t = self.var(field, "text")
            src = f"{t}.lower() if {t} is not None else None"
        elif view == "list":
            src = f"_texts({self.var(field, 'raw')})"
        elif view == "joined":  # list elements, lower-cased, NUL-joined: one text to search literals in
            # Lower-casing the joined text equals joining the lower-cased elements: NUL is neither cased
            # nor case-ignorable, so it ends the context the one context-sensitive rule (final sigma)
            # looks at, exactly as the end of an element does.
            src = f"{self.var(field, 'tjoined')}.lower()"
        elif view == "tjoined":  # the same, not lower-cased
            src = f"'\\x00'.join({self.var(field, 'list')})"
        else:  # llist
            src = f"list(map(str.lower, {self.var(field, 'list')}))"
        self.prologue.append(f"    {name} = {src}")
        return name


def _is_list(field: FieldRef) -> bool:
    return field.index is None and field.name in LIST_FIELDS


def render(node: Node, em: Emitter) -> str:
    if isinstance(node, Const):
        return "True" if node.value else "False"
    if isinstance(node, And):
        return "(" + " and ".join(render(c, em) for c in node.children) + ")"
    if isinstance(node, Or):
        return "(" + " or ".join(render(c, em) for c in node.children) + ")"
    if isinstance(node, Not):
        return f"(not {render(node.child, em)})"
    assert isinstance(node, Match)
    return _render_match(node, em)


def _render_match(node: Match, em: Emitter) -> str:
    field, test = node.field, node.test
    if isinstance(test, StrTest):
        if _is_list(field):
            lst = em.var(field, "list" if test.cased else "llist")
            return _list_str_expr(field, lst, test, em)
        v = em.var(field, "text" if test.cased else "lower")
        return f"({v} is not None and {_str_expr(v, test, em)})"
    if isinstance(test, RegexTest):
        rx = em.const("re", (test.pattern, test.flags))
        guard = _regex_guard(field, test, em)
        if _is_list(field):
            return f"({guard}any(map({rx}.search, {em.var(field, 'list')})))"
        v = em.var(field, "text")
        return f"({v} is not None and {guard}{rx}.search({v}) is not None)"
    if isinstance(test, CidrTest):
        nets = em.const("nets", test.networks)
        if _is_list(field):
            return f"any(_cidr(x, {nets}) for x in {em.var(field, 'list')})"
        return f"_cidr({em.var(field, 'text')}, {nets})"
    raw = em.var(field, "raw")
    if isinstance(test, NullTest):
        return f"({raw} is None)"
    if isinstance(test, ExistsTest):
        return f"({raw} is {'not ' if test.exists else ''}None)"
    if isinstance(test, NumEqTest):
        if _is_list(field):
            return f"any(_numeq(x, {float(test.number)!r}) for x in {em.var(field, 'list')})"
        return f"_numeq({raw}, {float(test.number)!r})"
    if isinstance(test, BoolTest):
        return f"_bool({raw}, {test.value!r})"
    if isinstance(test, CompareTest):
        return f"_compare({raw}, {test.op!r}, {float(test.number)!r})"
    if isinstance(test, TimePartTest):
        return f"_timepart({raw}, {test.part!r}, {test.number!r})"
    if isinstance(test, FieldEqTest):
        a = em.var(field, "lower")
        b = em.var(test.other, "lower")
        op = {
            "eq": f"{a} == {b}",
            "prefix": f"{a}.startswith({b})",
            "suffix": f"{a}.endswith({b})",
            "contains": f"{b} in {a}",
        }[test.kind]
        return f"({a} is not None and {b} is not None and {op})"
    raise TypeError(f"no code for {type(test).__name__}")  # unreachable: the IR is closed


def _list_str_expr(field: FieldRef, lst: str, test: StrTest, em: Emitter) -> str:
    """Any element passes: C-level ``map`` over the elements, no Python generator per event."""
    vals = test.values
    if test.kind == "any":
        return f"bool({lst})"
    if test.kind == "eq":
        return f"not {em.const('set', vals)}.isdisjoint({lst})"
    if test.kind in ("prefix", "suffix"):
        method = "startswith" if test.kind == "prefix" else "endswith"
        caller = em.const("caller", operator.methodcaller(method, vals if len(vals) > 1 else vals[0]))
        return f"any(map({caller}, {lst}))"
    if test.kind == "contains":
        rx = em.const("re", ("|".join(re.escape(x) for x in vals), 0))
        return f"any(map({rx}.search, {lst}))"
    rx = em.const("re", ("|".join(f"(?:{x})" for x in vals), re.DOTALL))
    lits = _glob_guard_literals(test)
    if lits is not None:
        # the elements are in the view the glob is written for; joined, they hold what any element holds
        joined = em.var(field, "tjoined" if test.cased else "joined")
        guard = _any_in(joined, lits)
        if guard is not None:
            return f"({guard} and any(map({rx}.fullmatch, {lst})))"
    return f"any(map({rx}.fullmatch, {lst}))"


def _str_expr(v: str, test: StrTest, em: Emitter) -> str:
    vals = test.values
    if test.kind == "any":
        return "True"
    if test.kind == "eq":
        if len(vals) == 1:
            return f"{v} == {vals[0]!r}"
        return f"{v} in {em.const('set', vals)}"
    if test.kind == "prefix":
        return f"{v}.startswith({em.const('tuple', vals) if len(vals) > 1 else repr(vals[0])})"
    if test.kind == "suffix":
        return f"{v}.endswith({em.const('tuple', vals) if len(vals) > 1 else repr(vals[0])})"
    if test.kind == "contains":
        if len(vals) == 1:
            return f"{vals[0]!r} in {v}"
        rx = em.const("re", ("|".join(re.escape(x) for x in vals), 0))
        return f"{rx}.search({v}) is not None"
    # glob: wildcards in the middle; values already regex sources
    rx = em.const("re", ("|".join(f"(?:{x})" for x in vals), re.DOTALL))
    lits = _glob_guard_literals(test)
    guard = _any_in(v, lits) if lits is not None else None
    return f"{guard + ' and ' if guard else ''}{rx}.fullmatch({v}) is not None"


# A regex whose matches are at least this long gets a length test first.
_MIN_WIDTH_GUARD = 16

# A guard tests a few literals with ``in`` (tens of ns each) before a regex (hundreds): past this many
# literals the guard costs more than it saves.
_MAX_GUARD = 6


def _any_in(v: str, literals: frozenset[str]) -> str | None:
    if not literals or len(literals) > _MAX_GUARD or not all(literals):
        return None
    return "(" + " or ".join(f"{lit!r} in {v}" for lit in sorted(literals)) + ")"


def _glob_guard_literals(test: StrTest) -> frozenset[str] | None:
    parts = [glob_literals(x) for x in test.values]
    if any(p is None for p in parts):
        return None
    return frozenset().union(*(p for p in parts if p is not None))


def _regex_guard(field: FieldRef, test: RegexTest, em: Emitter) -> str:
    """``<literal test> and `` when the regex provably needs one of a few literals, else ''.

    A case-sensitive regex needs its literals as written, in the text it searches. A case-insensitive one
    needs them lower-cased in the lower-cased text, but only when that text is ASCII (see ``_literals``),
    so non-ASCII text always goes to the regex."""
    is_list = _is_list(field)
    width = min_width(test.pattern, test.flags)
    if width >= _MIN_WIDTH_GUARD and not is_list:
        # no match is shorter than this ('[^/]{100,}$'): a length test rules most texts out at once
        return f"len({em.var(field, 'text')}) >= {width} and {_literal_guard(field, test, em)}"
    return _literal_guard(field, test, em)


def _literal_guard(field: FieldRef, test: RegexTest, em: Emitter) -> str:
    req = required_literals(test.pattern, test.flags)
    if req is None:
        return ""
    is_list = _is_list(field)
    if not req.ignorecase:
        guard = _any_in(em.var(field, "tjoined" if is_list else "text"), req.literals)
        return f"{guard} and " if guard else ""
    if not all(x.isascii() for x in req.literals):
        return ""
    lowered = frozenset(x.lower() for x in req.literals)
    guard = _any_in(em.var(field, "joined" if is_list else "lower"), lowered)
    if guard is None:
        return ""
    text = em.var(field, "tjoined" if is_list else "text")
    return f"(not {text}.isascii() or {guard}) and "


def rule_lines(rules: Sequence[tuple[int, Node]], em: Emitter, indent: str = "    ") -> list[str]:
    """``if <condition>: out.append(<index>)`` for each rule; the fields they read go to ``em``'s prologue."""
    body: list[str] = []
    for index, node in rules:
        body.append(f"{indent}if {render(node, em)}:\n{indent}    out.append({index})")
    return body


def _define(src: str, name: str, consts: dict[str, Any]) -> Any:
    namespace: dict[str, Any] = dict(consts)
    exec(compile(src, f"<assay-rules:{name}>", "exec"), namespace)  # our own generated code, never rule text
    return namespace[name]


def build_matcher(rules: Sequence[tuple[int, Node]], name: str = "bucket") -> Matcher:
    """One function returning the indices (as given) of the rules in ``rules`` that match event fields."""
    em = Emitter()
    body = rule_lines(rules, em)
    src = "\n".join([f"def {name}(f):", *em.prologue, "    out = []", *body, "    return out", ""])
    fn: Matcher = _define(src, name, em.consts)
    return fn


GroupFn = Callable[[dict[str, Any], tuple[Any, ...], list[int]], None]


def build_group(rules: Sequence[tuple[int, Node]], name: str, shared: SharedViews) -> GroupFn:
    """Like :func:`build_matcher`, for a group the prefilter selected: ``fn(f, V, out)`` appends the indices
    of the matching rules to ``out`` and takes the field views in ``shared`` from ``V`` instead of
    computing them again."""
    em = Emitter(shared)
    body = rule_lines(rules, em)
    src = "\n".join([f"def {name}(f, V, out):", *em.prologue, *body, "    return None", ""])
    fn: GroupFn = _define(src, name, em.consts)
    return fn


def check_renderable(node: Node) -> None:
    """Render and compile one rule alone, so a rule that cannot become code fails at load, by itself."""
    build_matcher([(0, node)], "check")
