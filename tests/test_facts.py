"""Facts, parsers, requirements, ``#{variables}`` and escaping. The escaping tests run the rendered commands
under a real ``sh``/``bash``/``python3`` to prove a hostile value stays one word and runs nothing."""

from __future__ import annotations

import json
import subprocess

import pytest

from assay.content import (
    FactRule,
    FactSource,
    ParserConfig,
    Requirement,
    RuleAction,
    SeedFact,
    SeedRelationship,
)
from assay.emulation import (
    Fact,
    FactBase,
    LinkStatus,
    OriginType,
    Relationship,
    SkipReason,
    allowed,
    parse,
    parse_variable,
    render,
    seed,
    unmet,
    variables,
)
from emulation_helpers import Harness, ability, agent, operation

HOSTILE = "a b'c\"d$(touch /tmp/assay-pwned)`id`\\e;f*"
STOCKPILE = "plugins.stockpile.app.parsers."
REQ = "plugins.stockpile.app.requirements."


def _sh(script: str, shell: str = "sh") -> str:
    return subprocess.run(
        [shell], input=script, capture_output=True, text=True, check=True, timeout=10
    ).stdout


@pytest.mark.parametrize(
    "template",
    [
        "printf '%s\\n' #{v}",
        'printf "%s\\n" "#{v}"',
        "printf '%s\\n' '#{v}'",
        "cat <<EOF\n#{v}\nEOF",
        "x=#{v}; printf '%s\\n' \"$x\"",
    ],
)
def test_values_are_escaped_for_where_they_sit_in_the_command(template: str) -> None:
    for shell in ("sh", "bash"):
        command = render(template, {"v": (HOSTILE, False)}, shell)
        assert _sh(command, shell) == HOSTILE + "\n", command


def test_quoting_context_skips_comments_and_tracks_here_documents() -> None:
    from assay.emulation._linking import _sh_contexts

    template = "# don't be fooled\necho #{a} '#{b}' \"#{c}\" <<'EOF'\n#{d}\nEOF\ncat <<X\n#{e}\nX\necho #{f}"
    assert _sh_contexts(template) == ("bare", "single", "double", "heredoc_literal", "heredoc_expand", "bare")


def test_python_values_are_escaped_inside_and_outside_string_literals() -> None:
    for template in ("print(#{v})", "print('#{v}')", 'print("#{v}")', "# #{v} in a comment\nprint(1)"):
        command = render(template, {"v": (HOSTILE + "\nx", False)}, "python")
        out = _sh(command, "python3")
        assert out in (HOSTILE + "\nx\n", "1\n"), command


def test_caldera_filters_and_raw_arguments() -> None:
    var = parse_variable("host.user.name[filters(max=2,technique=t1005)]")
    assert (var.trait, var.max, var.technique) == ("host.user.name", 2, "T1005")
    assert [v.trait for v in variables("#{a} #{b[filters(max=1)]} #{a}")] == ["a", "b"]
    assert render("echo #{x}", {"x": ("$HOME", True)}, "sh") == "echo $HOME"  # ART arguments go in as written
    assert render("echo #{unknown}", {}, "sh") == "echo #{unknown}"


def test_rules_last_match_wins_with_regex_and_cidr() -> None:
    rules = [
        FactRule(RuleAction.DENY, "host.ip", ".*"),
        FactRule(RuleAction.ALLOW, "host.ip", "10.0.0.0/8"),
        FactRule(RuleAction.DENY, "host.ip", "10.0.0.5"),
    ]
    verdicts = {v: allowed(Fact("host.ip", v), rules) for v in ("10.1.2.3", "10.0.0.5", "192.168.0.1", "x")}
    assert verdicts == {"10.1.2.3": True, "10.0.0.5": False, "192.168.0.1": False, "x": False}
    assert allowed(Fact("other", "anything"), rules)


