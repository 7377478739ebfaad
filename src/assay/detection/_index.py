"""Rule prefiltering: run only the rules an event could possibly match.

Most Sigma rules require one literal somewhere: ``Image|endswith: /chmod`` can only hold when the image's
base name is ``chmod``; ``CommandLine|contains: pty.spawn`` only when that text occurs in the command line.
Each rule gets one such *anchor*, a necessary condition derived from its compiled tree (never a guess: a
rule without a provable anchor runs on every event of its actions). Per event the engine looks up the
anchors that hold (a dict lookup per hashed field, one Aho-Corasick pass over all the text fields at once)
and runs the rule groups they name, each one generated function that receives the field views the
dispatch already computed. Correctness does not depend on the index: an anchor is implied by the rule, so
a rule it skips could not have matched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import ahocorasick_rs

from assay.detection._codegen import (
    LIST_FIELDS,
    Emitter,
    Matcher,
    SharedViews,
    build_group,
    rule_lines,
)
from assay.detection._ir import (
    FULLTEXT,
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
from assay.detection._literals import glob_literals, regex_basenames, regex_literals, required_literals

Mode = Literal["base", "eq", "lit"]


@dataclass(frozen=True, slots=True)
class Anchor:
    """The field must be ``base``: a path whose base name is one of ``values``; ``eq``: one of ``values``;
    ``lit``: a text containing one of ``values``. Values are lower-case. ``ascii_only``: the anchor is
    implied only for ASCII text (literals of a case-insensitive regex, see ``_literals``), so the
    dispatch counts it as holding whenever the field's text is not ASCII."""

    field: FieldRef
    mode: Mode
    values: frozenset[str]
    ascii_only: bool = False

    def as_literals(self) -> Anchor:
        if self.mode == "lit":
            return self
        if self.mode == "base":
            return Anchor(self.field, "lit", frozenset("/" + v for v in self.values), self.ascii_only)
        return Anchor(self.field, "lit", self.values, self.ascii_only)

    def score(self) -> tuple[int, int, int]:
        """Lower is rarer, so better to select rules by: literals of four characters or more first (a word
        in a command line: 'pty.spawn', '/etc/shadow'), then table lookups (base names of common tools
        such as grep hold often), then short literals; among equals, longer literals and fewer values."""
        shortest = min((len(v) for v in self.values), default=0)
        rank = 1 if self.mode != "lit" else 0 if shortest >= MIN_SELECTIVE_LITERAL else 2
        return (rank, -min(shortest, 12), len(self.values))


# A literal shorter than this ('-', ' ', 'sh') is in nearly every command line: as an anchor it would
# select its rules for almost every event and cost a scan hit each time, so such a test anchors nothing.
MIN_LITERAL = 3


def _leaf(node: Match) -> Anchor | None:
    a = _leaf_anchor(node)
    if a is not None and a.mode == "lit" and min(len(v) for v in a.values) < MIN_LITERAL:
        return None
    return a


def _leaf_anchor(node: Match) -> Anchor | None:
    field, t = node.field, node.test
    if isinstance(t, RegexTest):
        if field.name == "process.executable" and field.index is None:
            bases = regex_basenames(t.pattern, t.flags)
            if bases:
                return Anchor(field, "base", bases)
        target = FieldRef(field.name) if field.index is not None else field
        lits = regex_literals(t.pattern, t.flags)
        if lits:
            return Anchor(target, "lit", lits)
        req = required_literals(t.pattern, t.flags)
        if req is None or not req.ignorecase or not all(v.isascii() for v in req.literals):
            return None
        return Anchor(target, "lit", frozenset(v.lower() for v in req.literals), ascii_only=True)
    if isinstance(t, NumEqTest) and float(t.number).is_integer() and not _is_list(field):
        # _numeq: a number equals the integer, text must be spelled exactly so: both read as this text
        return Anchor(field, "eq", frozenset({str(int(t.number))}))
    if not isinstance(t, StrTest) or t.kind == "any" or not t.values:
        return None
    raw: frozenset[str] = frozenset(t.values)
    if t.kind == "glob":
        parts = [glob_literals(v) for v in t.values]
        if any(p is None for p in parts):
            return None
        raw = frozenset().union(*(p for p in parts if p is not None))
    if t.cased and not all(v.isascii() for v in raw):
        return None  # a cased literal lower-cased is in the lower-cased text only for ASCII (see _literals)
    values = frozenset(v.lower() for v in raw)
    if any(not v for v in values):
        return None  # an empty literal is in every text: no anchor
    if t.kind == "glob":
        return Anchor(FieldRef(field.name) if field.index is not None else field, "lit", values)
    if _is_list(field):
        # any element passing implies the elements, joined, contain the literal
        return Anchor(field, "lit", values)
    if field.index is not None:
        if t.kind == "eq" and not t.cased and min(len(v) for v in values) < MIN_LITERAL:
            return Anchor(field, "eq", values)  # too short to search for: look the element up instead
        # an element containing (or equal to) the literal implies the joined list contains it: the one
        # scan of the joined list serves every element, and the dispatch reads no element on its own
        return Anchor(FieldRef(field.name), "lit", values)
    is_image = field.name == "process.executable" and field.index is None
    if is_image and t.kind in ("suffix", "eq") and all("/" in v and v.rsplit("/", 1)[1] for v in values):
        return Anchor(field, "base", frozenset(v.rsplit("/", 1)[1] for v in values))
    if t.kind == "eq" and not t.cased:
        return Anchor(field, "eq", values)
    return Anchor(field, "lit", values)


