"""Literal text a regular expression or glob cannot match without: the prefilter's anchors and the guards
that skip a regex when its text lacks them.

Everything here reads the regex's parse tree (the ``re`` module's own parser): runs of literal characters
in sequence are required; an alternation requires one of its branches' literals; a repeat with a minimum
of one requires its body's. Anything else (classes, wildcards, optional parts) breaks a run and requires
nothing. A result is a *necessary* condition, never a guess: when in doubt there is no literal.

Case: a case-sensitive regex requires its literals exactly as written, in the text it is run on. A
case-insensitive one (``re.I``, ``(?i)``, ``(?i:...)``) matches more than the lower-cased literals say
outside ASCII (``s`` matches U+017F long s, ``i`` matches U+0131 dotless i), so its literals are sound
only on ASCII text.
"""

from __future__ import annotations

import re
import re._parser as sre_parse  # the regex parser re itself uses
from dataclasses import dataclass
from typing import Any

_MAX_ALTS = 64
_MAX_REPEAT = 2  # repeats up to this many times are expanded ('x?', 'x{1,2}')


@dataclass(frozen=True, slots=True)
class Required:
    """One of ``literals`` (as written in the pattern) occurs in every match. ``ignorecase``: the pattern
    (or a part of it) matches case-insensitively, so only the lower-cased literals in the lower-cased
    text, and only for ASCII text, are necessary."""

    literals: frozenset[str]
    ignorecase: bool


def _parse(pattern: str, flags: int) -> Any:
    try:
        return sre_parse.parse(pattern, flags)
    except (re.error, RecursionError, OverflowError):
        return None


def _ignorecase_anywhere(items: list[Any]) -> bool:
    for op, arg in items:
        name = str(op)
        if name == "SUBPATTERN":
            if arg[1] & re.IGNORECASE or _ignorecase_anywhere(list(arg[-1])):
                return True
        elif name == "BRANCH":
            if any(_ignorecase_anywhere(list(b)) for b in arg[1]):
                return True
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT", "ATOMIC_GROUP"):
            body = arg[2] if name != "ATOMIC_GROUP" else arg
            if _ignorecase_anywhere(list(body)):
                return True
        elif name in ("ASSERT", "ASSERT_NOT") and _ignorecase_anywhere(list(arg[1])):
            return True
    return False


def required_literals(pattern: str, flags: int = 0) -> Required | None:
    """The literals one of which every match of ``pattern`` contains, or None if none is provable."""
    tree = _parse(pattern, flags)
    if tree is None:
        return None
    found = _required(list(tree))
    if not found or not all(found):
        return None
    icase = bool(tree.state.flags & re.IGNORECASE) or _ignorecase_anywhere(list(tree))
    return Required(found, icase)


def min_width(pattern: str, flags: int = 0) -> int:
    """The length of the shortest text the pattern can match (0 when unknown)."""
    tree = _parse(pattern, flags)
    if tree is None:
        return 0
    low = tree.getwidth()[0]
    return int(low) if low < sre_parse.MAXREPEAT else 0


def regex_literals(pattern: str, flags: int = 0) -> frozenset[str] | None:
    """Lower-cased literals one of which the *lower-cased* text of every match contains, whatever the text.

    Only ASCII literals of a case-sensitive pattern qualify: lower-casing maps each ASCII character to
    one ASCII character in place, so a literal in the text is still there, lower-cased, in the lower-cased
    text. (Capital sigma lower-cases to one of two letters depending on what follows it, and
    case-insensitive patterns match characters such as U+017F whose lower case is no ASCII letter.)"""
    req = required_literals(pattern, flags)
    if req is None or req.ignorecase or not all(v.isascii() for v in req.literals):
        return None
    return frozenset(v.lower() for v in req.literals)


