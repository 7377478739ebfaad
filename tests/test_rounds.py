"""Stored rounds: a round's report, hashes and alert → link attribution in SQLite and PostgreSQL, served by
the real server's `GET /api/v2/rounds` and `GET /api/v2/rounds/{id}`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assay.events import Action, Alert, Event, entity_id
from assay.storage import RoundRecord, Store, sqlite_url
from assay.validation import LinkRecord, RoundReport, alert_links, digest_files, validate
from serving import serving

AGENT = entity_id(100, 50)
T0 = 1_000.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = sqlite_url(tmp_path / "data")
    else:
        url = request.getfixturevalue("postgres_url")
    s = Store.open(url)
    yield s
    s.close()


def _event(action: str, pid: int, ticks: int, ts: float, **values: Any) -> Event:
    fields: dict[str, Any] = {
        "process.pid": pid,
        "process.entity_id": entity_id(pid, ticks),
        "process.parent.entity_id": AGENT,
        "process.ancestry": [AGENT],
        **values,
    }
    return Event.of(action, "synthetic", ts, host="h", values=fields)


def _link(link_id: str, technique: str, pid: int, ticks: int, start: float) -> LinkRecord:
    return LinkRecord(
        link_id=link_id,
        ability_id=f"ab-{link_id}",
        technique_id=technique,
        command="...",
        status=0,
        host="h",
        pid=pid,
        start_ticks=ticks,
        exit_code=0,
        started=start,
        finished=start + 1,
        tactic="discovery",
    )


def two_link_report() -> RoundReport:
    """Two links; one plain alert on the first, one correlation alert over events of both."""
    first = _event(Action.EXEC, 201, 7, T0 + 0.2, **{"process.name": "uname"})
    second = _event(Action.EXEC, 202, 9, T0 + 2.2, **{"process.name": "id"})
    plain = Alert.for_events(
        rule_id="r-uname", title="uname", level="low", techniques=["T1082"], events=[first]
    )
    correlation = Alert.for_events(
        rule_id="c-recon", title="recon burst", level="high", techniques=["T1082"], events=[first, second]
    )
    links = [_link("L1", "T1082", 201, 7, T0), _link("L2", "T1033", 202, 9, T0 + 2)]
    return validate(
        links,
        [first, second],
        [plain, correlation],
        mapped_techniques={"T1082"},
        consumed_actions={"exec"},
        meta={"operation_id": "op-1"},
    )


def test_a_correlation_alert_belongs_to_every_link_that_contributed() -> None:
    report = two_link_report()
    pairs = alert_links(report)
    by_alert: dict[str, set[str]] = {}
    for alert_id, link_id in pairs:
        by_alert.setdefault(alert_id, set()).add(link_id)
    titles = {a.id: a.title for r in report.links for a in r.alerts}
    assert {titles[a]: links for a, links in by_alert.items()} == {
        "uname": {"L1"},
        "recon burst": {"L1", "L2"},
    }


def test_a_round_is_stored_with_its_report_hashes_and_alert_links(store: Store, tmp_path: Path) -> None:
    report = two_link_report()
    rule = tmp_path / "rule.yml"
    rule.write_text("title: x\n", encoding="utf-8")
    record = RoundRecord(
        id="round-1",
        kind="demo",
        started_at=T0,
        finished_at=T0 + 5,
        summary=report.to_dict()["summary"],
        report=report.to_dict(),
        operation_id="op-1",
        name="first round",
        adversary_id="adv",
        sandbox=True,
        rules_hash=digest_files([rule]),
        content_hash=digest_files([]),
    )
    store.save_round(record, alert_links(report))
    later = RoundRecord(id="round-2", kind="validate", started_at=T0 + 60, summary={"detected": 0})
    store.save_round(later)

    listed = store.rounds()
    assert [r.id for r in listed] == ["round-1", "round-2"]  # oldest first
    assert listed[0].report == {} and listed[0].summary == report.to_dict()["summary"]  # lists stay light
    assert [r.id for r in store.rounds(limit=1)] == ["round-2"]  # the newest one
    loaded = store.round("round-1")
    assert loaded is not None and loaded.report == report.to_dict() and loaded.sandbox is True
    assert loaded.rules_hash == record.rules_hash and len(loaded.rules_hash) == 64
    found = store.round("op-1")  # by operation id: its newest round
    assert found is not None and found.id == "round-1"
    assert store.round("nope") is None
    links = store.alert_links("op-1")
    assert sorted(links.values()) == [["L1"], ["L1", "L2"]]
    store.save_round(record, alert_links(report))  # stored again: same rows, no duplicates
    assert sorted(store.alert_links("op-1").values()) == [["L1"], ["L1", "L2"]]


def test_a_hash_follows_contents_not_paths(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yml", tmp_path / "sub" / "b.yml"
    b.parent.mkdir()
    a.write_text("one", encoding="utf-8")
    b.write_text("two", encoding="utf-8")
    before = digest_files([a, b])
    moved = tmp_path / "moved.yml"
    moved.write_text("one", encoding="utf-8")
    assert digest_files([moved, b]) == before == digest_files([b, a, a])
    b.write_text("two!", encoding="utf-8")
    assert digest_files([a, b]) != before


def test_the_server_lists_stored_rounds_and_serves_their_reports(tmp_path: Path) -> None:
    report = two_link_report().to_dict()
    store = Store.open(sqlite_url(tmp_path / "data"))
    try:
        store.save_round(
            RoundRecord(
                id="round-9",
                kind="validate",
                started_at=T0,
                finished_at=T0 + 3,
                summary=report["summary"],
                report=report,
                operation_id="op-9",
                adversary_id="adv",
            )
        )
    finally:
        store.close()
    with serving(tmp_path / "data") as server:
        status, rounds = server.call("GET", "/api/v2/rounds")
        assert status == 200
        (mine,) = [r for r in rounds if r["id"] == "round-9"]
        assert mine["kind"] == "validate" and mine["summary"] == report["summary"]
        assert "report" not in mine
        status, served = server.call("GET", "/api/v2/rounds/round-9")
        assert status == 200 and served == report
        assert server.call("GET", "/api/v2/rounds/op-9")[1] == report
        assert server.call("GET", "/api/v2/rounds/missing")[0] == 404
        assert server.call("GET", "/api/v2/rounds", key=None)[0] == 401


def test_an_operation_and_an_agent_keep_their_sandbox_across_storage(store: Store) -> None:
    from assay.content import Adversary
    from assay.emulation import Agent, Operation, planner

    adversary = Adversary("adv", "adv", ())
    op = Operation("op-s", "sandboxed", adversary, planner("atomic"), sandbox=True, created_at=T0)
    store.save_operation(op)
    store.save_agent(Agent("inside", sandbox="sbx-7"))
    store.save_agent(Agent("outside"))
    loaded = store.load_operation("op-s", {"adv": adversary})
    assert loaded is not None and loaded.sandbox is True
    inside, outside = store.agent("inside"), store.agent("outside")
    assert inside is not None and inside.sandbox == "sbx-7"
    assert outside is not None and outside.sandbox is None


def _stored_round(url: str) -> tuple[str, str]:
    """An operation of two links, its telemetry and a round scored from it, stored as a round would be;
    the alert on T1082's link is stored as belonging to T1049's link instead (to see which one a re-score
    uses). Returns (round id, operation id)."""
    from assay.content import Adversary
    from assay.emulation import Link, LinkStatus, Operation, planner
    from assay.validation import round_inputs

    adversary = Adversary("adv", "adv", ())
    op = Operation("op-r", "r", adversary, planner("atomic"), created_at=T0, finished_at=T0 + 10)
    links = [
        Link(
            f"L{i}",
            "op-r",
            "p",
            f"ab{i}",
            tid,
            "discovery",
            "sh",
            "...",
            seq=i,
            host="h",
            status=LinkStatus.SUCCESS,
            pid=500 + i,
            start_ticks=5,
            started_at=T0 + i,
            finished_at=T0 + i + 0.5,
            exit_code=0,
            planned_at=T0,
        )
        for i, tid in ((1, "T1082"), (2, "T1049"))
    ]
    events = [
        Event.of(
            Action.EXEC,
            "synthetic",
            T0 + i + 0.1,
            host="h",
            values={
                "process.pid": 600 + i,
                "process.entity_id": entity_id(600 + i, 9),
                "process.ancestry": [entity_id(500 + i, 5)],
                "process.name": "x",
            },
        )
        for i in (1, 2)
    ]
    alert = Alert.for_events(rule_id="r", title="r", level="low", techniques=["T1082"], events=[events[0]])
    store = Store.open(url)
    try:
        store.save_operation(op, links)
        store.add_telemetry(events, [alert])
        records, found, alerts = round_inputs(store, "op-r")
        report = validate(
            records,
            found,
            alerts,
            mapped_techniques={"T1082", "T1049"},
            consumed_actions={"exec"},
            meta={"operation_id": "op-r", "profile": ["T1082", "T1049"]},
        )
        assert {t.technique_id: t.outcome for t in report.techniques} == {
            "T1082": "detected",
            "T1049": "missed_no_rule",
        }
        data = report.to_dict()
        store.save_round(
            RoundRecord(
                "round-r", "demo", T0, data["summary"], data, operation_id="op-r", adversary_id="adv"
            ),
            [(alert.id, "L2")],  # not what lineage says: a re-score must keep the stored attribution
        )
    finally:
        store.close()
    return "round-r", "op-r"


def _cli(*args: str, cwd: Path) -> Any:
    import subprocess
    import sys

    cmd = [sys.executable, "-c", "from assay.cli import main; main()", "validate", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_rescore_keeps_the_stored_attribution_and_regressions_fail_the_command(tmp_path: Path) -> None:
    import json

    url = sqlite_url(tmp_path / "data")
    round_id, _ = _stored_round(url)
    out = tmp_path / "rescored.json"
    done = _cli("--rescore", round_id, "--db", url, "--report", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    rescored = json.loads(out.read_text())
    outcomes = {t["technique_id"]: t["outcome"] for t in rescored["techniques"]}
    # The stored attribution, not the lineage: the alert belongs to T1049's link.
    assert outcomes == {"T1049": "detected", "T1082": "missed_no_rule"}
    assert rescored["meta"]["rescored_from"] == round_id and rescored["meta"]["kind"] == "rescore"
    assert rescored["summary"]["in_profile"] == 2
    assert "regressed: T1082: detected -> missed_no_rule" in done.stdout
    assert "newly detected: T1049: missed_no_rule -> detected" in done.stdout
    store = Store.open(url, migrate=False)
    try:
        kinds = [(r.kind, r.rescored_from) for r in store.rounds()]
    finally:
        store.close()
    assert kinds == [("demo", None), ("rescore", round_id)]


def test_exit_codes_of_compare_and_fail_on_regression(tmp_path: Path) -> None:
    import json

    url = sqlite_url(tmp_path / "data")
    round_id, _ = _stored_round(url)
    out = tmp_path / "r.json"
    first = _cli("--rescore", round_id, "--db", url, "--report", str(out), cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    gated = _cli(
        "--rescore", round_id, "--db", url, "--report", str(out), "--fail-on-regression", cwd=tmp_path
    )
    assert gated.returncode == 3 and "regressed: T1082" in gated.stdout
    same = json.loads(out.read_text())
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps(same))
    unchanged = _cli("--rescore", round_id, "--db", url, "--report", str(out), "--compare", str(baseline),
                     "--fail-on-regression", cwd=tmp_path)  # fmt: skip
    assert unchanged.returncode == 0 and "no technique changed outcome" in unchanged.stdout
    assert _cli("--rescore", "nope", "--db", url, cwd=tmp_path).returncode == 2
    assert (
        _cli("--rescore", round_id, "--db", url, "--compare", "missing-round", cwd=tmp_path).returncode == 2
    )
    assert _cli("--atomics", str(tmp_path), "--fail-on-regression", "--db", url, cwd=tmp_path).returncode == 2
