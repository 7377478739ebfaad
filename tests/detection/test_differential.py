"""Differential test: Assay's compiled rules against pySigma's SQLite backend, rule by rule, on the same
generated events, over every rule of the SigmaHQ corpus. Both sides use the same processing pipeline, so a
disagreement is a difference in Sigma semantics between the two implementations."""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest

from assay.detection import Engine, builtin_rule_paths
from assay.detection._codegen import LIST_FIELDS
from assay.detection._ir import CidrTest, Match, Node, fields_of, walk
from assay.detection._loader import read_documents, rule_files
from assay.detection._oracle import SqliteMethod
from assay.detection._synthetic import benign_stream, probes
from assay.events import Event

PROBES_PER_RULE = 24


def _not_an_ip(value: object) -> bool:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return True
    return False


def explain(node: Node, fields: dict[str, object]) -> str | None:
    """Why a disagreement is the other implementation's known bug, or None when it is unexplained.

    pySigma's SQLite backend turns ``|cidr`` into LIKE prefixes ('10.%' for 10.0.0.0/8), so any text that
    starts like an address in the network counts as inside it, though it is no IP address at all. Assay
    parses the address and compares it with the network. (Values such as '10.0.0.1 172.16.0.9' occur when
    a probe composes several values into one field.)
    """
    for leaf in walk(node):
        if isinstance(leaf, Match) and isinstance(leaf.test, CidrTest):
            value = fields.get(leaf.field.name)
            if value is not None and _not_an_ip(value):
                return "sqlite-cidr-prefix"
    return None


@pytest.fixture(scope="module")
def corpus(sigma_corpus: Path) -> tuple[Engine, SqliteMethod, list[Event]]:
    # The whole SigmaHQ corpus, plus the built-in rules that read only scalar fields (argv-element
    # matching has no SQL counterpart that keeps its meaning).
    engine = Engine.load(rule_paths=[sigma_corpus], include_builtin=True, include_default_allowlists=False)
    assert engine.errors == []
    supported = [
        r
        for r in engine._loaded
        if r.info.supported
        and r.node is not None
        and not any(f.name in LIST_FIELDS and f.index is None for f in fields_of(r.node))
    ]
    docs = []
    for path in rule_files([sigma_corpus, *builtin_rule_paths()]):
        for doc in read_documents(path):
            if isinstance(doc.data, dict) and str(doc.data.get("id")) in {r.info.id for r in supported}:
                docs.append((str(doc.data["id"]), doc.data))
    oracle = SqliteMethod.convert(docs)
    rng = random.Random(20261124)
    events: list[Event] = []
    for r in supported:
        assert r.node is not None
        events.extend(probes(rng, r.node, PROBES_PER_RULE))
    events.extend(benign_stream(rng, 2000))
    rng.shuffle(events)
    return engine, oracle, events


def test_every_supported_rule_converts_in_both(
    corpus: tuple[Engine, SqliteMethod, list[Event]], sigma_corpus: Path
) -> None:
    engine, oracle, _ = corpus
    assert oracle.errors == {}
    corpus_rules = {
        r.id for r in engine.rules if r.supported and r.kind == "rule" and str(sigma_corpus) in str(r.file)
    }
    assert corpus_rules <= set(oracle.queries)  # every supported SigmaHQ rule is compared
    builtin = set(oracle.queries) - corpus_rules
    assert len(builtin) >= 30  # and the built-ins without argv-element tests


def test_matches_agree_rule_by_rule(corpus: tuple[Engine, SqliteMethod, list[Event]]) -> None:
    engine, oracle, events = corpus
    ours: dict[str, set[int]] = {rid: set() for rid in oracle.queries}
    for i, event in enumerate(events):
        for rule in engine.match(event):
            if rule.info.id in ours:  # argv-element built-ins run on Assay's side only
                ours[rule.info.id].add(i)
    theirs = oracle.run(events)
    nodes = {r.info.id: r.node for r in engine._loaded if r.node is not None}
    unexplained = []
    explained: dict[str, int] = {}
    for rid in sorted(oracle.queries):
        for i in sorted(ours[rid] ^ theirs[rid]):
            why = explain(nodes[rid], events[i].fields)
            if why is None:
                side = "assay only" if i in ours[rid] else "sqlite only"
                unexplained.append((rid, side, events[i].fields))
            else:
                explained[why] = explained.get(why, 0) + 1
    assert unexplained == []
    assert set(explained) <= {"sqlite-cidr-prefix"}
    # The corpus must actually exercise the rules: most rules match some probes, and none matches all.
    matched = [rid for rid in ours if ours[rid]]
    assert len(matched) >= 0.9 * len(ours), f"only {len(matched)} of {len(ours)} rules ever matched"
    assert all(len(hits) < len(events) for hits in ours.values())
    assert sum(len(h) for h in ours.values()) > 1000


def test_prefilter_never_changes_results(corpus: tuple[Engine, SqliteMethod, list[Event]]) -> None:
    """The anchor index only skips rules that cannot match: same results as running every rule."""
    from assay.detection._codegen import build_matcher

    engine, _, events = corpus
    plain = {}
    for action in {e.action for e in events}:
        _, rules = engine._bucket(action)
        plain[action] = (
            build_matcher([(i, r.node) for i, r in enumerate(rules) if r.node is not None]),
            rules,
        )
    skipped = 0
    for e in events:
        fn, rules = plain[e.action]
        expected = [rules[i].info.id for i in fn(e.fields)]
        assert [r.info.id for r in engine.match(e)] == expected
        skipped += len(rules) - len(expected)
    assert skipped > 0


def test_documented_difference_cidr_is_an_address_test_not_a_text_prefix() -> None:
    """pySigma's SQLite backend expands |cidr into LIKE prefixes; Assay compares parsed addresses."""
    from assay.detection._oracle import SqliteMethod

    rule = {
        "title": "t",
        "id": "66666666-6666-4666-8666-666666666666",
        "logsource": {"product": "linux", "category": "network_connection"},
        "detection": {"sel": {"DestinationIp|cidr": "10.0.0.0/8"}, "condition": "sel"},
    }
    oracle = SqliteMethod.convert([(rule["id"], rule)])
    events = [
        Event.of("connect", "synthetic", 1.0, values={"destination.ip": "10.1.2.3"}),
        Event.of("connect", "synthetic", 2.0, values={"destination.ip": "10.example.org"}),
    ]
    assert oracle.run(events)[rule["id"]] == {0, 1}  # the backend: text starting with '10.' is "in" 10/8
    import yaml

    from assay.detection._loader import _Document, load_document

    loaded = load_document(Path("r.yml"), _Document(yaml.safe_load(yaml.safe_dump(rule)), 1, {}), 0)
    engine = Engine([loaded])
    assert [bool(engine.match(e)) for e in events] == [True, False]  # Assay: only the address is
