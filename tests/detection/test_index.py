"""The prefilter's anchors are necessary conditions of their rules."""

from __future__ import annotations

import re

import pytest

from assay.detection._index import regex_literals


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("/python[0-9.]*$", {"/python"}),
        ("(^|/)id_(rsa|dsa)$", {"id_rsa", "id_dsa"}),
        ("-(W|R)\\s?[0-9]", {"-w", "-r"}),
        ("abc|defg", {"abc", "defg"}),
        ("^-[bBdE]*c", {"-"}),
        ("x(?:Foo)+y", {"foo"}),
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
