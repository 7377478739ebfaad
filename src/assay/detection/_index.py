"""Rule prefiltering: run only the rules an event could possibly match.

Most Sigma rules require one literal somewhere: ``Image|endswith: /chmod`` can only hold when the image's
base name is ``chmod``; ``CommandLine|contains: pty.spawn`` only when that text occurs in the command line.
Each rule gets one such *anchor*, a necessary condition derived from its compiled tree (never a guess: a
rule without a provable anchor runs on every event of its actions). Per event the engine looks up the
anchors that hold (a dict lookup per hashed field, one Aho-Corasick pass per text field) and runs the rule
groups they name, each one generated function. Correctness does not depend on the index: an anchor is
implied by the rule, so a rule it skips could not have matched.
"""

from __future__ import annotations

import re
import re._parser as sre_parse  # the regex parser re itself uses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import ahocorasick

from assay.detection._codegen import LIST_FIELDS, Emitter, Matcher, build_matcher
from assay.detection._ir import (
    And,
    Const,
    FieldRef,
    Match,
    Node,
    NumEqTest,
    Or,
    RegexTest,
    StrTest,
    specialize_action,
)

Mode = Literal["base", "eq", "lit"]


@dataclass(frozen=True, slots=True)
class Anchor:
    """The field must be ``base``: a path whose base name is one of ``values``; ``eq``: one of ``values``;
    ``lit``: a text containing one of ``values``. Values are lower-case."""

    field: FieldRef
    mode: Mode
    values: frozenset[str]

    def as_literals(self) -> Anchor:
        if self.mode == "lit":
            return self
        if self.mode == "base":
            return Anchor(self.field, "lit", frozenset("/" + v for v in self.values))
        return Anchor(self.field, "lit", self.values)

    def score(self) -> tuple[int, int, int]:
        """Lower is better: hashed modes first, then longer shortest literal, then fewer values."""
        shortest = min((len(v) for v in self.values), default=0)
        return (0 if self.mode != "lit" else 1, -min(shortest, 12), len(self.values))


def regex_literals(pattern: str, flags: int = 0) -> frozenset[str] | None:
    """Literals one of which every match of ``pattern`` contains (lower-cased), or None if none is provable.

    Reads the regex's parse tree (the ``re`` module's own parser): runs of literal characters in sequence
    are required; an alternation requires one of its branches' literals; a repeat with a minimum of one
    requires its body's. Anything else (classes, wildcards, optional parts) breaks a run and requires
    nothing."""
    try:
        tree = sre_parse.parse(pattern, flags)
    except (re.error, RecursionError, OverflowError):
        return None
    found = _required(list(tree))
    if not found or not all(found):
        return None
    return frozenset(v.lower() for v in found)