def test_parsers_map_caldera_modules_and_tie_used_facts_to_what_was_learned() -> None:
    basic = ParserConfig(STOCKPILE + "basic", "host.dir.staged", "has_compressed_file", "host.dir.compress")
    rels, notes = parse(
        [basic], "/tmp/a.tgz\n\n/tmp/b.tgz\n", {"host.dir.staged": "/tmp/staged"}, origin="L1"
    )
    assert notes == []
    assert [(r.source, r.edge, r.target, r.origin) for r in rels] == [
        (
            ("host.dir.staged", "/tmp/staged"),
            "has_compressed_file",
            ("host.dir.compress", "/tmp/a.tgz"),
            "L1",
        ),
        (
            ("host.dir.staged", "/tmp/staged"),
            "has_compressed_file",
            ("host.dir.compress", "/tmp/b.tgz"),
            "L1",
        ),
    ]
    doc = json.dumps({"users": [{"name": "alice", "uid": 1000}, {"name": "bob", "uid": 0}], "name": 7})
    js = ParserConfig(STOCKPILE + "json", "host.user.name", custom={"json_key": "name", "json_type": ["str"]})
    assert [r.source[1] for r in parse([js], doc, {})[0]] == ["alice", "bob"]
    rx = ParserConfig("regex", "host.user.name", "has_uid", "host.user.uid", {"regex": r"^(\w+):x:(\d+):"})
    found = parse([rx], "root:x:0:0::/root:/bin/sh\nbin:x:1:1::/:/bin/false\n", {})[0]
    assert [(r.source[1], r.target[1] if r.target else None) for r in found] == [("root", "0"), ("bin", "1")]
    kv = ParserConfig("kv", "host.user.name")
    assert [r.source[1] for r in parse([kv], "noise\nhost.user.name=carol\nother=1\n", {})[0]] == ["carol"]
    static = ParserConfig(STOCKPILE + "static", "marker", custom={"source": "done"})
    assert [r.source for r in parse([static], "", {})[0]] == [("marker", "done")]
    scan = ParserConfig(STOCKPILE + "scan", "target.ip", "has_open_port", "target.port")
    assert [
        (r.source[1], r.target[1] if r.target else None) for r in parse([scan], "127.0.0.1:22\n", {})[0]
    ] == [("127.0.0.1", "22")]
    ip = ParserConfig(STOCKPILE + "ipaddr", "host.ip")
    assert [r.source[1] for r in parse([ip], "inet 10.0.0.1/8 and 999.1.1.1 and 10.0.0.1", {})[0]] == [
        "10.0.0.1"
    ]
    rels, notes = parse([ParserConfig(STOCKPILE + "katz", "x"), ParserConfig("regex", "y")], "out", {})
    assert rels == [] and len(notes) == 2 and "no Assay equivalent" in notes[0] and "regex" in notes[1]


def _knowledge() -> tuple[FactBase, list[Fact]]:
    base = FactBase()
    staged = Fact("host.dir.staged", "/tmp/s", collected_by=["p1"])
    other = Fact("host.dir.staged", "/tmp/o", collected_by=["p2"])
    compress = Fact("host.dir.compress", "/tmp/s.tgz", collected_by=["p1"])
    for fact in (staged, other, compress):
        base.add(fact)
    base.relate(Relationship(staged.key, "has_compressed_file", compress.key))
    return base, [staged, other, compress]


def test_requirements() -> None:
    base, (staged, other, compress) = _knowledge()

    def req(name: str, **match: str) -> list[Requirement]:
        return [Requirement(REQ + name, (match,))]

    assert unmet(req("paw_provenance", source="host.dir.staged"), "p1", [staged], base) is None
    assert "not collected by agent p1" in (
        unmet(req("paw_provenance", source="host.dir.staged"), "p1", [other], base) or ""
    )
    assert "uses no fact" in (unmet(req("paw_provenance", source="host.dir.staged"), "p1", [], base) or "")
    edge = {"source": "host.dir.staged", "edge": "has_compressed_file"}
    assert unmet(req("basic", **edge), "p1", [staged], base) is None
    assert unmet(req("basic", **edge, target="host.dir.compress"), "p1", [staged, compress], base) is None
    assert unmet(req("basic", **edge), "p1", [other], base) is not None
    assert unmet(req("not_exists", **edge), "p1", [other], base) is None
    assert "already has" in (unmet(req("not_exists", **edge), "p1", [staged], base) or "")
    assert unmet(req("existential", **edge), "p1", [], base) is None  # no variable needed
    assert unmet(req("existential", **edge), "p2", [], base) is not None
    assert unmet(req("universal", **edge), "p1", [], base) is None
    assert unmet(req("universal", source="host.dir.staged", edge="nope"), "p1", [], base) is not None
    assert "not supported" in (unmet([Requirement("plugins.x.reachable")], "p1", [], base) or "")


