"""The loop, end to end, on this host: real server, real agent process, real eBPF sensor, real Sigma rules.

A small adversary of built-in abilities runs through `LocalRound` (what `assay demo` uses), and each link's
outcome is asserted, including the ability that works with shell builtins only: it must come out
`missed_no_telemetry`, not `missed_no_rule`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from assay.cli._round import LocalRound, RoundConfig
from assay.content import BUILTIN_ADVERSARY_ID, load_builtin
from assay.events import Action
from assay.storage import Store, sqlite_url
from assay.validation import Outcome

pytestmark = [pytest.mark.root, pytest.mark.kernel, pytest.mark.slow]

EXPECTED = {
    "T1082": Outcome.DETECTED,
    "T1552.004": Outcome.DETECTED,
    "T1016": Outcome.MISSED_NO_TELEMETRY,  # shell builtins only: no exec, no write
    "T1049": Outcome.MISSED_NO_RULE,  # no built-in rule on purpose
}


def _ability_for(technique: str) -> str:
    """The first-round ability of a technique (docs/architecture.md §8); the library has others beside it."""
    library = load_builtin([]).library
    first_round = library.adversaries[BUILTIN_ADVERSARY_ID].atomic_ordering
    found = [a for a in first_round if library.abilities[a].technique_id == technique]
    assert found, f"the built-in library has no ability for {technique}"
    return found[0]


@pytest.fixture(scope="module")
def round_result(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    content = tmp_path_factory.mktemp("content")
    adversary = {
        "id": "e2e-small",
        "name": "e2e small",
        "description": "four built-in abilities, one per outcome",
        "atomic_ordering": [_ability_for(t) for t in EXPECTED],
    }
    (content / "adversaries").mkdir()
    (content / "adversaries" / "e2e.yml").write_text(yaml.safe_dump(adversary))
    config = RoundConfig(
        data_dir=tmp_path_factory.mktemp("round"),
        adversary_id="e2e-small",
        content_paths=[content],
        group="e2e",
        timeout=120,
    )
    return LocalRound(config).run()


def test_each_link_has_its_expected_outcome(round_result) -> None:  # type: ignore[no-untyped-def]
    report = round_result.report
    got = {t.technique_id: t.outcome for t in report.techniques}
    assert got == EXPECTED, {t.technique_id: t.reason for t in report.techniques}
    for link in report.links:
        assert link.link.status == 0 and link.link.pid and link.root is not None
        assert link.events_seen > 0, f"{link.link.technique_id}: the sensor saw nothing of the executor"
    detected = [r for r in report.links if r.outcome == Outcome.DETECTED]
    assert all(r.exact for r in detected), "alerts must carry the technique the link exercised"
    assert report.summary.executed == 4 and report.summary.detected == 2
    assert report.cleanup_links, "cleanup must have run as links"


def test_the_harness_itself_is_not_telemetry(round_result) -> None:  # type: ignore[no-untyped-def]
    """The server and the sensor are invisible, and so are the agent's beacons; its children are not."""
    store = Store.open(sqlite_url(round_result.data_dir), migrate=False)
    try:
        events, alerts = store.telemetry_for_operation(round_result.operation_id, margin=2.0)
    finally:
        store.close()
    ours = {round_result.server_pid, round_result.watcher_pid}
    assert not [e for e in events if e.pid in ours]
    agent_connects = [e for e in events if e.pid == round_result.agent_pid and e.action == Action.CONNECT]
    assert agent_connects == [], "the agent's beacons to the server must be filtered"
    harness = ours | {round_result.agent_pid}
    assert not [a for a in alerts if a.pid in harness], "the harness raised an alert"
    # The agent's command children are fully visible: every link has events whose parent is the agent.
    children = [e for e in events if e.get("process.parent.pid") == round_result.agent_pid]
    assert len({e.entity_id for e in children}) >= len(EXPECTED)


def test_report_json_is_what_other_tools_read(round_result, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = round_result.report.to_dict()
    assert {t["technique_id"]: t["outcome"] for t in data["techniques"]} == {
        k: str(v) for k, v in EXPECTED.items()
    }
    for link in data["links"]:
        assert link["pid"] > 0 and link["exit_code"] == 0 and isinstance(link["events_seen"], int)
        assert link["outcome"] in {str(o) for o in Outcome}
