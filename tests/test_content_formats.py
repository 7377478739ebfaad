"""Content formats against real files: stockpile-format samples written for these tests
(tests/data/stockpile), the shared Atomic Red Team corpus read from ../shared, and `assay content check` as a
user runs it."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from assay.content import Adversary, Privilege, RuleAction, Safety, load_paths, needs_network
from assay.emulation import (
    LinkStatus,
    Operation,
    OperationState,
    Result,
    SkipReason,
    planner,
    with_prerequisites,
)
from emulation_helpers import Harness, agent

DATA = Path(__file__).resolve().parent / "data" / "stockpile"
V0_ID = "5d2c8e1a-0b7f-4c3e-9a61-2f0e8d4b7c10"
V1_ID = "a7f3b9c2-1e4d-4f6a-8b2c-9d0e1f2a3b4c"
ADV_ID = "7b1e2f3a-4c5d-4e6f-8a9b-0c1d2e3f4a5b"
SRC_ID = "3e4f5a6b-7c8d-4e9f-8a0b-1c2d3e4f5a6b"


def test_stockpile_v0_ability_loads_every_key_unmodified() -> None:
    result = load_paths([DATA])
    ability = result.library.abilities[V0_ID]
    assert (ability.name, ability.tactic, ability.technique_id) == (
        "Compress staged directory",
        "collection",
        "T1560.001",
    )
    assert ability.technique_name == "Archive Collected Data: Archive via Utility"
    assert ability.description.startswith("Compresses a staged directory")
    assert sorted((e.platform, e.name) for e in ability.executors) == [
        ("darwin", "bash"), ("darwin", "sh"), ("linux", "bash"), ("linux", "sh"),
    ]  # fmt: skip
    sh = ability.executors_for("linux")[0]
    assert sh.cleanup == ("rm -f #{host.dir.staged}.tar.gz",)
    assert (sh.payloads, sh.uploads, sh.timeout) == (("collector.sh",), ("loot.txt",), 120)
    assert (sh.parsers[0].source, sh.parsers[0].edge, sh.parsers[0].target) == (
        "host.dir.staged", "has_compressed_file", "host.dir.compress",
    )  # fmt: skip
    assert ability.requirements[0].module.endswith("paw_provenance")
    assert ability.requirements[0].relationships == ({"source": "host.dir.staged"},)
    assert ability.privilege is Privilege.ELEVATED
    assert (ability.repeatable, ability.singleton, ability.delete_payload) == (True, False, False)
    assert ability.buckets == ("collection", "staging")
    assert ability.access == {"red": True}
    assert ability.additional_info == {"author": "assay-tests", "x_custom_field": "kept but unknown"}
    (warning,) = [w for w in result.errors.warnings if w.source and w.source.field == "x_custom_field"]
    assert warning.source is not None and warning.source.line == 44


def test_stockpile_v1_ability_adversary_and_source() -> None:
    result = load_paths([DATA])
    lib = result.library
    v1 = lib.abilities[V1_ID]
    assert (v1.technique_id, v1.technique_name, v1.singleton) == (
        "T1083",
        "File and Directory Discovery",
        True,
    )
    assert v1.platforms == ("linux", "windows")
    assert v1.executors_for("windows") == ()  # built by Caldera's builder plugin: loaded, never run
    psh = v1.unsupported_for("windows")[0]
    assert psh.additional_info["language"] == "csharp" and "code" in psh.additional_info
    assert "builder plugin" in psh.unsupported and "language csharp" in psh.unsupported
    assert v1.executors_for("linux")[0].additional_info["variations"][0]["description"] == "deeper"
    assert v1.requirements[0].relationships == ({"source": "host.dir.staged", "edge": "has_compressed_file"},)
    adversary = lib.adversaries[ADV_ID]
    assert (
        adversary.tags == ("collection", "test")
        and adversary.objective == "495a9828-cab1-44dd-a0ca-66e58177d8cc"
    )
    assert adversary.additional_info == {"color": "red"} and adversary.plugin == "stockpile"
    assert lib.missing_abilities(adversary) == ["99999999-9999-4999-8999-999999999999"]
    source = lib.sources[SRC_ID]
    assert [(f.trait, f.value, f.score) for f in source.facts][1] == ("host.dir.staged", "/tmp/staged-b", 5)
    assert [r.action for r in source.rules] == [RuleAction.DENY, RuleAction.ALLOW]
    assert source.relationships[0].target == ("host.user.name", "alice")
    assert (source.adjustments[0].ability_id, source.adjustments[0].offset) == (V0_ID, 15)
    # One bad ability in a list is an error naming its line and field; its neighbours load.
    (error,) = result.errors.errors
    assert error.source is not None and error.source.line == 39 and error.source.field == "linux.sh.command"
    assert "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f" not in lib.abilities


def test_bad_fact_sources_name_line_and_field(tmp_path: Path) -> None:
    (tmp_path / "s.yml").write_text(
        "id: s\nname: s\nfacts:\n  - trait: a\n    value: 1\n"
        "rules:\n  - action: DENY\n    trait: x\n    match: '*.255'\n"
    )
    (error,) = load_paths([tmp_path]).errors.errors
    assert error.source is not None and (error.source.line, error.source.field) == (9, "rules[0].match")
    assert "not a regular expression or an address/CIDR" in error.message


def _run_check(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", "from assay.cli import main; main()", "content", "check", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_content_check_json_shape_and_exit_code(tmp_path: Path) -> None:
    done = _run_check(str(DATA), "--json")
    assert done.returncode == 1  # the broken ability
    data = json.loads(done.stdout)
    assert set(data) == {"abilities", "adversaries", "sources", "objectives", "planners", "skips", "counts",
                         "errors", "warnings"}  # fmt: skip
    v0 = next(a for a in data["abilities"] if a["id"] == V0_ID)
    assert v0 == {
        "id": V0_ID,
        "name": "Compress staged directory",
        "technique_id": "T1560.001",
        "platforms": ["darwin", "linux"],
        "executors": ["sh", "bash"],
    }
    (adv,) = data["adversaries"]
    assert set(adv) == {"id", "name", "abilities", "missing_abilities"}
    assert adv["missing_abilities"] == ["99999999-9999-4999-8999-999999999999"]
    (error,) = data["errors"]
    assert set(error) == {"file", "line", "message"} and error["line"] == 39
    assert error["file"].endswith("a7f3b9c2-1e4d-4f6a-8b2c-9d0e1f2a3b4c.yml")
    assert all(set(w) == {"file", "line", "message"} for w in data["warnings"])
    good = tmp_path / "good"
    good.mkdir()
    (good / "a.yml").write_text((DATA / "abilities/collection" / f"{V0_ID}.yml").read_text())
    text = _run_check(str(good))
    assert text.returncode == 0, text.stderr
    assert "abilities: 1 loaded" in text.stdout and "0 error(s), 1 warning(s)" in text.stdout
    assert f"{good / 'a.yml'}:44: field 'x_custom_field'" in text.stdout
    missing = _run_check(str(tmp_path / "nope.yml"))
    assert missing.returncode == 1 and "nope.yml: cannot read" in missing.stderr


def test_atomic_red_team_corpus_imports_with_zero_errors(atomic_corpus: Path) -> None:
    result = load_paths([atomic_corpus])
    assert not result.errors, [str(e) for e in result.errors][:5]
    lib = result.library
    skipped = [w for w in result.errors.warnings if "skipped test" in w.message]
    assert result.loaded["atomic tests"] == len(lib.abilities) > 200
    assert all("powershell" in w.message or "manual" in w.message for w in skipped)
    assert {a.executors[0].name for a in lib.abilities.values()} <= {"sh", "bash"}
    assert all(
        a.tactic and a.technique_id.startswith("T") and a.safety is not None and a.safety_reason
        for a in lib.abilities.values()
    )
    with_deps = [a for a in lib.abilities.values() if a.dependencies]
    assert with_deps and any(d.needs_network for a in with_deps for d in a.dependencies)
    assert any(a.privilege is Privilege.ELEVATED for a in lib.abilities.values())
    assert not any("PathToAtomicsFolder" in e.command for a in lib.abilities.values() for e in a.executors)
    print(f"\nART: {len(lib.abilities)} tests imported, {len(skipped)} skipped with a reason, 0 errors")


ART = """\
attack_technique: T1053.003
display_name: 'Scheduled Task/Job: Cron'
atomic_tests:
- name: Local prerequisite, then the test
  auto_generated_guid: 11111111-1111-4111-8111-111111111111
  description: d
  supported_platforms: [linux, macos]
  input_arguments:
    out:
      description: where
      type: path
      default: /tmp/assay-art-out
    word:
      description: what
      type: string
      default: hello world
  dependency_executor_name: bash
  dependencies:
  - description: the marker file exists
    prereq_command: 'test -f #{out}.marker'
    get_prereq_command: 'touch #{out}.marker'
  executor:
    name: sh
    elevation_required: false
    command: |
      echo "#{word}" > #{out}
      cat PathToAtomicsFolder/../README 2>/dev/null || true
    cleanup_command: 'rm -f #{out} #{out}.marker'
