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
