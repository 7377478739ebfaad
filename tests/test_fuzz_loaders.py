"""Hostile content files: the Caldera, Atomic Red Team and Sigma loaders either load a file or report
Assay's own error naming the file and a line or field. Never another exception, never a hang, never memory
out of proportion to the file (YAML bombs: billion laughs, recursive aliases, deep nesting)."""

from __future__ import annotations

import itertools
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from assay.content import load_paths
from assay.detection._allowlist import load_allowlists
from assay.detection._loader import load_rules
from assay.errors import ErrorCollector
from assay.yaml_limits import MAX_DEPTH
from fuzz_helpers import mutate, no_hang, says_where

ABILITY_V0 = {
    "id": "fz-1",
    "name": "Fuzzed",
    "description": "prints",
    "tactic": "discovery",
    "technique": {"attack_id": "T1082", "name": "System Information Discovery"},
    "privilege": "User",
    "requirements": [{"plugins.stockpile.app.requirements.paw_provenance": [{"source": "host.user.name"}]}],
    "platforms": {
        "linux,darwin": {
            "sh,bash": {
                "command": "uname -a #{host.user.name}",
                "cleanup": ["true"],
                "timeout": 30,
                "payloads": ["x.sh"],
                "parsers": {"plugins.stockpile.app.parsers.basic": [{"source": "host.user.name"}]},
            }
        }
    },
}
ABILITY_V1 = {
    "id": "fz-2",
    "name": "Fuzzed v1",
    "tactic": "discovery",
    "technique_id": "T1033",
    "technique_name": "Owner",
    "executors": [
        {
            "name": "sh",
            "platform": "linux",
            "command": "id -u",
            "parsers": [
                {"module": "plugins.stockpile.app.parsers.basic", "parserconfigs": [{"source": "a.b"}]}
            ],
        }
    ],
    "repeatable": True,
    "buckets": ["discovery"],
}
ADVERSARY = {"adversary_id": "fz-adv", "name": "A", "atomic_ordering": ["fz-1", "fz-2"], "tags": ["t"]}
LEGACY_ADVERSARY = {"id": "fz-old", "name": "Old", "phases": {1: ["fz-1"], 2: ["fz-2"]}}
SOURCE = {
    "id": "fz-src",
    "name": "S",
    "facts": [{"trait": "host.user.name", "value": "root"}],
    "rules": [{"trait": "host.user.name", "action": "DENY", "match": ".*"}],
    "relationships": [
        {"source": {"trait": "a", "value": "b"}, "edge": "has", "target": {"trait": "c", "value": "d"}}
    ],
}
OBJECTIVE = {
    "id": "fz-obj",
    "name": "O",
    "goals": [{"target": "exhaustion", "operator": "==", "value": 1, "count": 1}],
}
PLANNER = {"id": "fz-plan", "name": "P", "module": "app.planners.atomic", "params": {}}
ATOMIC = {
    "attack_technique": "T1082",
    "display_name": "System Information Discovery",
    "atomic_tests": [
        {
            "name": "List OS",
            "auto_generated_guid": "11111111-2222-3333-4444-555555555555",
            "description": "uname",
            "supported_platforms": ["linux", "macos"],
            "input_arguments": {"out": {"description": "file", "type": "path", "default": "/tmp/x"}},
            "dependency_executor_name": "sh",
            "dependencies": [
                {
                    "description": "uname",
                    "prereq_command": "which uname",
                    "get_prereq_command": "apt-get install x",
                }
            ],
            "executor": {
                "name": "sh",
                "command": "uname -a > #{out}",
                "cleanup_command": "rm -f #{out}",
                "elevation_required": False,
            },
        }
    ],
}
SIGMA = {
    "title": "Shell from a web server",
    "id": "9f0e8a4c-1111-4222-8333-944444444444",
    "status": "test",
    "description": "x",
    "logsource": {"product": "linux", "category": "process_creation"},
    "detection": {
        "selection": {"ParentImage|endswith": ["/nginx", "/httpd"], "Image|endswith": "/sh"},
        "filter": {"CommandLine|contains|all": ["-c", "true"]},
        "condition": "selection and not filter",
    },
    "falsepositives": ["none"],
    "level": "high",
    "tags": ["attack.execution", "attack.t1059.004"],
}
CORRELATION = {
    "title": "Many shells",
    "name": "many_shells",
    "correlation": {
        "type": "event_count",
        "rules": ["9f0e8a4c-1111-4222-8333-944444444444"],
        "group-by": ["User"],
        "timespan": "5m",
        "condition": {"gte": 3},
    },
    "level": "high",
}
KEYS = sorted(
    {
        *ABILITY_V0,
        *ABILITY_V1,
        *ADVERSARY,
        *SOURCE,
        *ATOMIC,
        *ATOMIC["atomic_tests"][0],
        *SIGMA,
        "correlation",
    }
    | {"executor", "name", "platform", "command", "cleanup", "timeout", "parsers", "type", "condition"}
)
CONTENT_DOCS = [
    [ABILITY_V0, ABILITY_V1],
    ABILITY_V1,
    ADVERSARY,
    LEGACY_ADVERSARY,
    SOURCE,
    OBJECTIVE,
    PLANNER,
    ATOMIC,
]