def glob_literals(regex: str) -> frozenset[str] | None:
    """For a glob already turned into a regex (escaped literals, ``.*`` and ``.``): literals one of which
    every match contains, exactly as written. Globs are compared on the very view they are written for
    (lower-cased unless cased), so no case reasoning is needed."""
    req = required_literals(regex, re.DOTALL)
    return req.literals if req is not None else None


def _better(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if _lit_key(a) <= _lit_key(b) else b


def _lit_key(s: frozenset[str]) -> tuple[int, int]:
    return (-min(len(v) for v in s), len(s))


def _finite(items: list[Any]) -> set[str] | None:
    """The strings a regex sequence matches when they are a small finite set (literals, classes of
    literals, alternations of those), else None. ``/(nc|ncat)`` → {'/nc', '/ncat'}. A scoped
    case-insensitive group is never finite here (its case variants are not listed)."""
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
            alts = None if arg[1] & re.IGNORECASE else _finite(list(arg[-1]))
        elif name == "BRANCH":
            alts = set()
            for branch in arg[1]:
                sub = _finite(list(branch))
                if sub is None:
                    return None
                alts |= sub
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT") and arg[1] <= _MAX_REPEAT:
            body = _finite(list(arg[2]))  # a small repeat of a finite body: 'api[_-]?key'
            if body is None:
                return None
            alts = set()
            power = {""}
            for count in range(arg[1] + 1):
                if count >= arg[0]:
                    alts |= power
                power = {a + b for a in power for b in body}
                if len(power) > _MAX_ALTS:
                    return None
        else:
            return None
        if alts is None or len(alts) > _MAX_ALTS:
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
        # Not finite, but every match of it may still start with one of a few literals ('gcc-\d+'
        # starts with 'gcc-'): the run goes on into them, then ends ('/' + 'gcc-' → '/gcc-').
        starts = _prefixes(item)
        if starts is not None and any(starts):
            grown = {a + b for a in run for b in starts}
            if len(grown) <= _MAX_ALTS:
                run = grown
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


def _prefixes(item: Any) -> set[str] | None:
    """Strings one of which every match of one regex element starts with ('' when nothing is known)."""
    op, arg = item
    name = str(op)
    fin = _finite([item])
    if fin is not None:
        return fin
    if name == "SUBPATTERN" and not arg[1] & re.IGNORECASE:
        return _seq_prefixes(list(arg[-1]))
    if name == "BRANCH":
        out: set[str] = set()
        for branch in arg[1]:
            sub = _seq_prefixes(list(branch))
            if sub is None:
                return None
            out |= sub
        return out if len(out) <= _MAX_ALTS else None
    if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT") and arg[0] >= 1:
        return _seq_prefixes(list(arg[2]))
    return {""}


def _seq_prefixes(items: list[Any]) -> set[str] | None:
    """Strings one of which every match of a sequence starts with: its leading finite elements, then the
    prefixes of the first element that is not finite."""
    out = {""}
    for item in items:
        fin = _finite([item])
        if fin is None:
            starts = _prefixes(item)
            if starts is None:
                return None
            grown = {a + b for a in out for b in starts}
            return grown if len(grown) <= _MAX_ALTS else out
        grown = {a + b for a in out for b in fin}
        if len(grown) > _MAX_ALTS:
            return out
        out = grown
    return out


def regex_basenames(pattern: str, flags: int = 0) -> frozenset[str] | None:
    """For ``/(a|b|c)$``-style image patterns: the base names the path must end with, else None.
    Case-sensitive patterns with ASCII names only (see :func:`regex_literals`)."""
    tree = _parse(pattern, flags)
    if tree is None or tree.state.flags & re.IGNORECASE:
        return None
    items = list(tree)
    if len(items) < 3 or str(items[-1][0]) != "AT" or str(items[-1][1]) != "AT_END":
        return None
    if str(items[0][0]) != "LITERAL" or items[0][1] != ord("/"):
        return None
    names = _finite(items[1:-1])
    if not names or any(not n or "/" in n or not n.isascii() for n in names):
        return None
    return frozenset(n.lower() for n in names)
