"""Caldera content loading: both ability shapes, adversaries, the built-in library, and bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from assay.content import (
    BUILTIN_ADVERSARY_ID,
    Privilege,
    Safety,
    load_builtin,
    load_paths,
)
from assay.errors import ContentError

V0 = """\
- id: 3b5db901-2cb8-4df7-8043-c4628a6a5d5a
  name: Find files
  description: find stuff
  tactic: Collection
  technique:
    attack_id: t1562.001
    name: Impair Defenses
  privilege: Elevated
  platforms:
    darwin,linux:
      sh,bash:
        command: find / -name '#{file.sensitive.extension}'
        cleanup:
          - rm -f x
          - rm -f y
        timeout: 90
        parsers:
          plugins.stockpile.app.parsers.basic:
            - source: host.file.path
              edge: has_extension
              target: file.sensitive.extension
  requirements:
    - plugins.stockpile.app.requirements.paw_provenance:
        - source: host.file.path
"""

V1 = """\
- id: 9f2b5f1c-5a5e-4a8e-9a1e-8c5e8b0e6e11
  name: Whoami
  tactic: discovery
  technique_id: T1033
  technique_name: System Owner/User Discovery
  safety: safe
  executors:
    - name: sh
      platform: linux
      command: whoami
      parsers:
        - module: plugins.stockpile.app.parsers.basic
          parserconfigs:
            - source: host.user.name
    - name: psh
      platform: windows
      command: whoami
  requirements:
    - module: plugins.stockpile.app.requirements.basic
      relationship_match:
        - source: a
          edge: b
"""

ADVERSARY = """\
id: 1a2b
name: Two steps
atomic_ordering:
  - 3b5db901-2cb8-4df7-8043-c4628a6a5d5a
  - 9f2b5f1c-5a5e-4a8e-9a1e-8c5e8b0e6e11
  - does-not-exist
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_v0_platforms_form_fans_out_comma_keys_and_normalizes_the_technique(tmp_path: Path) -> None:
    _write(tmp_path, "a.yml", V0)
    result = load_paths([tmp_path])
    assert not result.errors
    ability = result.library.abilities["3b5db901-2cb8-4df7-8043-c4628a6a5d5a"]
    assert ability.technique_id == "T1685"  # v18 ID moved forward to v19
    assert ability.tactic == "collection"
    assert ability.privilege is Privilege.ELEVATED
    assert sorted((e.platform, e.name) for e in ability.executors) == [
        ("darwin", "bash"),
        ("darwin", "sh"),
        ("linux", "bash"),
        ("linux", "sh"),
    ]
    sh = ability.executors_for("linux")[0]
    assert sh.cleanup == ("rm -f x", "rm -f y")
    assert sh.timeout == 90
    assert sh.parsers[0].module == "plugins.stockpile.app.parsers.basic"
    assert (sh.parsers[0].source, sh.parsers[0].edge, sh.parsers[0].target) == (
        "host.file.path",
        "has_extension",
        "file.sensitive.extension",
    )
    assert ability.requirements[0].module == "plugins.stockpile.app.requirements.paw_provenance"
    assert ability.origin is not None and ability.origin.line == 1


def test_v1_executors_form(tmp_path: Path) -> None:
    _write(tmp_path, "b.yaml", V1)
    result = load_paths([tmp_path])
    assert not result.errors
    ability = result.library.abilities["9f2b5f1c-5a5e-4a8e-9a1e-8c5e8b0e6e11"]
    assert ability.platforms == ("linux", "windows")
    assert ability.safety is Safety.SAFE
    assert ability.executors[0].parsers[0].source == "host.user.name"
    assert ability.requirements[0].relationships == ({"source": "a", "edge": "b"},)


