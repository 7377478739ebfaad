"""A round with ``RoundConfig(sandbox=True)`` (what ``assay demo --sandbox`` runs): the agent enrols from
inside the sandbox and says so, its links report namespace pids, and validation attributes the real sensor's
events to them through the host pids."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from assay.cli._round import LocalRound, RoundConfig
from assay.content import BUILTIN_ADVERSARY_ID, load_builtin
from assay.sandbox import DEFAULT_STATE_ROOT
from assay.storage import Store, sqlite_url
from assay.validation import Outcome

pytestmark = [pytest.mark.root, pytest.mark.kernel, pytest.mark.slow]

EXPECTED = {"T1082": Outcome.DETECTED, "T1552.004": Outcome.DETECTED, "T1049": Outcome.MISSED_NO_RULE}


def test_a_sandboxed_round_is_attributed_through_host_pids(tmp_path: Path) -> None:
    library = load_builtin([]).library
    first_round = library.adversaries[BUILTIN_ADVERSARY_ID].atomic_ordering
    abilities = [next(a for a in first_round if library.abilities[a].technique_id == t) for t in EXPECTED]
    content = tmp_path / "content"
    (content / "adversaries").mkdir(parents=True)
    adversary = {"id": "sbx-small", "name": "sandboxed", "description": "three", "atomic_ordering": abilities}
    (content / "adversaries" / "sbx.yml").write_text(yaml.safe_dump(adversary))
    config = RoundConfig(
        data_dir=tmp_path / "round",
        adversary_id="sbx-small",
        content_paths=[content],
        group="sbx",
        timeout=120,
        sandbox=True,
    )
    result = LocalRound(config).run()
    store = Store.open(sqlite_url(result.data_dir), migrate=False)
    try:
        agents = store.agents()
    finally:
        store.close()
    sandboxes = [a.sandbox for a in agents]  # the round's own database: its one agent
    assert len(sandboxes) == 1 and (sandboxes[0] or "").startswith("sbx-"), sandboxes
    assert not (DEFAULT_STATE_ROOT / str(sandboxes[0])).exists(), (
        "the round's sandbox left its state directory"
    )
    outcomes = {t.technique_id: t.outcome for t in result.report.techniques}
    assert outcomes == EXPECTED, result.report.to_dict()["links"]
    for link in result.report.to_dict()["links"]:
        assert link["entity_id"] is not None
        host_pid = int(link["entity_id"].split(":")[0])
        assert host_pid != link["pid"], "the link's pid is the namespace pid, its root the host process"
    # Other tenants of a shared machine may raise unexplained alerts; the sandbox's own processes must not.
    own = [
        a.title
        for a in result.report.unexplained_alerts
        for e in a.events
        if "assay.sandbox" in str(e.get("process.command_line", ""))
        or "sandbox run" in str(e.get("process.command_line", ""))
    ]
    assert not own, own