# Bombs and shapes that broke a loader once (each stays as an example of every test below).
LAUGHS = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
)
BOMBS = {
    "billion laughs": LAUGHS,
    "billion laughs in a Sigma detection": "title: t\nlogsource: {product: linux}\ndetection:\n"
    + "".join("  " + line + "\n" for line in LAUGHS.splitlines())
    + "  condition: i\n",
    "billion laughs in an ability": "- id: x\n  technique_id: T1082\n  additional_info:\n"
    + "".join("    " + line + "\n" for line in LAUGHS.splitlines())
    + "  platforms: {linux: {sh: {command: id}}}\n",
    "deep flow nesting": "[" * 5000 + "]" * 5000,
    "deep block nesting": "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "v\n",
    "recursive list alias": "&a [*a]",
    "recursive map alias": "&a {x: *a, title: t}",
    "merge of one alias many times": "a: &a {x: 1}\nb:\n  <<: [" + ", ".join(["*a"] * 500) + "]\n",
    "wide alias fan-out": "a: &a [" + ",".join(["x"] * 1000) + "]\nb: [" + ",".join(["*a"] * 1000) + "]\n",
}
BAD_SCALARS = [
    "id: " + "1" * 5000,  # int() refuses more than 4300 digits (ValueError)
    "id: 2001-13-45",  # a timestamp's pattern, no date (ValueError)
    "id: 2001-02-28 99:99:99",
    "id: !!float x",
    "id: !!int x",
    "id: !!binary zz",
    "id: !!int ''",  # IndexError inside PyYAML
    "id: !!bool maybe",  # KeyError inside PyYAML
    "- !!timestamp nope",
    "id: !!python/object:os.system x",
    "\x00\x01",
    "a: b\n\t- c",
    "%TAG ! tag:x\n--- !a 1",
    "? [a, b]\n: c",
    "{[1]: 2}",
]
_names = itertools.count()


def _write(tmp: Path, text: str) -> Path:
    path = tmp / f"doc{next(_names)}.yml"  # a new name each time: the Sigma loader caches by path and mtime
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


def check_content(tmp: Path, text: str) -> None:
    path = _write(tmp, text)
    with no_hang():
        result = load_paths([path])
    for error in [*result.errors, *result.errors.warnings]:
        says_where(error, str(path))


def check_sigma(tmp: Path, text: str) -> None:
    path = _write(tmp, text)
    errors = ErrorCollector()
    with no_hang():
        rules = load_rules([path], errors)
    for error in errors:
        says_where(error, str(path))
    for rule in rules:
        assert rule.info.file == str(path) and rule.info.line


ALLOWLIST = {
    "allowlist": [
        {"id": "pkg", "reason": "package managers", "executable": ["/usr/bin/dpkg", "/usr/bin/apt*"]},
        {"id": "cron", "reason": "cron", "parent_executable": "/usr/sbin/cron", "rules": ["r1"]},
    ]
}


def check_allowlist(tmp: Path, text: str) -> None:
    path = _write(tmp, text)
    errors = ErrorCollector()
    with no_hang():
        load_allowlists([path], errors)
    for error in errors:
        says_where(error, str(path))


