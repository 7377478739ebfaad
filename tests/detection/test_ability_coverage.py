"""Issue 6: each built-in rule's technique is exercised by at least one built-in ability.

Abilities are read the way the product reads them: from the directories registered through the
``content_paths`` plugin hook, in Caldera's stockpile YAML (``technique: {attack_id}`` or ``technique_id``).
Until an ability library is registered this test is an expected failure that says so; it must not pass
without abilities to check (strict xfail: an unexpected pass fails the suite)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from assay import attack
from assay.detection import builtin_techniques
from assay.plugins import plugin_manager


def content_dirs() -> list[Path]:
    return [Path(p) for paths in plugin_manager().hook.content_paths() for p in paths]


def ability_techniques(dirs: list[Path]) -> set[str]:
    found: set[str] = set()
    for d in dirs:
        for path in sorted(d.rglob("*.y*ml")):
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                for item in doc if isinstance(doc, list) else [doc]:
                    tid = _technique(item)
                    if tid:
                        found.add(attack.normalize(tid))
    return found


def _technique(item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    tech = item.get("technique")
    if isinstance(tech, dict) and isinstance(tech.get("attack_id"), str):
        return str(tech["attack_id"])
    tid = item.get("technique_id")
    return tid if isinstance(tid, str) else None


@pytest.mark.xfail(
    condition=not content_dirs(),
    reason="no built-in ability library is registered through the content_paths hook yet (issue 3)",
    strict=True,
)
def test_every_builtin_rule_technique_is_exercised_by_a_builtin_ability() -> None:
    dirs = content_dirs()
    assert dirs, "no ability library is registered through the content_paths hook"
    exercised = ability_techniques(dirs)
    assert exercised, f"the registered content directories {dirs} hold no ability with a technique"
    missing = sorted(builtin_techniques() - exercised)
    assert missing == [], f"built-in rules cover techniques no built-in ability exercises: {missing}"


def test_the_reader_finds_techniques_in_both_caldera_formats(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(
        "- id: a\n  technique: {attack_id: T1562.001, name: x}\n"
        "- id: b\n  technique_id: T1082\n"
        "- id: c\n  name: no technique\n"
    )
    assert ability_techniques([tmp_path]) == {"T1685", "T1082"}
