"""The round's reports (``assay.reports``) rendered from a classified round: Markdown for a CI log, an ATT&CK
Navigator layer checked against the layer 4.5 schema, and a self-contained HTML page opened in Chromium.

The round is classified by the real validation code (``validate``) from link records, events and alerts, with
one technique per outcome class, so every standing and every reason shape is rendered.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from assay.events import Action, Alert, Event, Suppression, entity_id
from assay.reports import (
    ReportError,
    render_html,
    render_layer,
    render_markdown,
    report_paths,
    round_view,
    write_reports,
)
from assay.storage import RoundRecord, Store, sqlite_url
from assay.validation import LinkRecord, compare, validate
from serving import API_KEY, serving
from web_helpers import browser, log_in

AGENT = entity_id(100, 50)
T0 = 1_000.0
CONSUMED = frozenset({"exec", "file_write", "connect"})
SCHEMA = Path(__file__).parent / "data" / "navigator" / "layer-4.5.schema.json"
CHROMIUM = Path("/usr/bin/chromium")
# A command with what breaks naive renderers: a pipe (Markdown tables), backticks (code spans), markup (HTML).
TRICKY = "cat /etc/passwd | grep -c root; echo `id -u` '<script>alert(1)</script>'"


def _ev(action: str, pid: int, ticks: int, ts: float, parent: str = AGENT, **extra: Any) -> Event:
    values = {
        "process.pid": pid,
        "process.entity_id": entity_id(pid, ticks),
        "process.parent.entity_id": parent,
        "process.ancestry": [parent] if parent == AGENT else [parent, AGENT],
        **extra,
    }
    return Event.of(action, "synthetic", ts, host="h", values=values)


def _harness(pid: int, ticks: int, ts: float) -> list[Event]:
    return [
        _ev(
            Action.FORK,
            pid,
            ticks,
            ts,
            **{"process.command_line": "python -m assay.agent --enrol-token SECRET"},
        ),
        _ev(Action.EXEC, pid, ticks, ts + 0.001, **{"process.name": "sh"}),
        _ev(Action.EXIT, pid, ticks, ts + 0.5),
    ]


def _child(pid: int, ticks: int, child: int, name: str, ts: float, **extra: Any) -> Event:
    return _ev(
        Action.EXEC,
        child,
        ticks + 1,
        ts + 0.1,
        parent=entity_id(pid, ticks),
        **{"process.name": name, "process.command_line": f"{name} -a", **extra},
    )


def _alert(event: Event, technique: str, title: str, suppressed: Suppression | None = None) -> Alert:
    return Alert.for_events(
        rule_id=f"rule-{technique}",
        title=title,
        level="high",
        techniques=[technique],
        events=[event],
        suppressed_by=suppressed,
    )


def _link(link_id: str, technique: str, pid: int, ticks: int | None, tactic: str, **kw: Any) -> LinkRecord:
    base: dict[str, Any] = dict(
        link_id=link_id,
        ability_id=f"ab-{link_id}",
        ability_name=f"procedure {link_id}",
        technique_id=technique,
        command=f"{link_id} --run",
        status=0,
        host="h",
        pid=pid,
        start_ticks=ticks,
        exit_code=0,
        started=T0,
        finished=T0 + 1,
        tactic=tactic,
    )
    base.update(kw)
    return LinkRecord(**base)


def classified_round() -> dict[str, Any]:
    """One round, every outcome: a detection by the technique's own rule, one by another technique's rule,
    no rule, suppressed, no telemetry, sensor loss, a failed command and a skip; T1003 is mapped, not run."""
    links = [
        _link("det", "T1082", 201, 10, "discovery", command=TRICKY),
        _link("other", "T1049", 202, 20, "discovery"),
        _link("norule", "T1016", 203, 30, "discovery"),
        _link("sup", "T1057", 204, 40, "discovery"),
        _link("notel", "T1033", 205, 50, "discovery"),
        _link("loss", "T1053.003", 206, 60, "persistence", started=T0 + 10, finished=T0 + 11),
        _link("fail", "T1070.004", 207, 70, "defense-evasion", status=1, exit_code=2, stderr="rm: denied\n"),
        _link(
            "skip", "T1548.001", 0, None, "privilege-escalation", status=None, skip_reason="privilege: root"
        ),
    ]
    events: list[Event] = []
    for lk in links[:7]:
        ts = lk.started or T0
        events += _harness(lk.pid or 0, lk.start_ticks or 0, ts + 0.01)
    det = _child(201, 10, 301, "uname", T0)
    other = _child(202, 20, 302, "ss", T0)
    sup = _child(204, 40, 304, "ps", T0)
    events += [det, other, _child(203, 30, 303, "ip", T0), sup, _child(206, 60, 306, "crontab", T0 + 10)]
    events.append(
        Event.of(
            Action.LOSS,
            "ebpf",
            T0 + 10.5,
            host="h",
            values={"loss.count": 4, "loss.window.start": T0 + 10.2, "loss.window.end": T0 + 10.4},
        )
    )
    alerts = [
        _alert(det, "T1082", "System Information <b>Discovery</b>"),
        _alert(other, "T1082", "Discovery Burst"),  # T1049 has no rule: detected by T1082's
        _alert(
            sup, "T1057", "Process Listing", Suppression("monitoring", "the monitoring agent lists processes")
        ),
    ]
    report = validate(
        links,
        events,
        alerts,
        mapped_techniques={"T1082", "T1016", "T1057", "T1033", "T1053", "T1070.004", "T1548", "T1003"},
        consumed_actions=CONSUMED,
        meta={"round_id": "round-1", "name": "Reports round", "sensor_source": "ebpf", "rules": 8},
    )
    return report.to_dict()


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return classified_round()


ROUND_TECHNIQUES = ["T1082", "T1049", "T1016", "T1057", "T1033", "T1053.003", "T1070.004", "T1548.001"]


def test_the_round_has_every_standing(report: dict[str, Any]) -> None:
    view = round_view(report)
    standings = {t.technique_id: t.standing.key for t in view.every}
    assert standings == {
        "T1082": "validated",
        "T1049": "detected_unmapped",
        "T1016": "missed",
        "T1057": "missed",
        "T1033": "missed",
        "T1053.003": "inconclusive",
        "T1070.004": "mapped_not_validated",  # mapped, its procedure failed: not validated
        "T1548.001": "mapped_not_validated",  # mapped through its parent, skipped
        "T1003": "mapped_not_validated",  # mapped, no procedure in the round
        "T1548": "mapped_not_validated",  # the rule's own technique: its only procedure did not run
    }
    # The drill-down's events are what the technique did; the harness's fork (the agent's command line,
    # with its enrolment token) is left out.
    det = next(t for t in view.techniques if t.technique_id == "T1082")
    assert [e["process"] for e in det.links[0].events] == ["uname"]
    assert "SECRET" not in json.dumps(report)


def test_markdown_has_the_honest_table_and_every_miss_with_its_reason(report: dict[str, Any]) -> None:
    md = render_markdown(report)
    lines = md.splitlines()
    assert lines[0] == "## Assay validation: Reports round"
    head = next(i for i, ln in enumerate(lines) if ln.startswith("| mapped |"))
    s = report["summary"]
    row = [c.strip() for c in lines[head + 2].strip("|").split("|")]
    assert row[3] == str(s["testable"]) and row[4] == f"{s['detected']} of {s['testable']}"
    assert row[7] == str(s["detected_unmapped"]) == "1"
    assert (s["testable"], s["detected"]) == (5, 1)  # T1049 is detected but not testable
    misses = md[md.index("### Misses") : md.index("### Not executed")]
    for tid, why in (
        ("T1016", "no rule matched"),
        ("T1057", "suppressed by monitoring: the monitoring agent lists processes"),
        ("T1033", "saw nothing of this lineage"),
        ("T1053.003", "dropped 4 events"),
    ):
        (entry,) = [ln for ln in misses.split("\n- ") if ln.startswith(f"**{tid}**")]
        assert why in entry, entry
    assert "T1082" not in misses and "T1049" not in misses
    assert "failed (exit code 2): rm: denied" in md and "(privilege): skipped: privilege: root" in md
    # Every table row has as many cells as its header, whatever the commands and reasons contain.
    table = md[md.index("### Techniques") :].split("\n\n")[1].splitlines()
    widths = {len(re.split(r"(?<!\\)\|", ln)) for ln in table}
    assert len(widths) == 1 and len(table) == 2 + len(ROUND_TECHNIQUES)
    assert "System Information <b>Discovery</b>" in md  # a rule's title as it is (Markdown is not HTML)


def test_markdown_shows_the_change_since_the_previous_round(report: dict[str, Any]) -> None:
    before = json.loads(json.dumps(report))
    for t in before["techniques"]:
        if t["technique_id"] == "T1016":
            t["outcome"] = "detected"
    now = dict(report, change=compare(before, report).to_dict())
    md = render_markdown(now)
    assert "### Change since the previous round" in md and "- **Regressed** (1): T1016" in md


def test_the_layer_validates_against_the_navigator_45_schema(report: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema_rs.Draft202012Validator(schema)
    layer = render_layer(report)
    errors = [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in validator.iter_errors(layer)]
    assert errors == []
    assert layer["versions"]["layer"] == "4.5" and layer["domain"] == "enterprise-attack"
    by_id = {t["techniqueID"]: t for t in layer["techniques"]}
    assert set(by_id) == {*ROUND_TECHNIQUES, "T1003", "T1548"}
    colors = {t["color"] for t in layer["techniques"]}
    assert {item["color"] for item in layer["legendItems"]} == colors  # the legend explains every colour
    green, red, amber = by_id["T1082"]["color"], by_id["T1016"]["color"], by_id["T1003"]["color"]
    assert len({green, red, amber, by_id["T1049"]["color"]}) == 4
    assert by_id["T1057"]["color"] == by_id["T1033"]["color"] == red
    assert "System Information <b>Discovery</b>" in by_id["T1082"]["comment"]
    assert "suppressed by monitoring" in by_id["T1057"]["comment"]
    assert "no procedure of this round ran it" in by_id["T1003"]["comment"]
    meta = {m["name"]: m["value"] for m in by_id["T1082"]["metadata"]}
    assert meta["standing"] == "validated" and meta["rule fired"].endswith("(rule-T1082)")
    # The schema is not a formality: it rejects what the Navigator would not read.
    for broken in (
        {k: v for k, v in layer.items() if k != "name"},
        dict(layer, versions=dict(layer["versions"], layer="4.4")),
        dict(layer, techniques=[dict(layer["techniques"][0], color="green")]),
        dict(layer, techniques=[dict(layer["techniques"][0], techniqueId="T1082")]),
    ):
        assert not validator.is_valid(broken)


def test_the_html_is_self_contained_and_has_every_technique(report: dict[str, Any]) -> None:
    page = render_html(report)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched
    assert "<link" not in page and "@import" not in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>Discovery</b>" not in page
    for tid in ROUND_TECHNIQUES:
        anchor = "t-" + tid.replace(".", "-")
        assert f'data-technique="{tid}" data-standing=' in page  # in the matrix
        assert f'<details class="tech" id="{anchor}"' in page  # and its drill-down
        assert f'<tr data-technique="{tid}">' in page  # and the table
    assert 'id="t-T1003"' in page  # mapped, not validated: listed, linked from the matrix


def test_write_reports_puts_the_four_files_side_by_side(report: dict[str, Any], tmp_path: Path) -> None:
    paths = write_reports(report, tmp_path / "out" / "assay-report.json")
    assert [p.name for p in paths.all()] == [
        "assay-report.json",
        "assay-report.md",
        "assay-report.html",
        "assay-layer.json",
    ]
    assert json.loads(paths.json.read_text()) == report
    assert json.loads(paths.layer.read_text())["techniques"]
    assert report_paths(Path("ci/round.json")).layer == Path("ci/round-layer.json")
    with pytest.raises(ReportError, match="no 'techniques'"):
        write_reports({"summary": {}, "links": []}, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()  # rendered first, written only when all rendered


def test_the_html_opens_in_chromium_without_errors(report: dict[str, Any], tmp_path: Path) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found (apt install chromium; `make setup` installs it)")
    page_file = write_reports(report, tmp_path / "assay-report.json").html
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda r: None if r.url.startswith("file:") else problems.append(r.url))
            page.goto(page_file.as_uri())
            cells = page.locator("#matrix .cell")
            assert sorted(cells.evaluate_all("els => els.map(e => e.dataset.technique)")) == sorted(
                [*ROUND_TECHNIQUES, "T1003", "T1548"]
            )
            assert page.evaluate("document.documentElement.scrollWidth") <= 1280  # no sideways scroll
            assert page.locator("#summary [data-figure=testable]").inner_text() == "5"
            # A matrix cell opens its technique's drill-down: the command, the event, the alert.
            page.locator('#matrix .cell[data-technique="T1082"]').click()
            details = page.locator("#t-T1082")
            assert details.evaluate("d => d.open")
            assert TRICKY in details.locator("pre.command").inner_text()
            assert "uname -a" in details.locator("table.events").inner_text()
            assert "System Information <b>Discovery</b>" in details.locator("table.alerts").inner_text()
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            assert problems == []
        finally:
            browser.close()


def test_the_server_renders_a_stored_rounds_reports(report: dict[str, Any], tmp_path: Path) -> None:
    store = Store.open(sqlite_url(tmp_path / "data"))
    try:
        store.save_round(
            RoundRecord(
                id="round-1",
                kind="demo",
                started_at=T0,
                finished_at=T0 + 3,
                summary=report["summary"],
                report=report,
                operation_id="op-1",
                name=report["meta"]["name"],
            )
        )
    finally:
        store.close()
    with serving(tmp_path / "data") as server:
        status, layer = server.call("GET", "/api/v2/rounds/round-1/layer")
        assert status == 200 and layer == render_layer(report)
        status, page = server.call("GET", "/api/v2/rounds/round-1/report.html")
        assert status == 200 and page.decode() == render_html(report)
        status, md = server.call("GET", "/api/v2/rounds/op-1/report.md")
        assert status == 200 and md.decode() == render_markdown(report)
        assert server.call("GET", "/api/v2/rounds/missing/layer")[0] == 404
        # The web UI reads the same stored round: its page's twin carries the report as it was written, and
        # a drill-down (the round's operation is not in this database) shows the report's own event sample.
        page_twin = server.call("GET", "/api/v2/ui/rounds/round-1")[1]
        assert page_twin["report"] == report and page_twin["round"]["name"] == report["meta"]["name"]
        detected = next(t for t in report["techniques"] if t["outcome"] == "detected")
        drill = server.call("GET", f"/api/v2/ui/rounds/round-1/techniques/{detected['technique_id']}")[1]
        assert drill["sampled"] is True
        by_link = {lk["link_id"]: lk for lk in report["links"]}
        for lk in drill["links"]:
            assert [e["detail"] for e in lk["events"]] == [
                e["detail"] for e in by_link[lk["link_id"]]["events"]
            ]
            assert lk["events"], lk["link_id"]
        # ... and the pages render it (a stored round has a summary where an operation has its links).
        with browser(server) as web:
            log_in(web, API_KEY)
            listed = web.get("/ui/rounds")
            assert listed.status_code == 200 and 'data-round="round-1"' in listed.text
            for path in ("/ui/rounds/round-1", f"/ui/rounds/round-1/techniques/{detected['technique_id']}"):
                assert web.get(path).status_code == 200, path
        assert server.call("GET", "/api/v2/rounds/round-1/report.html", key=None)[0] == 401
        _, made = server.call("POST", "/api/v2/keys", {"name": "operator", "role": "red"}, key=API_KEY)
        # Reading a round's reports takes the role reading rounds takes: blue (red reads no rounds).
        assert server.call("GET", "/api/v2/rounds/round-1", key=made["key"])[0] == 403
        assert server.call("GET", "/api/v2/rounds/round-1/layer", key=made["key"])[0] == 403