def dump(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_yaml_bombs_are_refused_quickly_and_in_bounded_memory(tmp: Path, name: str) -> None:
    text = BOMBS[name]
    tracemalloc.start()
    try:
        check_content(tmp, text)
        check_sigma(tmp, text)
        check_allowlist(tmp, text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024, f"{name}: {peak} bytes"


def test_bombs_are_refused_with_what_and_where(tmp: Path) -> None:
    for text, message, line in (
        (BOMBS["billion laughs"], "aliases expand to more than", 5),
        (BOMBS["deep flow nesting"], f"nested deeper than {MAX_DEPTH} levels", 1),
        (BOMBS["recursive map alias"], "recursive alias", 1),
    ):
        path = _write(tmp, text)
        (error,) = load_paths([path]).errors
        assert message in error.message and error.source is not None and error.source.line == line, error
        errors = ErrorCollector()
        load_rules([path], errors)
        (error,) = errors
        assert message in error.message and error.source is not None and error.source.line == line, error


@pytest.mark.parametrize("text", BAD_SCALARS)
def test_bad_scalars_are_errors_at_their_line(tmp: Path, text: str) -> None:
    check_content(tmp, text)
    check_sigma(tmp, text)
    check_allowlist(tmp, text)


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp: Path) -> None:
    path = tmp / "huge.yml"
    with path.open("wb") as fh:
        fh.truncate(17 * 1024 * 1024)  # sparse: no disk written
    (error,) = load_paths([path]).errors
    assert "larger than" in error.message and error.source is not None and error.source.file == str(path)
    errors = ErrorCollector()
    load_rules([path], errors)
    assert "larger than" in next(iter(errors)).message


def test_the_valid_bases_load(tmp: Path) -> None:
    # The mutations below start from these: they must be valid, or the fuzzing only ever tests rejection.
    result = load_paths([_write(tmp, dump(doc)) for doc in CONTENT_DOCS if doc is not ABILITY_V1])
    assert not result.errors, [str(e) for e in result.errors]
    assert {"fz-1", "fz-2", "11111111-2222-3333-4444-555555555555"} <= set(result.library.abilities)
    errors = ErrorCollector()
    rules = load_rules([_write(tmp, dump(SIGMA) + "---\n" + dump(CORRELATION))], errors)
    assert not errors and [r.info.supported for r in rules] == [True, True], [str(e) for e in errors]
    allow = load_allowlists([_write(tmp, dump(ALLOWLIST))], errors)
    assert not errors and len(allow) == 2, [str(e) for e in errors]


SETTINGS = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@SETTINGS
@given(data=st.data(), base=st.sampled_from(CONTENT_DOCS))
@example(
    data=None, base={"id": "x", "technique_id": "T1082", "platforms": {"linux": {"sh": {"command": 1e400}}}}
)
@example(data=None, base=0)  # a scalar document: an error without a line
def test_mutated_caldera_and_atomic_content_loads_or_says_where(tmp: Path, data: Any, base: Any) -> None:
    doc = base if data is None else mutate(data, base, KEYS)
    check_content(tmp, dump(doc))


@SETTINGS
@given(data=st.data(), base=st.sampled_from([SIGMA, CORRELATION]))
@example(data=None, base={**SIGMA, "title": ["a list"]})  # AttributeError inside pySigma
@example(data=None, base={**SIGMA, "id": []})  # AttributeError inside pySigma
@example(data=None, base={**CORRELATION, "correlation": {**CORRELATION["correlation"], "type": []}})
def test_mutated_sigma_rules_load_or_say_where(tmp: Path, data: Any, base: Any) -> None:
    doc = base if data is None else mutate(data, base, KEYS)
    text = dump(doc) if "correlation" not in base else dump(SIGMA) + "---\n" + dump(doc)
    check_sigma(tmp, text)


# Raw text: YAML's syntax characters, indentation, anchors, tags and directives in random order.
_TOKENS = [
    *(
        "\n",
        "  ",
        "- ",
        ": ",
        "? ",
        "[",
        "]",
        "{",
        "}",
        ",",
        "&a ",
        "*a",
        "!!str ",
        "!!int ",
        "!x ",
        "|",
        ">",
    ),
    *("'", '"', "#", "---\n", "...\n", "%YAML 1.1\n", "<<: ", "id", "title", "detection", "1", "2001-01-01"),
    *("\t", "\\u", "\x00", "\ufeff", "\ud800", "é"),
]
yaml_text = st.lists(st.sampled_from(_TOKENS) | st.text(max_size=5), max_size=40).map("".join)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=yaml_text)
@example(text="- \ud800")
@example(text="- !!int\n")
def test_arbitrary_yaml_text_loads_or_says_where(tmp: Path, text: str) -> None:
    check_content(tmp, text)
    check_sigma(tmp, text)
    check_allowlist(tmp, text)


@SETTINGS
@given(data=st.data())
def test_mutated_allowlists_load_or_say_where(tmp: Path, data: Any) -> None:
    check_allowlist(tmp, dump(mutate(data, ALLOWLIST, ["id", "reason", "rules", "executable", "allowlist"])))