def _is_list(field: FieldRef) -> bool:
    return field.index is None and field.name in LIST_FIELDS


# Fields whose text usually repeats another's (see IndexedMatcher._scan).
_REPEATS = {
    FULLTEXT: "process.command_line",
    "process.args": "process.command_line",
    "process.parent.args": "process.parent.command_line",
}

_REPEATED = frozenset(_REPEATS.values())
# A field with at most this many literals is tested with ``in`` rather than an automaton call.
_INLINE_LITERALS = 4

AnchorSet = tuple[Anchor, ...]  # alternatives: the rule can match only if one of them holds


def _set_score(anchors: AnchorSet) -> tuple[tuple[int, int, int], int]:
    return (max(a.score() for a in anchors), len(anchors))


# Literals shorter than this ('-', 'sh', ' /') occur in nearly every command line.
MIN_SELECTIVE_LITERAL = 4


def _selective(anchors: AnchorSet) -> bool:
    return all(a.mode != "lit" or min(len(v) for v in a.values) >= MIN_SELECTIVE_LITERAL for a in anchors)


def _merge(parts: Sequence[Anchor]) -> AnchorSet:
    by_field: dict[FieldRef, list[Anchor]] = {}
    for a in parts:
        by_field.setdefault(a.field, []).append(a)
    out: list[Anchor] = []
    for f, group in by_field.items():
        if len({a.mode for a in group}) > 1:
            group = [a.as_literals() for a in group]
        values = frozenset().union(*(a.values for a in group))
        out.append(Anchor(f, group[0].mode, values, any(a.ascii_only for a in group)))
    return tuple(out)


MAX_REQUIREMENTS = 2


def requirements(node: Node, skip: frozenset[str] = frozenset({"event.action"})) -> list[AnchorSet]:
    """Anchor sets that must *all* hold for ``node`` to be true (each one: one of its anchors holds), the
    most selective first, at most :data:`MAX_REQUIREMENTS`; empty when none is provable.

    One anchor is often a common tool (``Image|endswith: /grep``) while the rule also needs a rare word
    in the arguments; requiring both keeps the rule's group from running on every grep."""
    if isinstance(node, Match):
        a = _leaf(node)
        return [(a,)] if a is not None and node.field.name not in skip else []
    if isinstance(node, And):
        options: list[AnchorSet] = []
        for c in node.children:
            for req in requirements(c, skip):
                if req not in options:
                    options.append(req)
        options.sort(key=_set_score)
        if len(options) <= 1:
            return options
        first = options[0]
        fields = {a.field for a in first}
        # A second requirement must be selective, or it costs more (a hit for nearly every event) than
        # it saves; and preferably on other fields: two anchors on one field tend to co-occur.
        seconds = [o for o in options[1:] if _selective(o)]
        if not seconds:
            return [first]
        second = next((o for o in seconds if not fields & {a.field for a in o}), seconds[0])
        return [first, second]
    if isinstance(node, Or):
        per_child = [requirements(c, skip) for c in node.children]
        if not per_child or any(not r for r in per_child):
            return []
        # child_i implies each of its requirements, so the OR implies the OR of the children's first
        # requirements, and the OR of their second ones when every child has one
        out = [_merge([a for r in per_child for a in r[0]])]
        if all(len(r) > 1 for r in per_child):
            out.append(_merge([a for r in per_child for a in r[1]]))
        return out
    return []  # Not, Const: imply nothing about a field's value


