from __future__ import annotations

import pytest

from assay import attack
from assay.errors import AttackError


@pytest.mark.parametrize(
    ("old", "new"),
    [("T1562.001", "T1685"), ("t1070.002", "T1685.006"), ("T1562.004", "T1686"), ("T1059.004", "T1059.004")],
)
def test_v18_ids_normalize_forward(old: str, new: str) -> None:
    assert attack.normalize(old) == new


def test_v19_techniques_are_known_with_names() -> None:
    assert attack.technique("T1685.006").name == "Clear Linux or Mac System Logs"
    assert attack.technique("T1562.001").id == "T1685"  # looked up through the rename map


def test_tags_and_bad_ids() -> None:
    assert attack.from_tag("attack.t1059.004") == "T1059.004"
    assert attack.from_tag("attack.execution") is None
    with pytest.raises(AttackError, match="not an ATT&CK technique ID"):
        attack.normalize("T15")
    with pytest.raises(AttackError, match="unknown ATT&CK technique"):
        attack.technique("T9999")


def test_subtechnique_parent_and_tactics() -> None:
    t = attack.technique("T1053.003")
    assert t.parent == "T1053" and t.is_subtechnique
    assert "persistence" in t.tactics
    assert attack.tactic("Credential Access").id == "TA0006"
