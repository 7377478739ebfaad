"""The prefilter's anchors are necessary conditions of their rules."""

from __future__ import annotations

import re

import pytest

from assay.detection._index import regex_literals


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("/python[0-9.]*$", {"/python"}),
        ("(^|/)id_(rsa|dsa)$", {"id_"}),
        ("abc|defg", {"abc", "defg"}),
        ("^-[bBdE]*c", {"-"}),
        ("x(?:Foo)+y", {"foo"}),
        ("a?b*", None),
        ("[abc]+", None),
        ("(abc|)", None),
    ],
)
def test_regex_literals(pattern: str, expected: set[str] | None) -> None:
    found = regex_literals(pattern)
    assert (set(found) if found is not None else None) == expected
    if found:  # every match contains one of them
        sample = {"/python3.11", "/x/id_rsa", "abc", "defg", "-c", "xfoofooy"}
        for s in sample:
            if re.search(pattern, s):
                assert any(lit in s.lower() for lit in found)