class IndexedMatcher:
    """Matches one action bucket of rules: unanchored rules always, anchored groups when their anchors hold.

    Rules with the same requirements form a group (one generated function). The dispatch is generated
    code too: each anchored field is read and lower-cased once, the hashed ones looked up in their tables
    and the text ones scanned together by one Aho-Corasick automaton; that yields the requirements that
    hold, and a group runs when its first requirement and its second (if any) both hold."""

    def __init__(self, rules: Sequence[tuple[int, Node]], action: str | None = None) -> None:
        always: list[tuple[int, Node]] = []
        groups: dict[tuple[AnchorSet, ...], list[tuple[int, Node]]] = {}
        for index, node in rules:
            if action is not None:
                node = specialize_action(node, action)
                if node == Const(False):
                    continue
            reqs = requirements(node)
            if not reqs:
                always.append((index, node))
            else:
                groups.setdefault(tuple(reqs), []).append((index, node))
        req_ids: dict[AnchorSet, int] = {}
        for reqs_ in groups:
            for req in reqs_:
                req_ids.setdefault(req, len(req_ids))
        hashed: dict[tuple[FieldRef, Mode], dict[str, list[int]]] = {}
        literal: dict[FieldRef, dict[str, list[int]]] = {}
        ascii_only: dict[FieldRef, list[int]] = {}
        for req, rid in req_ids.items():
            for a in req:
                if a.ascii_only:
                    ascii_only.setdefault(a.field, []).append(rid)
                table = (
                    literal.setdefault(a.field, {})
                    if a.mode == "lit"
                    else hashed.setdefault((a.field, a.mode), {})
                )
                for v in a.values:
                    table.setdefault(v, []).append(rid)
        # requirement id → the groups it is the first requirement of, with their second (-1: none)
        primary: list[list[tuple[int, int]]] = [[] for _ in req_ids]
        for gid, reqs_ in enumerate(groups):
            second = req_ids[reqs_[1]] if len(reqs_) > 1 else -1
            primary[req_ids[reqs_[0]]].append((gid, second))
        self.counts = {
            "rules": len(rules),
            "always": len(always),
            "groups": len(groups),
            "requirements": len(req_ids),
        }
        self._fn = self._generate(
            always, list(groups.values()), tuple(tuple(p) for p in primary), hashed, literal, ascii_only
        )

    @staticmethod
    def _generate(
        always: list[tuple[int, Node]],
        groups: list[list[tuple[int, Node]]],
        primary: tuple[tuple[tuple[int, int], ...], ...],
        hashed: dict[tuple[FieldRef, Mode], dict[str, list[int]]],
        literal: dict[FieldRef, dict[str, list[int]]],
        ascii_only: dict[FieldRef, list[int]],
    ) -> Matcher:
        """One function per bucket: read the anchor fields, run the unanchored rules inline, find the
        requirements that hold, then run the groups they admit, handing them every field view already
        computed."""
        em = Emitter()
        lines: list[str] = []
        for (ref, mode), table in hashed.items():
            v = em.var(ref, "lower")
            t = em.const("dict", {k: tuple(g) for k, g in table.items()})
            key = f"{v}.rsplit('/', 1)[-1]" if mode == "base" else v
            lines += [f"    if {v}:", f"        h = {t}.get({key})"]
            lines += ["        if h:", "            g.update(h)"]
        if literal:
            lines += IndexedMatcher._scan(em, literal)
        for ref, rids in ascii_only.items():
            text = em.var(ref, "tjoined" if _is_list(ref) else "text")
            lines += [
                f"    if {text} is not None and not {text}.isascii():",
                f"        g.update({tuple(rids)!r})",
            ]
        inline = rule_lines(always, em)
        # Every view the prologue computed is handed to the groups: the groups' own prologues shrink to
        # the fields no anchor reads.
        shared = SharedViews(dict(em.locals))
        em.consts["_groups"] = tuple(
            build_group(members, f"group{gid}", shared) for gid, members in enumerate(groups)
        )
        em.consts["_primary"] = primary
        src = "\n".join(
            [
                "def dispatch(f):",
                *em.prologue,
                "    out = []",
                *inline,
                "    g = set()",  # the requirements that hold
                *lines,
                "    if g:",
                "        V = None",
                "        for r in g:",
                "            for gid, second in _primary[r]:",
                "                if second < 0 or second in g:",
                "                    if V is None:",
                f"                        V = {shared.tuple_source()}",
                "                    _groups[gid](f, V, out)",
                "    if len(out) > 1:",
                "        out.sort()",
                "    return out",
                "",
            ]
        )
        namespace: dict[str, Any] = dict(em.consts)
        exec(compile(src, "<assay-rules:dispatch>", "exec"), namespace)  # our own generated code
        fn: Matcher = namespace["dispatch"]
        return fn

    @staticmethod
    def _scan(em: Emitter, literal: dict[FieldRef, dict[str, list[int]]]) -> list[str]:
        """Find the literal anchors that occur: one Aho-Corasick pass per text field, or plain ``in``
        tests for a field with only a few literals (a call of the automaton costs as much as a hundred
        characters of scanning, or several ``in`` tests).

        A field that repeats the command line is not searched on its own; the command line's automaton
        then holds its literals too:

        - the keyword view *is* the command line when the event has no ``message``;
        - the argv list, space-joined, is usually the command line: then a literal inside one element is
          inside the command line, and a command-line hit stands for the argv too (a hit across two
          elements only runs a group for nothing; the group decides).

        Separate passes rather than one over all fields joined: a literal of one field found in another
        (``/usr/bin/`` of a command-line rule in every executable path) would cost a hit to reject."""
        out: list[str] = []
        done: set[FieldRef] = set()
        for main in [r for r in literal if r.index is None and r.name in _REPEATED]:
            family = [r for r in literal if r.index is None and _REPEATS.get(r.name) == main.name]
            if not family:
                continue
            conds = []
            for r in family:
                raw = em.var(main, "raw")
                if r.name == FULLTEXT:
                    conds.append(f"{em.var(r, 'raw')} is {raw}")
                else:
                    conds.append(f"{raw} == ' '.join({em.var(r, 'list')})")
            # one automaton per subset of the repeating fields: bit i set = family[i] repeats main
            autos: list[Any] = []
            tables: list[tuple[tuple[int, ...], ...]] = []
            for mask in range(1 << len(family)):
                merged: dict[str, set[int]] = {}
                for ref in [main, *(r for i, r in enumerate(family) if mask >> i & 1)]:
                    for lit, rids in literal[ref].items():
                        merged.setdefault(lit, set()).update(rids)
                autos.append(ahocorasick_rs.AhoCorasick(list(merged)) if merged else None)
                tables.append(tuple(tuple(sorted(v)) for v in merged.values()))
            auto = em.const("autos", tuple(autos))
            table = em.const("tables", tuple(tables))
            mask_expr = " | ".join(f"(a{i} << {i})" for i in range(len(family)))
            out += [f"    a{i} = {c}" for i, c in enumerate(conds)]
            out += [f"    k = {mask_expr}"]
            v = em.var(main, "lower")
            out += [
                f"    if {v}:",
                f"        T = {table}[k]",
                f"        for p, _, _ in {auto}[k].find_matches_as_indexes({v}, True):",
                "            g.update(T[p])",
            ]
            for i, r in enumerate(family):
                # the field's own view is made only when it does not repeat the command line
                view = (
                    f"'\\x00'.join({em.var(r, 'list')}).lower()"
                    if _is_list(r)
                    else f"(_t.lower() if (_t := {em.var(r, 'text')}) is not None else None)"
                )
                out += [f"    if not a{i}:", f"        u{i} = {view}"]
                out += IndexedMatcher._field_scan(em, r, literal[r], indent="        ", view=f"u{i}")
            done.update([main, *family])
        for ref, lits in literal.items():
            if ref not in done:
                out += IndexedMatcher._field_scan(em, ref, lits)
        return out

    @staticmethod
    def _field_scan(
        em: Emitter, ref: FieldRef, lits: dict[str, list[int]], indent: str = "    ", view: str = ""
    ) -> list[str]:
        v = view or em.var(ref, "joined" if _is_list(ref) else "lower")
        body: list[str] = [f"{indent}if {v}:"]
        if len(lits) <= _INLINE_LITERALS:
            for lit, rids in lits.items():
                body += [f"{indent}    if {lit!r} in {v}:", f"{indent}        g.update({tuple(rids)!r})"]
        else:
            auto = em.const("auto", ahocorasick_rs.AhoCorasick(list(lits)))
            table = em.const("payload", tuple(tuple(r) for r in lits.values()))
            body += [
                f"{indent}    for p, _, _ in {auto}.find_matches_as_indexes({v}, True):",
                f"{indent}        g.update({table}[p])",
            ]
        return body

    @property
    def function(self) -> Matcher:
        """The generated dispatch function: rule indices of ``fields``, like calling the matcher."""
        return self._fn

    def __call__(self, fields: dict[str, Any]) -> list[int]:
        return self._fn(fields)
