"""The prefilter's anchors are necessary conditions of their rules."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.detection._index import regex_literals


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("/python[0-9.]*$", {"/python"}),
        ("(^|/)id_(rsa|dsa)$", {"id_rsa", "id_dsa"}),
        ("-(W|R)\\s?[0-9]", {"-w", "-r"}),
        ("abc|defg", {"abc", "defg"}),
        ("^-[bBdE]*c", {"-"}),
        ("x(?:Foo)+y", {"xfoo"}),  # the run goes on into the repeated part
        ("a?b*", None),
        ("[abc]+", {"a", "b", "c"}),
        ("a*[abc]?", None),
        ("(abc|)", None),
    ],
)
def test_regex_literals(pattern: str, expected: set[str] | None) -> None:
    found = regex_literals(pattern)
    assert (set(found) if found is not None else None) == expected
    if found:  # every match contains one of them
        sample = {"/python3.11", "/x/id_rsa", "abc", "defg", "-c", "xfoofooy", "-W 1", "-r0"}
        for s in sample:
            if re.search(pattern, s):
                assert any(lit in s.lower() for lit in found)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("/(nc|ncat|nc\\.openbsd)$", {"nc", "ncat", "nc.openbsd"}),
        ("/python[0-9.]*$", None),
        ("/(a|b/c)$", None),
        ("/(gcc|cc)", None),
    ],
)
def test_regex_basenames(pattern: str, expected: set[str] | None) -> None:
    from assay.detection._index import regex_basenames

    found = regex_basenames(pattern)
    assert (set(found) if found is not None else None) == expected


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("/(gcc|cc|rustc|gcc-\\d+)$", {"/gcc", "/cc", "/rustc", "/gcc-"}),  # runs go on into prefixes
        ("api[_-]?key", {"apikey", "api_key", "api-key"}),  # small optional parts are expanded
        ("(?i)secret", None),  # case-insensitive: U+017F+'ecret' matches, its lower case has no 'secret'
        ("x(?i:abc)", None),  # a scoped case-insensitive part: the whole pattern is treated as one
        ("Σx", None),  # non-ASCII literals do not survive lower-casing in place
    ],
)
def test_regex_literals_are_sound_for_lower_cased_text(pattern: str, expected: set[str] | None) -> None:
    found = regex_literals(pattern)
    assert (set(found) if found is not None else None) == expected


def test_case_insensitive_literals_hold_for_ascii_text_only() -> None:
    from assay.detection._literals import required_literals

    req = required_literals("(?i)pass(w(or)?d)?|secret")
    assert req is not None and req.ignorecase
    assert set(req.literals) == {"pass", "passwd", "password", "secret"}
    assert re.search("(?i)secret", "\u017fecret")  # why: LONG S matches 's' without IGNORECASE folding
    assert "secret" not in "\u017fecret".lower()


# Words near the rules' literals, in the case variants re.IGNORECASE folds (long s, dotless i, Kelvin)
_WORDS = ["secret", "\u017fecret", "SECRET", "ap\u0131_key", "API-KEY", "Kbc", "\u212abc", "sk", "-x\u212a"]


@given(st.lists(st.sampled_from(_WORDS) | st.text(max_size=3), max_size=4).map(" ".join))
@settings(max_examples=400, deadline=None)
def test_engine_prefilter_and_guards_never_skip_a_match(text: str) -> None:
    """Rules whose regexes give anchors and guards (case-sensitive, case-insensitive, non-ASCII input):
    the prefiltered engine matches exactly what every rule run alone matches."""
    from assay.detection._codegen import build_matcher
    from assay.detection._index import IndexedMatcher
    from assay.detection._ir import FieldRef, Match, RegexTest, StrTest

    cmd = FieldRef("process.command_line")
    rules = [
        (0, Match(cmd, RegexTest("(?i)secret|api[_-]?key", 0))),
        (1, Match(cmd, RegexTest("Kbc|sk", 0))),
        (2, Match(cmd, RegexTest("a(?i:bc)", 0))),
        (3, Match(cmd, StrTest("glob", ("ab.*sk",)))),
        (4, Match(FieldRef("process.args"), RegexTest("(?i)^-[a-z]*k$", 0))),
    ]
    fields = {"process.command_line": text, "process.args": text.split(" ")}
    assert IndexedMatcher(rules)(fields) == build_matcher(rules)(fields)