def _better(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if _lit_key(a) <= _lit_key(b) else b


def _lit_key(s: frozenset[str]) -> tuple[int, int]:
    return (-min(len(v) for v in s), len(s))


_MAX_ALTS = 64


def _finite(items: list[Any]) -> set[str] | None:
    """The strings a regex sequence matches when they are a small finite set (literals, classes of
    literals, alternations of those), else None. ``/(nc|ncat)`` → {'/nc', '/ncat'}."""
    out = {""}
    for op, arg in items:
        name = str(op)
        alts: set[str] | None
        if name == "LITERAL":
            alts = {chr(arg)}
        elif name == "IN":
            alts = {chr(a) for o, a in arg if str(o) == "LITERAL"}
            if len(alts) != len(arg):
                return None
        elif name == "SUBPATTERN":
            alts = _finite(list(arg[-1]))
        elif name == "BRANCH":
            alts = set()
            for branch in arg[1]:
                sub = _finite(list(branch))
                if sub is None:
                    return None
                alts |= sub
        else:
            return None
        if alts is None:
            return None
        out = {a + b for a in out for b in alts}
        if len(out) > _MAX_ALTS:
            return None
    return out


def _required(items: list[Any]) -> frozenset[str] | None:
    """Literal sets one of which every match of the sequence contains; the most selective one."""
    best: frozenset[str] | None = None
    run: set[str] = {""}

    def close() -> None:
        nonlocal best, run
        if all(run):
            best = _better(best, frozenset(run))
        run = {""}

    for item in items:
        op, arg = item
        fin = _finite([item])
        if fin is not None:
            grown = {a + b for a in run for b in fin}
            if len(grown) > _MAX_ALTS:
                close()
                grown = fin
            run = grown
            continue
        close()
        name = str(op)
        if name == "SUBPATTERN":
            best = _better(best, _required(list(arg[-1])))
        elif name == "BRANCH":
            alts = [_required(list(b)) for b in arg[1]]
            if alts and all(a is not None for a in alts):
                best = _better(best, frozenset().union(*(a for a in alts if a is not None)))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT") and arg[0] >= 1:
            best = _better(best, _required(list(arg[2])))
    close()
    return best


def regex_basenames(pattern: str, flags: int = 0) -> frozenset[str] | None:
    """For ``/(a|b|c)$``-style image patterns: the base names the path must end with, else None."""
    try:
        items = list(sre_parse.parse(pattern, flags))
    except (re.error, RecursionError, OverflowError):
        return None
    if len(items) < 3 or str(items[-1][0]) != "AT" or str(items[-1][1]) != "AT_END":
        return None
    if str(items[0][0]) != "LITERAL" or items[0][1] != ord("/"):
        return None
    names = _finite(items[1:-1])
    if not names or any(not n or "/" in n for n in names):
        return None
    return frozenset(n.lower() for n in names)


def _leaf(node: Match) -> Anchor | None:
    field, t = node.field, node.test
    if isinstance(t, RegexTest):
        if field.name == "process.executable" and field.index is None:
            bases = regex_basenames(t.pattern, t.flags)
            if bases:
                return Anchor(field, "base", bases)
        lits = regex_literals(t.pattern, t.flags)
        if not lits:
            return None
        return Anchor(FieldRef(field.name) if field.index is not None else field, "lit", lits)
    if isinstance(t, NumEqTest) and float(t.number).is_integer() and not _is_list(field):
        # _numeq: a number equals the integer, text must be spelled exactly so: both read as this text
        return Anchor(field, "eq", frozenset({str(int(t.number))}))
    if not isinstance(t, StrTest) or t.kind in ("any", "glob") or not t.values:
        return None
    values = frozenset(v.lower() for v in t.values)
    if any(not v for v in values):
        return None  # an empty literal is in every text: no anchor
    if _is_list(field):
        # any element passing implies the elements, joined, contain the literal
        return Anchor(field, "lit", values)
    if field.index is not None and not (t.kind == "eq" and not t.cased):
        # an element containing the literal implies the joined list does: one scan serves every element
        return Anchor(FieldRef(field.name), "lit", values)
    is_image = field.name == "process.executable" and field.index is None
    if is_image and t.kind in ("suffix", "eq") and all("/" in v and v.rsplit("/", 1)[1] for v in values):
        return Anchor(field, "base", frozenset(v.rsplit("/", 1)[1] for v in values))
    if t.kind == "eq" and not t.cased:
        return Anchor(field, "eq", values)
    return Anchor(field, "lit", values)


def _is_list(field: FieldRef) -> bool:
    return field.index is None and field.name in LIST_FIELDS


AnchorSet = tuple[Anchor, ...]  # alternatives: the rule can match only if one of them holds


def _set_score(anchors: AnchorSet) -> tuple[tuple[int, int, int], int]:
    return (max(a.score() for a in anchors), len(anchors))


def _merge(parts: Sequence[Anchor]) -> AnchorSet:
    by_field: dict[FieldRef, list[Anchor]] = {}
    for a in parts:
        by_field.setdefault(a.field, []).append(a)
    out: list[Anchor] = []
    for f, group in by_field.items():
        if len({a.mode for a in group}) > 1:
            group = [a.as_literals() for a in group]
        out.append(Anchor(f, group[0].mode, frozenset().union(*(a.values for a in group))))
    return tuple(out)


def best_anchors(node: Node, skip: frozenset[str] = frozenset({"event.action"})) -> AnchorSet | None:
    """A set of anchors one of which must hold for ``node`` to be true, or None when none is provable.
    ``event.action`` is never an anchor: the engine already dispatches on it."""
    if isinstance(node, Match):
        a = _leaf(node)
        return (a,) if a is not None and node.field.name not in skip else None
    if isinstance(node, And):
        options = [b for b in (best_anchors(c, skip) for c in node.children) if b is not None]
        return min(options, key=_set_score) if options else None
    if isinstance(node, Or):
        parts: list[Anchor] = []
        for child in node.children:
            b = best_anchors(child, skip)
            if b is None:
                return None
            parts.extend(b)
        return _merge(parts)
    return None  # Not, Const: imply nothing about a field's value


class IndexedMatcher:
    """Matches one action bucket of rules: unanchored rules always, anchored groups when their anchor holds.

    The dispatch itself is generated code too: each anchor field is read and lower-cased once, then looked
    up in its hash table or scanned by its Aho-Corasick automaton."""

    def __init__(self, rules: Sequence[tuple[int, Node]], action: str | None = None) -> None:
        always: list[tuple[int, Node]] = []
        groups: dict[AnchorSet, list[tuple[int, Node]]] = {}
        for index, node in rules:
            if action is not None:
                node = specialize_action(node, action)
                if node == Const(False):
                    continue
            anchors = best_anchors(node)
            if anchors is None:
                always.append((index, node))
            else:
                groups.setdefault(anchors, []).append((index, node))
        hashed: dict[tuple[FieldRef, Mode], dict[str, list[int]]] = {}
        literal: dict[FieldRef, dict[str, list[int]]] = {}
        group_fns: list[Matcher] = []
        for gid, (anchors, members) in enumerate(groups.items()):
            group_fns.append(build_matcher(members, f"group{gid}"))
            for a in anchors:
                table = (
                    literal.setdefault(a.field, {})
                    if a.mode == "lit"
                    else hashed.setdefault((a.field, a.mode), {})
                )
                for v in a.values:
                    table.setdefault(v, []).append(gid)
        self.counts = {"rules": len(rules), "always": len(always), "groups": len(groups)}
        self._fn = self._generate(build_matcher(always, "always"), group_fns, hashed, literal)

    @staticmethod
    def _generate(
        always: Matcher,
        group_fns: list[Matcher],
        hashed: dict[tuple[FieldRef, Mode], dict[str, list[int]]],
        literal: dict[FieldRef, dict[str, list[int]]],
    ) -> Matcher:
        em = Emitter()
        em.consts["_always"] = always
        em.consts["_groups"] = tuple(group_fns)
        lines: list[str] = []
        fields = list(dict.fromkeys([ref for ref, _ in hashed] + list(literal)))
        for ref in fields:
            v = em.var(ref, "joined" if _is_list(ref) else "lower")
            body: list[str] = []
            for mode in ("base", "eq"):
                table = hashed.get((ref, mode))
                if table:
                    t = em.const("dict", {k: tuple(g) for k, g in table.items()})
                    key = f"{v}.rsplit('/', 1)[-1]" if mode == "base" else v
                    body += [f"        h = {t}.get({key})", "        if h:", "            g.update(h)"]
            lits = literal.get(ref)
            if lits:
                auto = ahocorasick.Automaton()
                for lit, gids in lits.items():
                    auto.add_word(lit, tuple(gids))
                auto.make_automaton()
                a = em.const("auto", auto)
                body += [f"        for _, h in {a}.iter({v}):", "            g.update(h)"]
            lines += [f"    if {v}:", *body]
        src = "\n".join(
            [
                "def dispatch(f):",
                *em.prologue,
                "    out = _always(f)",
                "    g = set()",
                *lines,
                "    if g:",
                "        for gid in g:",
                "            out.extend(_groups[gid](f))",
                "        out.sort()",
                "    return out",
                "",
            ]
        )
        namespace: dict[str, Any] = dict(em.consts)
        exec(compile(src, "<assay-rules:dispatch>", "exec"), namespace)  # our own generated code
        fn: Matcher = namespace["dispatch"]
        return fn

    def __call__(self, fields: dict[str, Any]) -> list[int]:
        return self._fn(fields)
