"""The whole built-in profile, once, on this host: "Linux full validation" (every safe built-in ability)
through `LocalRound` (what `assay demo` runs), with the real eBPF sensor and the built-in rules.

Each technique's outcome is held to `tests/data/full_validation_expected.yaml`: a detection that regresses
fails, and so does a miss that turns into something else (update the file with the change that made the
measurement more true; every expected miss there says why). No alert may be left unexplained by a link and
the sensor may drop nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from assay.cli._round import DEFAULT_ADVERSARY, LocalRound, RoundConfig, RoundResult
from assay.validation import Outcome

pytestmark = [pytest.mark.root, pytest.mark.kernel, pytest.mark.slow]

EXPECTED_FILE = Path(__file__).parent / "data" / "full_validation_expected.yaml"


def expected() -> dict[str, Outcome]:
    data: dict[str, Any] = yaml.safe_load(EXPECTED_FILE.read_text())
    out = {tid: Outcome.DETECTED for tid in data["detected"]}
    for tid, outcome in data["missed"].items():
        assert tid not in out, f"{tid} is both detected and missed in {EXPECTED_FILE.name}"
        out[tid] = Outcome(outcome)
    return out


@pytest.fixture(scope="module")
def round_result(tmp_path_factory: pytest.TempPathFactory) -> RoundResult:
    config = RoundConfig(
        data_dir=tmp_path_factory.mktemp("full-round"),
        adversary_id=DEFAULT_ADVERSARY,
        group="full-validation",
        timeout=180,
    )
    return LocalRound(config).run()


def test_each_technique_has_its_expected_outcome(round_result: RoundResult) -> None:
    report = round_result.report
    got = {t.technique_id: t.outcome for t in report.techniques}
    want = expected()
    wrong = {
        tid: f"expected {want.get(tid)}, got {got.get(tid)}: "
        + next((t.reason for t in report.techniques if t.technique_id == tid), "not in the round")
        for tid in sorted(set(got) | set(want))
        if got.get(tid) != want.get(tid)
    }
    assert not wrong, wrong


def test_misses_explain_themselves(round_result: RoundResult) -> None:
    for t in round_result.report.techniques:
        if t.outcome != Outcome.DETECTED:
            assert t.reason, f"{t.technique_id} is {t.outcome} without a reason"


def test_no_unexplained_alerts_and_no_loss(round_result: RoundResult) -> None:
    report = round_result.report
    assert report.unexplained_alerts == [], [(a.title, a.pid) for a in report.unexplained_alerts]
    assert report.events_total > 0
    assert report.events_dropped == 0, "the sensor dropped events: outcomes are not comparable"
