"""Caldera parity (issue 12), without a server: a stockpile-shaped checkout loads with 0 errors and its skips
explained; objectives and goals end operations; the look-ahead and guided planners plan as stockpile's do;
learning parsers harvest facts from any output; sources and planner definitions resolve by id or name."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from assay.c2 import MemoryLedger
from assay.content import (
    BASIC_SOURCE_ID,
    DEFAULT_OBJECTIVE_ID,
    Goal,
    Objective,
    ParserConfig,
    load_paths,
)
from assay.emulation import (
    GuidedPlanner,
    LookAheadPlanner,
    OperationService,
    OperationSettings,
    OriginType,
    learn,
    planner,
)
from assay.errors import EmulationError
from emulation_helpers import Harness, ability, agent, operation

CHECKOUT = Path(__file__).resolve().parent / "data" / "stockpile_checkout"
HARMLESS_ADVERSARY = "0b73bf34-fc5b-48f7-9194-dce993b915b1"


def _check(path: Path) -> tuple[int, dict[str, object]]:
    cmd = [
        sys.executable,
        "-c",
        "from assay.cli import main; main()",
        "content",
        "check",
        str(path),
        "--json",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    return done.returncode, json.loads(done.stdout)


def test_stockpile_checkout_loads_with_zero_errors_and_every_skip_has_a_reason() -> None:
    code, data = _check(CHECKOUT)
    assert code == 0, data["errors"]
    counts = data["counts"]
    assert isinstance(counts, dict)
    assert counts == {
        "files": 26,  # data/ only: not .pre-commit-config.yaml, .github/, templates/
        "abilities": 13,
        "linux_abilities": 9,
        "adversaries": 4,
        "sources": 2,
        "objectives": 2,
        "planners": 7,
        "skips": 8,
        "errors": 0,
        "warnings": 2,
    }
    skips = {(s["kind"], s["id"]): s["reason"] for s in data["skips"]}  # type: ignore[attr-defined]
    assert "builder plugin" in skips[("executor", "0bff4ee7-42a4-4bde-b09a-9d79d8b9edd7")]
    assert "language csharp" in skips[("executor", "0bff4ee7-42a4-4bde-b09a-9d79d8b9edd7")]
    assert (
        skips[("ability", "0bff4ee7-42a4-4bde-b09a-9d79d8b9edd7")] == "no Linux executor (platforms: windows)"
    )
    assert (
        skips[("ability", "8c06ebf8-bacf-486b-bd77-21ba8c5a5777")] == "no Linux executor (platforms: darwin)"
    )
    linux_built = skips[("ability", "1f2e3d4c-5b6a-4798-8a6b-5c4d3e2f1a0b")]
    assert linux_built.startswith("no Linux executor Assay can run: compiled by Caldera's builder plugin")
    assert "no Assay planner" in skips[("planner", "48e1a882-1606-4910-8f2d-2352eb80cba2.yml")]
    assert "no Assay planner" in skips[("planner", "788107d5-dc1e-4204-9269-38df0186d3e7")]
    planners = {p["name"]: p["runs_as"] for p in data["planners"]}  # type: ignore[attr-defined]
    assert planners == {
        "atomic": "atomic", "batch": "batch", "buckets": "buckets", "look ahead": "look_ahead",
        "guided": "guided", "naive bayes": None, "sequential": None,
    }  # fmt: skip
    assert {s["name"] for s in data["sources"]} == {"basic", "Kerberoast Rubeus"}  # type: ignore[attr-defined]
    check = next(a for a in data["adversaries"] if a["name"] == "Check")  # type: ignore[attr-defined]
    assert check["missing_abilities"] == ["335cea7b-bec0-48c6-adfb-6066070f5f68"]


@pytest.mark.parametrize("layout", ["plugins/stockpile", "stockpile", "."])
def test_caldera_and_plugin_layouts_load_the_same(tmp_path: Path, layout: str) -> None:
    """A Caldera checkout (plugins/stockpile/data), a plugin directory beside others, or data/ itself."""
    root = tmp_path / "tree"
    target = root / layout
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(CHECKOUT, target, dirs_exist_ok=True)
    (root / "conf.yml").write_text("not: content\n")  # Caldera's own conf/ and root files are not content
    given = root if layout != "." else root / "data"
    result = load_paths([given])
    assert not result.errors.errors, [str(e) for e in result.errors.errors]
    assert (len(result.library.abilities), len(result.library.adversaries), result.files) == (13, 4, 26)


def test_basic_source_and_default_objective_always_exist_and_content_may_bring_its_own() -> None:
    builtin_only = load_paths([])
    basic = builtin_only.library.source("basic")
    assert basic is not None and basic.id == BASIC_SOURCE_ID and basic.facts == ()
    assert builtin_only.library.objective(None).id == DEFAULT_OBJECTIVE_ID
    lib = load_paths([CHECKOUT]).library
    stockpile_basic = lib.source("basic")
    assert stockpile_basic is not None and stockpile_basic.id == BASIC_SOURCE_ID
    assert [f.value for f in stockpile_basic.facts] == ["wav", "yml", "png"]  # stockpile's, not the empty one
    assert lib.source("Kerberoast Rubeus") is lib.sources["6cf9a926-177d-480d-927d-9b44ee72f95a"]
    look = lib.planner_definition("254c7035-de7d-4d76-a888-2c09ba594eca")  # its file's id ends in .yml
    assert look is not None and look.runs_as == "look_ahead"
    assert look.params == {"ability_rewards": {"4e97e699-93d7-4040-b5a3-2e906a58199e": 5}}
    sequential = lib.planner_definition("sequential")
    assert sequential is not None and sequential.stopping_conditions == (("host.user.password", "blah"),)
    stage = lib.objective("Stage files")
    goals = [(g.target, g.operator, g.count) for g in stage.goals]
    assert goals == [("host.dir.staged", "*", 2), ("host.user.name", "==", 1)]


def test_goal_operators_follow_caldera_goal_value_on_the_left() -> None:
    facts = [("n", "5"), ("p", "/etc/passwd"), ("u", "root"), ("u", "alice")]
    assert Goal("n", "3", 1, "<").satisfied(facts)  # 3 < 5
    assert not Goal("n", "7", 1, "<").satisfied(facts)
    assert Goal("n", "10", 1, ">").satisfied(facts)  # numbers compare as numbers: 10 > 5
    assert Goal("p", "etc", 1, "in").satisfied(facts)
    assert Goal("u", "", 2, "*").satisfied(facts) and not Goal("u", "", 3, "*").satisfied(facts)
    assert Goal("u", "root").satisfied(facts) and not Goal("u", "bob").satisfied(facts)
    objective = Objective("o", "o", (Goal("u", "root"), Goal("n", "5", 1, "<=")))
    assert objective.met(facts) and objective.percentage(facts) == 100.0
    assert Objective("o", "o", (Goal("u", "root"), Goal("u", "bob"))).percentage(facts) == 50.0
    never = Objective("d", "default", (Goal("exhaustion", "complete", 2**20),))
    assert not never.met(facts)


def _line(source: str) -> tuple[ParserConfig, ...]:
    return (ParserConfig("line", source),)


def test_an_operation_ends_as_soon_as_its_objective_is_met() -> None:
    abilities = {
        "who": ability("who", command="whoami", parsers=_line("host.user.name")),
        "later": ability("later", command="echo later"),
    }
    objective = Objective("o", "root known", (Goal("host.user.name", "root"),))
    op = operation(("who", "later"), abilities, objective=objective)
    op.add_agent(agent())
    ran = Harness(op).run_all(outputs={"who": "root\n"})
    assert [lk.ability_id for lk in ran] == ["who"]  # `later` never ran: the objective was met first
    assert op.end_reason == "objective met: root known" and op.done
    # Not met: the operation runs its adversary out, as with Caldera's default objective.
    op = operation(("who", "later"), abilities, objective=objective)
    op.add_agent(agent())
    ran = Harness(op).run_all(outputs={"who": "alice\n"})
    assert [lk.ability_id for lk in ran] == ["who", "later"] and op.end_reason == ""


def test_a_planner_definitions_stopping_condition_ends_the_operation() -> None:
    abilities = {
        "who": ability("who", command="whoami", parsers=_line("host.user.name")),
        "later": ability("later", command="echo later"),
    }
    op = operation(("who", "later"), abilities, stopping_conditions=(("host.user.name", "root"),))
    op.add_agent(agent())
    ran = Harness(op).run_all(outputs={"who": "root\n"})
    assert [lk.ability_id for lk in ran] == ["who"]
    assert op.end_reason == "stopping condition met: host.user.name = root"


def test_look_ahead_runs_the_ability_whose_followers_reward_most() -> None:
    abilities = {
        "plain": ability("plain", command="echo plain"),
        "finder": ability("finder", command="echo x", parsers=_line("found.thing")),
        "user": ability("user", command="echo #{found.thing}"),
    }
    op = operation(("plain", "finder", "user"), abilities)
    op.planner = LookAheadPlanner(ability_rewards={"user": 5})
    op.add_agent(agent())
    assert op.planner.rewards(op, "p1") == [("finder", 5.5), ("user", 5.0), ("plain", 1.0)]
    ran = Harness(op).run_all(outputs={"finder": "val\n"})
    # Atomic would run `plain` first; look-ahead runs `finder` (1 + 0.9 x 5), then what it unlocked.
    assert [lk.ability_id for lk in ran if not lk.cleanup] == ["finder", "user", "plain"]
    assert ran[1].plaintext_command == "echo val"
    # Depth 0: nothing counts beyond the ability itself, so ties keep the adversary's order.
    shallow = LookAheadPlanner(ability_rewards={"user": 5}, depth=0)
    assert shallow.rewards(op, "p1")[1:] == [("plain", 1.0), ("finder", 1.0)]


def test_look_ahead_runs_one_link_at_a_time_across_agents() -> None:
    abilities = {"a": ability("a", command="echo a"), "b": ability("b", command="echo b")}
    op = operation(("a", "b"), abilities)
    op.planner = planner("look ahead")  # Caldera's name for it
    op.add_agent(agent("p1"))
    op.add_agent(agent("p2"))
    harness = Harness(op)
    harness.advance()
    assert sum(1 for lk in op.links if lk.in_flight) == 1


def test_guided_heads_for_the_goal_and_stops_when_it_is_met() -> None:
    abilities = {
        "side": ability("side", command="echo side", parsers=_line("side.trait")),
        "noise": ability("noise", command="echo noise"),
        "step1": ability("step1", command="echo one", parsers=_line("x.value")),
        "step2": ability("step2", command="echo #{x.value}", parsers=_line("host.goal")),
        "after": ability("after", command="echo after", parsers=_line("other")),
    }
    objective = Objective("g", "goal", (Goal("host.goal", "", 1, "*"),))
    op = operation(("side", "noise", "step1", "step2", "after"), abilities, objective=objective)
    op.planner = GuidedPlanner()
    op.add_agent(agent())
    guided = op.planner
    assert isinstance(guided, GuidedPlanner)
    table, goal_actions = guided.distances(guided.graph(op), ["host.goal"])
    assert table == {"step2": 2.0, "step1": 1.0} and goal_actions == ["step2"]  # closest scores highest
    ran = Harness(op).run_all(outputs={"step1": "v\n", "step2": "reached\n"})
    # `noise` (no outputs, before step1 in the order) goes with step1 as a supporting link, as in Caldera;
    # `side` and `after` lead nowhere near the goal and never run; the met goal ends the operation.
    assert [lk.ability_id for lk in ran] == ["noise", "step1", "step2"]
    assert op.end_reason == "objective met: goal"


def test_guided_without_an_objective_infers_terminal_goals() -> None:
    abilities = {
        "a": ability("a", command="echo a", parsers=_line("t.a")),
        "b": ability("b", command="echo #{t.a}"),
    }
    op = operation(("a", "b"), abilities)
    op.planner = planner("guided", {"half_life_gain": 3, "goal_weight": 2})
    op.add_agent(agent())
    ran = Harness(op).run_all(outputs={"a": "val\n"})
    assert [lk.ability_id for lk in ran if not lk.cleanup] == ["a", "b"]
    assert op.planner.params["half_life_gain"] == 3.0
    with pytest.raises(EmulationError, match="unknown parameter"):
        planner("guided", {"half_life": 3})
    with pytest.raises(EmulationError, match="takes no parameters"):
        planner("atomic", {"depth": 1})


def test_learning_parsers_find_addresses_paths_and_users() -> None:
    out = "inet 10.1.2.3/24 brd 10.1.2.255; 999.1.1.1; see /etc/passwd, https://a.example/c/d uid=1000(alice)"
    assert learn(out) == [
        ("host.ip.address", "10.1.2.3"),
        ("host.ip.address", "10.1.2.255"),
        ("host.file.path", "/etc/passwd"),
        ("host.user.name", "alice"),
    ]
    assert learn("nothing here, 1.2.3 and / alone") == []


def test_learning_parsers_run_only_where_the_ability_has_no_parser_and_the_operation_wants_them() -> None:
    output = "addr 192.0.2.7 file /var/log/syslog uid=0(root)\n"
    abilities = {
        "bare": ability("bare", command="echo bare"),
        "parsed": ability("parsed", command="echo parsed", parsers=_line("only.this")),
    }
    op = operation(("bare", "parsed"), abilities)
    op.add_agent(agent())
    Harness(op).run_all(outputs={"bare": output, "parsed": "kept\n192.0.2.99\n"})
    learned = {(f.trait, f.value): f for f in op.facts}
    fact = learned[("host.ip.address", "192.0.2.7")]
    assert fact.origin_type is OriginType.LEARNED and fact.links == [op.links[0].id]
    assert ("host.file.path", "/var/log/syslog") in learned and ("host.user.name", "root") in learned
    assert ("host.ip.address", "192.0.2.99") not in learned  # `parsed` has its own parser
    assert ("only.this", "kept") in learned
    off = operation(("bare",), abilities, use_learning_parsers=False)
    off.add_agent(agent())
    Harness(off).run_all(outputs={"bare": output})
    assert off.facts == []


def test_the_service_resolves_sources_planners_and_objectives_by_id_or_name() -> None:
    library = load_paths([CHECKOUT]).library
    service = OperationService(MemoryLedger(), library, clock=lambda: 1000.0, timer=False)

    def start(**settings: object) -> object:
        planner_id = str(settings.pop("planner", "atomic"))
        return service.start_operation(
            name="t", adversary_id=HARMLESS_ADVERSARY, agents=[], planner_id=planner_id,
            settings=OperationSettings(**settings),  # type: ignore[arg-type]
        )  # fmt: skip

    op = start(source_id="basic", planner="look ahead")
    assert op.source_id == BASIC_SOURCE_ID and op.planner.name == "look_ahead"  # type: ignore[attr-defined]
    assert op.planner.params["ability_rewards"] == {"4e97e699-93d7-4040-b5a3-2e906a58199e": 5.0}  # type: ignore[attr-defined]
    assert {f.value for f in op.facts} == {"wav", "yml", "png"}  # type: ignore[attr-defined]
    staged = start(objective_id="Stage files", planner="aaa7c857-37a0-4c4a-85f7-4e9f7f30e31a")
    assert staged.objective.id == "7ac9ef07-defa-4d09-87c0-2719868efbb5"  # type: ignore[attr-defined]
    guided = start(planner="5bdec528-07ce-44cc-8997-09fe41aa2007")
    assert guided.planner.name == "guided"  # type: ignore[attr-defined]
    with pytest.raises(EmulationError, match="no implementation of its module") as err:
        start(planner="naive bayes")
    assert err.value.source is not None and err.value.source.field == "planner.id"
    with pytest.raises(EmulationError, match=r"unknown fact source 'nope'; known: .*basic"):
        start(source_id="nope")
    with pytest.raises(EmulationError, match="unknown objective"):
        start(objective_id="nope")
