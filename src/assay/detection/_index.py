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

from assay.detection._codegen import LIST_FIELDS, Emitter, Matcher, build_group, rule_lines
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
from assay.detection._literals import glob_literals, regex_basenames, regex_literals

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
        for gid, anchors in enumerate(groups):
            for a in anchors:
                table = (
                    literal.setdefault(a.field, {})
                    if a.mode == "lit"
                    else hashed.setdefault((a.field, a.mode), {})
                )
                for v in a.values:
                    table.setdefault(v, []).append(gid)
        self.counts = {"rules": len(rules), "always": len(always), "groups": len(groups)}
        self._fn = self._generate(always, list(groups.values()), hashed, literal)

    @staticmethod
    def _generate(
        always: list[tuple[int, Node]],
        groups: list[list[tuple[int, Node]]],
        hashed: dict[tuple[FieldRef, Mode], dict[str, list[int]]],
        literal: dict[FieldRef, dict[str, list[int]]],
    ) -> Matcher:
        """One function per bucket: read the anchor fields, run the unanchored rules inline, look the
        anchors up, then run the selected groups, handing them every field view already computed."""
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
        inline = rule_lines(always, em)
        # Every view the prologue computed is handed to the groups: the groups' own prologues shrink to
        # the fields no anchor reads.
        shared = {key: i for i, key in enumerate(em.locals)}
        em.consts["_groups"] = tuple(
            build_group(members, f"group{gid}", shared) for gid, members in enumerate(groups)
        )
        views = "".join(f"{name}, " for name in em.locals.values())
        src = "\n".join(
            [
                "def dispatch(f):",
                *em.prologue,
                "    out = []",
                *inline,
                "    g = set()",
                *lines,
                "    if g:",
                f"        V = ({views})",
                "        for gid in g:",
                "            _groups[gid](f, V, out)",
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
        """One Aho-Corasick pass over every literal-anchored field at once.

        The fields' views are joined with NUL into one text and searched by one automaton (a call costs
        more than a few dozen characters do). Each literal knows, per field, the groups it anchors; a hit
        counts for a field only if it lies inside that field's segment, so joining changes nothing. The
        full-text view is usually the command line itself (no ``message``): it is then not searched twice,
        its segment is the command line's."""
        refs = list(literal)
        views = [em.var(ref, "joined" if _is_list(ref) else "lower") for ref in refs]
        words: dict[str, list[tuple[int, tuple[int, ...]]]] = {}
        for slot, ref in enumerate(refs):
            for lit, gids in literal[ref].items():
                words.setdefault(lit, []).append((slot, tuple(gids)))
        patterns = list(words)
        auto = em.const("auto", ahocorasick_rs.AhoCorasick(patterns))
        payload = em.const("payload", tuple(tuple(words[w]) for w in patterns))
        cmd = FieldRef("process.command_line")
        alias: dict[int, int] = {}  # slot of the full-text view → slot of the command line it may repeat
        if FieldRef(FULLTEXT) in refs and cmd in refs:
            alias[refs.index(FieldRef(FULLTEXT))] = refs.index(cmd)
        out: list[str] = []
        parts: list[str] = []
        for slot, v in enumerate(views):
            if slot in alias:
                same = f"{em.var(FieldRef(FULLTEXT), 'raw')} is {em.var(cmd, 'raw')}"
                out.append(f"    t{slot} = '' if {same} else ({v} or '')")
            else:
                out.append(f"    t{slot} = {v} or ''")
            parts.append(f"t{slot}")
        out.append(f"    hits = {auto}.find_matches_as_indexes('\\x00'.join(({', '.join(parts)},)), True)")
        # Segment bounds, only computed when something was found (rarely: most text holds no literal).
        bounds: list[str] = []
        pos = "0"
        for slot in range(len(views)):
            bounds.append(f"        s{slot} = {pos}")
            bounds.append(f"        e{slot} = s{slot} + len(t{slot})")
            pos = f"e{slot} + 1"
        for slot, target in alias.items():
            same = f"{em.var(FieldRef(FULLTEXT), 'raw')} is {em.var(cmd, 'raw')}"
            bounds.append(f"        if {same}:")
            bounds.append(f"            s{slot} = s{target}")
            bounds.append(f"            e{slot} = e{target}")
        starts = ", ".join(f"s{i}" for i in range(len(views)))
        ends = ", ".join(f"e{i}" for i in range(len(views)))
        out += [
            "    if hits:",
            *bounds,
            f"        S = ({starts},)",
            f"        E = ({ends},)",
            "        for p, a, b in hits:",
            f"            for slot, gids in {payload}[p]:",
            "                if a >= S[slot] and b <= E[slot]:",
            "                    g.update(gids)",
        ]
        return out

    def __call__(self, fields: dict[str, Any]) -> list[int]:
        return self._fn(fields)