def test_cartesian_product_filters_and_requirements_in_an_operation() -> None:
    learn = ability(
        "learn",
        command="ls",
        parsers=(
            ParserConfig(STOCKPILE + "basic", "host.user.name"),
            ParserConfig("regex", "host.port", custom={"regex": r"port=(\d+)"}),
        ),
    )
    pair = ability("pair", command="probe #{host.user.name} #{host.port}")
    best = ability("best", command="only #{host.user.name[filters(max=1)]}")
    mine = ability(
        "mine",
        command="mine #{host.port}",
        requirements=(Requirement(REQ + "paw_provenance", ({"source": "host.port"},)),),
    )
    abilities = {"learn": learn, "pair": pair, "best": best, "mine": mine}
    op = operation(("learn", "pair", "best", "mine"), abilities, planner_name="batch")
    op.add_agent(agent("p1"))
    op.add_agent(agent("p2"))
    h = Harness(op)
    h.advance()
    for link in h.deliver("p1"):
        h.report(link.id, stdout="alice\nport=80\n")
    second = [op.link(i) for i in [lk.id for lk in h.deliver("p2")]]
    for link in second:
        h.report(link.id, stdout="port=22\n") if link else None  # type: ignore[func-returns-value]
    planned = sorted(
        (lk.paw, lk.plaintext_command) for lk in op.links if lk.ability_id != "learn" and lk.executor
    )
    # Names: every output line (alice, port=80, port=22); ports: 80, 22. The product, on both agents;
    # `best` takes the one best name; `mine` only the port its own agent found.
    assert ("p1", "probe alice 80") in planned and ("p2", "probe alice 22") in planned
    assert len([p for p in planned if p[1].startswith("probe ")]) == 3 * 2 * 2
    assert len([p for p in planned if p[1].startswith("only ")]) == 2
    assert sorted(p for p in planned if p[1].startswith("mine ")) == [("p1", "mine 80"), ("p2", "mine 22")]
    fact = op.knowledge.get("host.port", "80")
    assert fact is not None and fact.collected_by == ["p1"] and fact.origin_type is OriginType.LEARNED
    assert fact.links and op.link(fact.links[0]).ability_id == "learn"  # type: ignore[union-attr]


def test_fact_sources_seed_facts_rules_and_trait_only_relationships() -> None:
    source = FactSource(
        "s1",
        "src",
        facts=(SeedFact("host.user.name", " alice "), SeedFact("host.user.name", "root", score=0)),
        rules=(FactRule(RuleAction.DENY, "host.user.name", "bob"),),
        relationships=(SeedRelationship(("host.user.name", None), "has_home", ("host.dir", "/home")),),
    )
    facts, rels = seed(source, 5.0)
    assert [(f.trait, f.value, f.origin_type) for f in facts][:2] == [
        ("host.user.name", "alice", OriginType.IMPORTED),
        ("host.user.name", "root", OriginType.IMPORTED),
    ]
    assert {r.source[1] for r in rels} == {"alice", "root"} and ("host.dir", "/home") in [
        f.key for f in facts
    ]
    use = ability("use", command="id #{host.user.name}")
    op = operation(("use",), {"use": use}, rules=source.rules)
    op.add_facts([*facts, Fact("host.user.name", "bob", origin_type=OriginType.USER)], rels)
    op.add_agent(agent())
    ran = Harness(op).run_all()
    assert [lk.plaintext_command for lk in ran] == ["id alice"]  # score 0 and denied values are never used


def test_learned_values_never_override_atomic_arguments_but_given_facts_do() -> None:
    from assay.content import Argument

    art = ability("art", command="echo #{path}")
    art = type(art)(
        **{**{f: getattr(art, f) for f in art.__slots__}, "arguments": {"path": Argument("path", "/tmp/x y")}}
    )  # type: ignore[attr-defined]
    op = operation(("art",), {"art": art})
    op.add_agent(agent())
    op.add_facts([Fact("path", "$(learned)", origin_type=OriginType.LEARNED)])
    h = Harness(op)
    h.advance()
    assert op.links[0].plaintext_command == "echo /tmp/x y"  # ART's default, raw as ART substitutes it
    op2 = operation(("art",), {"art": art})
    op2.add_agent(agent())
    op2.add_facts([Fact("path", "/given", origin_type=OriginType.USER)])
    Harness(op2).advance()
    assert op2.links[0].plaintext_command == "echo /given"


def test_a_failed_link_teaches_nothing_and_unsatisfiable_requirements_are_recorded() -> None:
    learn = ability("learn", command="ls", parsers=(ParserConfig("line", "host.user.name"),))
    need = ability(
        "need",
        command="use #{host.user.name}",
        requirements=(Requirement(REQ + "basic", ({"source": "host.user.name", "edge": "is_admin"},)),),
    )
    op = operation(("learn", "need"), {"learn": learn, "need": need})
    op.add_agent(agent())
    h = Harness(op)
    h.advance()
    h.deliver()
    h.report("L1", LinkStatus.ERROR, stdout="alice\n", exit_code=1)
    assert op.knowledge.facts == {}
    op2 = operation(("learn", "need"), {"learn": learn, "need": need})
    op2.add_agent(agent())
    Harness(op2).run_all(outputs={"learn": "alice\n"})
    (skip,) = [lk for lk in op2.links if lk.ability_id == "need"]
    assert skip.skip_reason_id is SkipReason.FACT_DEPENDENCY and "is_admin" in (skip.skip_reason or "")