def test_adversary_and_its_missing_abilities(tmp_path: Path) -> None:
    _write(tmp_path, "abilities/a.yml", V0)
    _write(tmp_path, "abilities/b.yml", V1)
    _write(tmp_path, "adversaries/x.yml", ADVERSARY)
    result = load_paths([tmp_path])
    adversary = result.library.adversaries["1a2b"]
    assert adversary.atomic_ordering[:2] == (
        "3b5db901-2cb8-4df7-8043-c4628a6a5d5a",
        "9f2b5f1c-5a5e-4a8e-9a1e-8c5e8b0e6e11",
    )
    assert result.library.missing_abilities(adversary) == ["does-not-exist"]


def test_legacy_phases_flatten_in_phase_order(tmp_path: Path) -> None:
    _write(tmp_path, "adv.yml", "id: p\nname: P\nphases:\n  2: [c]\n  1: [a, b]\n")
    result = load_paths([tmp_path])
    assert result.library.adversaries["p"].atomic_ordering == ("a", "b", "c")


def _only_error(tmp_path: Path) -> ContentError:
    result = load_paths([tmp_path])
    assert len(result.errors) == 1, [str(e) for e in result.errors]
    error = result.errors.errors[0]
    assert isinstance(error, ContentError)
    return error


def test_malformed_yaml_names_file_and_line_and_the_rest_still_loads(tmp_path: Path) -> None:
    _write(tmp_path, "good.yml", V1)
    bad = _write(tmp_path, "bad.yml", "- id: x\n  name: [unclosed\n  tactic: discovery\n")
    result = load_paths([tmp_path])
    assert "9f2b5f1c-5a5e-4a8e-9a1e-8c5e8b0e6e11" in result.library.abilities
    assert len(result.errors) == 1
    error = result.errors.errors[0]
    assert error.source is not None and error.source.file == str(bad)
    assert error.source.line is not None and error.source.line >= 2
    assert str(error).startswith(f"{bad}:")
    assert "malformed YAML" in str(error)


def test_unknown_executor_names_line_and_field(tmp_path: Path) -> None:
    text = V1.replace("name: psh", "name: powershellz")
    path = _write(tmp_path, "x.yml", text)
    error = _only_error(tmp_path)
    assert "unknown executor 'powershellz'" in error.message
    assert error.source is not None
    assert error.source.file == str(path)
    assert error.source.line == text.splitlines().index("    - name: powershellz") + 1
    assert error.source.field == "executors[1].name"


def test_unknown_executor_in_v0_platforms(tmp_path: Path) -> None:
    _write(tmp_path, "x.yml", V0.replace("sh,bash:", "sh,fish:"))
    error = _only_error(tmp_path)
    assert "unknown executor 'fish'" in error.message
    assert error.source is not None and error.source.line == 11
    assert error.source.field == "platforms.darwin,linux.sh,fish"


@pytest.mark.parametrize(
    ("drop", "field"),
    [
        ("  technique_id: T1033\n", "technique_id"),
        ("- id: 9f2b5f1c-5a5e-4a8e-9a1e-8c5e8b0e6e11\n  name", "id"),
    ],
)
def test_missing_field_is_named(tmp_path: Path, drop: str, field: str) -> None:
    text = V1.replace(drop, "" if field != "id" else "- name")
    _write(tmp_path, "x.yml", text)
    error = _only_error(tmp_path)
    assert error.source is not None and error.source.field == field
    assert f"missing required field '{field}'" in error.message
    assert error.source.line == 1


def test_missing_command_and_bad_technique(tmp_path: Path) -> None:
    _write(tmp_path, "a.yml", V1.replace("      command: whoami\n      parsers", "      parsers"))
    _write(tmp_path, "b.yml", V0.replace("t1562.001", "T15").replace("3b5db901", "00000000"))
    result = load_paths([tmp_path])
    messages = sorted(str(e) for e in result.errors)
    assert len(messages) == 2
    assert re.search(r"a\.yml:8, field 'linux\.sh\.command': missing required field 'command'", messages[0])
    assert re.search(r"b\.yml:6, field 'technique\.attack_id': not an ATT&CK technique ID", messages[1])