- name: Needs a download
  auto_generated_guid: 22222222-2222-4222-8222-222222222222
  description: d
  supported_platforms: [linux]
  dependencies:
  - description: a tool from the internet
    prereq_command: command -v no-such-tool-assay
    get_prereq_command: curl -sSL https://example.invalid/tool -o /usr/local/bin/tool
  executor:
    name: bash
    elevation_required: true
    command: no-such-tool-assay
- name: Windows only
  auto_generated_guid: 33333333-3333-4333-8333-333333333333
  description: d
  supported_platforms: [windows]
  executor:
    name: powershell
    command: Get-Process
"""


def test_atomic_tests_become_abilities_with_arguments_dependencies_and_reasons(tmp_path: Path) -> None:
    path = tmp_path / "atomics" / "T1053.003" / "T1053.003.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(ART)
    result = load_paths([tmp_path])
    assert not result.errors
    lib = result.library
    local = lib.abilities["11111111-1111-4111-8111-111111111111"]
    assert (local.technique_id, local.technique_name, local.tactic) == (
        "T1053.003",
        "Scheduled Task/Job: Cron",
        "execution",
    )
    assert local.platforms == ("linux", "darwin") and local.privilege is None
    assert local.arguments["out"].default == "/tmp/assay-art-out" and local.arguments["word"].type == "string"
    assert f"cat {tmp_path / 'atomics'}/../README" in local.executors[0].command
    assert local.executors[0].cleanup == ("rm -f #{out} #{out}.marker",)
    assert local.dependency_executor == "bash" and not local.dependencies[0].needs_network
    remote = lib.abilities["22222222-2222-4222-8222-222222222222"]
    assert remote.privilege is Privilege.ELEVATED and remote.dependencies[0].needs_network
    (skip,) = result.errors.warnings
    assert (
        "Windows only" in skip.message
        and "powershell" in skip.message
        and skip.source.line == ART.splitlines().index("- name: Windows only") + 1
    )  # type: ignore[union-attr]
    assert (
        needs_network("apt-get -y install x")
        and needs_network("pip3 install y")
        and not needs_network("touch x")
    )


def test_atomic_prerequisites_run_for_real_and_a_network_one_ends_not_executed(tmp_path: Path) -> None:
    path = tmp_path / "atomics" / "T1053.003" / "T1053.003.yaml"
    path.parent.mkdir(parents=True)
    out = tmp_path / "out"
    path.write_text(ART.replace("/tmp/assay-art-out", str(out)))
    lib = load_paths([tmp_path]).library
    local, remote = (
        lib.abilities[i]
        for i in ("11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222")
    )
    script = (
        with_prerequisites(local, local.executors[0])
        .replace("#{out}", str(out))
        .replace("#{word}", "hello world")
    )
    done = subprocess.run(["sh"], input=script, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert (out.read_text(), Path(f"{out}.marker").exists()) == ("hello world\n", True)  # the getter ran
    # Through an operation: the network prerequisite is never fetched, and the link ends skipped.
    remote = dataclasses.replace(remote, safety=Safety.SAFE)
    op = Operation(
        "op", "op", Adversary("adv", "adv", (remote.id,)), planner("atomic"), abilities={remote.id: remote}
    )
    op.add_agent(agent(privilege=Privilege.ELEVATED, executors=("bash",)))
    h = Harness(op)
    h.advance()
    (link,) = h.deliver()
    done = subprocess.run(
        ["bash"], input=link.command, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 87
    op.on_result(Result(link.id, LinkStatus.ERROR, exit_code=done.returncode, stderr=done.stderr), h.now)
    assert link.status is LinkStatus.DISCARD and link.skip_reason_id is SkipReason.OTHER
    assert link.skip_reason == "prerequisite: (getting it needs the network): a tool from the internet"
    op.advance(h.now, h.new_id)
    assert op.state is OperationState.FINISHED  # nothing ran, so no cleanup is due


@pytest.mark.parametrize("flag", ["--json", ""])
def test_content_check_on_the_atomic_corpus_succeeds(atomic_corpus: Path, flag: str) -> None:
    done = _run_check(str(atomic_corpus), *([flag] if flag else []))
    assert done.returncode == 0, done.stderr[-2000:]
    if flag:
        assert json.loads(done.stdout)["errors"] == []
    else:
        assert "0 error(s)" in done.stdout


def test_malformed_requirements_phases_and_parser_traits_are_content_errors(tmp_path: Path) -> None:
    base = "- id: a\n  technique_id: T1082\n  executors: [{name: sh, platform: linux, command: x}]\n"
    (tmp_path / "r.yml").write_text(base + "  requirements: [{module: m, relationship_match: 5}]\n")
    (tmp_path / "p.yml").write_text(
        base.replace("- id: a", "- id: b").replace(
            "command: x}", "command: x, parsers: {m: [{source: {x: 1}}]}}"
        )
    )
    (tmp_path / "adv.yml").write_text("id: adv\nname: adv\nphases: {1: 5}\n")
    errors = sorted((e.source.field, e.message) for e in load_paths([tmp_path]).errors if e.source)
    assert errors == [
        ("linux.sh.parsers.m[0]", "a parser 'source' must be a trait name"),
        ("phases.1", "a phase must be a list of ability ids"),
        ("requirements[0].relationship_match", "must be a list of {source, edge, target} mappings"),
    ]
