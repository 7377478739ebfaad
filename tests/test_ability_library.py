"""The built-in library: its size and shape (issue 3), its profiles, and every safe ability run for real on
this host through the agent's own runner, then its cleanup, leaving nothing behind.

Only ``safe`` abilities run here (docs/coverage.md): they work in a temporary directory they create, talk only
to loopback or to namespaces they create, stop what they start, and clean up. ``disruptive`` ones are only
checked for shell syntax. Abilities that need root are run when the tests run as root.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from assay import attack
from assay.agent import Runner
from assay.content import Ability, Privilege, Safety, load_builtin
from assay.emulation import Agent, agent_globals, fill, prerequisite_failure

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = load_builtin().library
ABILITIES = sorted(LIBRARY.abilities.values(), key=lambda a: a.id)
PROFILES = {
    "discovery": "Linux discovery",
    "persistence": "Linux persistence",
    "credential-access": "Linux credential access",
    "defense-evasion": "Linux defense evasion",
}


def _coverage() -> set[str]:
    text = (ROOT / "docs" / "coverage.md").read_text()
    return set(re.findall(r"^\| (T\d{4}(?:\.\d{3})?) \|", text, re.MULTILINE))


def test_size_and_shape_of_the_library() -> None:
    assert len(ABILITIES) >= 100
    techniques = {a.technique_id for a in ABILITIES}
    tactics = {a.tactic for a in ABILITIES}
    assert len(techniques) >= 80 and len(tactics) >= 10
    assert _coverage() <= techniques, sorted(_coverage() - techniques)
    safety = Counter(a.safety for a in ABILITIES)
    assert (
        set(safety) <= {Safety.SAFE, Safety.DISRUPTIVE} and safety[Safety.SAFE] >= 95
    )  # nothing destructive
    for ability in ABILITIES:
        known = attack.catalogue().get(ability.technique_id)
        assert known is not None and ability.technique_name.endswith(known.name), ability.id
        assert ability.platforms == ("linux",) and ability.description, ability.id
        (executor,) = ability.executors
        if 'base="${TMPDIR:-/tmp}/assay-#{paw}"' in executor.command:  # it makes a work dir: it removes it
            assert executor.cleanup and all("assay-#{paw}" in c for c in executor.cleanup), ability.id
    counts = {str(k): v for k, v in safety.items()}
    shape = f"{len(ABILITIES)} abilities, {len(techniques)} techniques, {len(tactics)} tactics"
    print(f"\nlibrary: {shape}, {counts}")


def test_profiles_for_each_tactic_and_the_full_validation() -> None:
    by_name = {adv.name: adv for adv in LIBRARY.adversaries.values()}
    for tactic, name in PROFILES.items():
        profile = by_name[name]
        expected = {a.id for a in ABILITIES if a.tactic == tactic}
        assert set(profile.atomic_ordering) == expected, name
    full = by_name["Linux full validation"]
    assert sorted(full.atomic_ordering) == sorted(a.id for a in ABILITIES if a.safety is Safety.SAFE)
    order = [LIBRARY.abilities[i].tactic for i in full.atomic_ordering]
    ranks = [attack.TACTIC_ORDER.index(t) for t in order]
    assert ranks == sorted(ranks)  # kill-chain order
    for adversary in LIBRARY.adversaries.values():
        assert not LIBRARY.missing_abilities(adversary), adversary.name


def _script(ability: Ability, command: str, paw: str, tmp: Path) -> str:
    filled, missing = fill(command, agent_globals(Agent(paw)), ability.executors[0].name)
    assert not missing, (ability.id, missing)
    if ability.executors[0].name in ("sh", "bash"):
        return f"TMPDIR='{tmp}'; export TMPDIR\n{filled}"
    return filled


def _run(ability: Ability, tmp: Path) -> str | None:
    """Run one ability and its cleanup as the agent would; the reason it failed, or None."""
    runner = Runner()
    (executor,) = ability.executors
    paw = "lib" + ability.id[:8]
    outcome = runner.run(executor.name, _script(ability, executor.command, paw, tmp), executor.timeout)
    problems = []
    unmet = prerequisite_failure(outcome.exit_code, outcome.stderr)
    if unmet:
        print(f"\n{ability.technique_id} {ability.name}: not run on this host, {unmet}")
    elif outcome.status != 0:
        problems.append(f"exit {outcome.exit_code}: {outcome.stderr[-600:]} {outcome.stdout[-300:]}")
    for command in executor.cleanup:
        done = runner.run(executor.name, _script(ability, command, paw, tmp), executor.timeout)
        if done.status != 0:
            problems.append(f"cleanup exit {done.exit_code}: {done.stderr[-300:]}")
    if (tmp / f"assay-{paw}").exists():
        problems.append(f"left {sorted(str(p) for p in (tmp / f'assay-{paw}').rglob('*'))[:5]}")
    return "; ".join(problems) or None


def _runnable() -> list[Ability]:
    root = os.geteuid() == 0
    return [
        a for a in ABILITIES if a.safety is Safety.SAFE and (root or a.privilege is not Privilege.ELEVATED)
    ]


@pytest.mark.slow
def test_every_safe_ability_runs_for_real_and_cleans_up(tmp_path: Path) -> None:
    abilities = _runnable()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda a: (a, _run(a, tmp_path)), abilities))
    failures = {f"{a.technique_id} {a.name}": why for a, why in results if why}
    assert not failures, "\n".join(f"{k}: {v}" for k, v in failures.items())
    assert list(tmp_path.iterdir()) == []
    print(f"\nran {len(abilities)} safe abilities and their cleanups on this host")


def test_disruptive_abilities_are_valid_shell_and_restore_in_cleanup() -> None:
    disruptive = [a for a in ABILITIES if a.safety is Safety.DISRUPTIVE]
    assert len(disruptive) >= 4
    for ability in disruptive:
        (executor,) = ability.executors
        assert executor.cleanup, ability.id
        for text in (executor.command, *executor.cleanup):
            check = subprocess.run(
                [executor.name, "-n"], input=text, capture_output=True, text=True, check=False
            )
            assert check.returncode == 0, (ability.id, check.stderr)