def test_one_bad_ability_in_a_list_does_not_hide_its_neighbours(tmp_path: Path) -> None:
    bad = (
        "- id: broken\n  technique_id: T1082\n"
        "  executors: [{name: sh, platform: linux, timeout: -1, command: x}]\n"
    )
    _write(tmp_path, "x.yml", bad + V1)
    result = load_paths([tmp_path])
    assert list(result.library.abilities) == ["9f2b5f1c-5a5e-4a8e-9a1e-8c5e8b0e6e11"]
    assert "'timeout' must be a positive integer" in str(result.errors.errors[0])


def test_duplicate_ids_and_unrecognised_files_are_errors(tmp_path: Path) -> None:
    _write(tmp_path, "a.yml", V1)
    _write(tmp_path, "b.yml", V1)
    _write(tmp_path, "c.yml", "hello: world\n")
    result = load_paths([tmp_path])
    messages = [str(e) for e in result.errors]
    assert any("duplicate ability id" in m and "a.yml:1" in m for m in messages)
    assert any("c.yml:1" in m and "not Caldera content" in m for m in messages)


def test_missing_name_is_a_warning_not_an_error(tmp_path: Path) -> None:
    _write(tmp_path, "a.yml", V1.replace("  name: Whoami\n", ""))
    result = load_paths([tmp_path])
    assert not result.errors
    assert result.library.abilities["9f2b5f1c-5a5e-4a8e-9a1e-8c5e8b0e6e11"].name == "auto-generated"
    assert [w.source.field for w in result.errors.warnings if w.source] == ["name"]


EXPECTED_BUILTIN = {
    "T1082": "discovery",
    "T1033": "discovery",
    "T1057": "discovery",
    "T1087.001": "discovery",
    "T1518.001": "discovery",
    "T1016": "discovery",
    "T1049": "discovery",
    "T1546.004": "persistence",
    "T1543.002": "persistence",
    "T1552.004": "credential-access",
    "T1552.003": "credential-access",
    "T1070.003": "defense-evasion",
    "T1140": "defense-evasion",
    "T1222.002": "defense-evasion",
    "T1560.001": "collection",
    "T1048.003": "exfiltration",
    "T1059.006": "execution",
}


def test_builtin_library_keeps_architecture_section_8_and_its_first_round() -> None:
    result = load_builtin()
    assert not result.errors, [str(e) for e in result.errors]
    library = result.library
    first_round = library.adversaries[BUILTIN_ADVERSARY_ID]
    assert not library.missing_abilities(first_round)
    in_round = {
        library.abilities[a].technique_id: library.abilities[a].tactic for a in first_round.atomic_ordering
    }
    assert in_round == EXPECTED_BUILTIN
    for ability in library.abilities.values():
        assert ability.safety in (Safety.SAFE, Safety.DISRUPTIVE), ability.id
        assert ability.platforms == ("linux",)
        if ability.safety is Safety.SAFE and ability.privilege is not None:
            assert ability.privilege is Privilege.ELEVATED


def test_builtin_abilities_that_write_clean_up_in_their_own_temp_dir() -> None:
    library = load_builtin().library
    for ability in library.abilities.values():
        (executor,) = ability.executors
        if "mkdir" in executor.command and ability.safety is Safety.SAFE:  # disruptive ones may touch /etc
            assert executor.cleanup, ability.technique_id
            assert all("assay-#{paw}" in c for c in executor.cleanup)
            assert 'base="${TMPDIR:-/tmp}/assay-#{paw}"' in executor.command


BUILTINS = {"read", "echo", "case", "esac", "while", "do", "done", "if", "then", "fi", "[", "continue"}


def test_t1016_uses_shell_builtins_only_and_writes_nothing() -> None:
    library = load_builtin().library
    ability = library.abilities["464ae1b9-7b57-4289-b73c-1d2e8d255a0d"]  # the §8 one; another T1016 uses ip
    assert ability.technique_id == "T1016"
    (executor,) = ability.executors
    assert executor.name == "sh"
    assert ">" not in executor.command.replace("< ", "")  # only input redirection
    for line in executor.command.splitlines():
        first = line.strip().split()[0] if line.strip() else ""
        assert first in BUILTINS | {"nameserver|search|domain)"}, line
