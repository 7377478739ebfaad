"""The web UI in Debian's Chromium (Playwright): two small rounds on this host with a real agent and the
sensor, driven through the pages, every figure checked against the REST API.

Round 1 runs in manual mode: its links are approved (and one skipped) from the live link table, which the
server updates over server-sent events. Round 2 runs the same adversary autonomously, so the round pages have
an earlier round to compare with. Screenshots go to ``$ASSAY_SCREENSHOTS`` (default: the test's tmp dir).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serving import API_KEY, Server, no_proxy, start_agent, start_server, stop

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Three safe built-in abilities of "Linux first round": T1082 and T1057 are detected by the built-in rules,
# T1049 has no rule on purpose (missed_no_rule when it runs, not_executed when skipped).
ABILITIES = [
    "c26aa3f1-b36c-4f20-ade2-d3380e3fe947",  # T1082 System information
    "6e54cd8c-fbad-44ac-828d-d43420c83900",  # T1049 TCP connections
    "7848405c-1849-490a-a026-612639ef3ed6",  # T1057 Process listing
]
ADVERSARY_ID = "0b9d1c2e-webui-test-adversary"
GROUP = "webui"

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found (apt install chromium; `make setup` installs it)")
    return sync_playwright


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Server, agent and watcher (sensor + rules), started in the order a round needs, stopped by pid."""
    data = tmp_path_factory.mktemp("webui")
    server = start_server(data / "server")
    procs: list[subprocess.Popen[Any]] = [server.process]
    log = open(data / "watch.log", "wb")  # noqa: SIM115 - closed below, after the watcher stopped
    try:
        agent, paw = start_agent(server, GROUP)
        procs.append(agent)
        ready = data / "watch.ready"
        watcher = subprocess.Popen(
            [
                sys.executable, "-c", "from assay.cli import main; main()", "watch", "--server", server.url,
                "--source", "auto", "--ignore-pid", str(server.process.pid), "--ignore-pid", str(os.getpid()),
                "--agent-pid", str(agent.pid), "--ready-file", str(ready),
            ],
            env={**no_proxy(), "ASSAY_API_KEY": API_KEY},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )  # fmt: skip
        procs.append(watcher)
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert watcher.poll() is None, (data / "watch.log").read_text()
            assert time.monotonic() < deadline, "the sensor did not attach"
            time.sleep(0.1)
        shots = Path(os.environ.get("ASSAY_SCREENSHOTS") or data / "shots")
        shots.mkdir(parents=True, exist_ok=True)
        yield {"server": server, "paw": paw, "watcher": watcher, "shots": shots, "data": data}
    finally:
        for proc in reversed(procs):
            stop(proc)
        log.close()


def _api(server: Server, path: str) -> Any:
    return server.ok("GET", path)


def _api_text(server: Server, path: str) -> str:
    status, body = server.call("GET", path)
    assert status == 200 and isinstance(body, bytes), (path, status)
    return body.decode()


def _figure(page: Any, name: str, within: str = "body") -> str:
    return str(page.locator(f"{within} [data-figure='{name}']").first.inner_text()).strip()


def _pct(rate: float) -> str:
    return f"{100 * rate:.0f}%"


def test_a_round_through_the_web_ui(host: dict[str, Any]) -> None:
    server: Server = host["server"]
    shots: Path = host["shots"]
    sync_playwright = _playwright()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(20_000)
            _login(page, server, shots)
            _dashboard(page, server, host["paw"], shots)
            _create_adversary(page, server, shots)
            first = _manual_operation(page, server, shots)
            second = _autonomous_operation(page, server)
            _stop_watcher(host["watcher"])
            _round_pages(page, server, first, second, shots)
            _alerts_and_rules(page, server, shots)
            page.set_viewport_size({"width": 1440, "height": 900})  # a laptop screen
            page.goto(server.url + f"/ui/rounds/{second}")
            page.screenshot(path=str(shots / "round-1440.png"))
        finally:
            browser.close()


def _login(page: Any, server: Server, shots: Path) -> None:
    page.goto(server.url + "/ui/")
    assert "/ui/login" in page.url  # nothing without a session
    page.fill("#key", "not-the-key")
    page.click("button[type=submit]")
    assert "not a valid API key" in page.locator("[data-error]").inner_text()
    page.screenshot(path=str(shots / "login-refused.png"))
    page.fill("#key", API_KEY)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/")
    cookie = next(c for c in page.context.cookies() if c["name"] == "assay_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"


def _dashboard(page: Any, server: Server, paw: str, shots: Path) -> None:
    agents = _api(server, "/api/v2/agents")
    twin = _api(server, "/api/v2/ui/dashboard")
    row = page.locator(f"tr[data-paw='{paw}']")
    assert row.count() == 1
    mine = next(a for a in twin["agents"] if a["paw"] == paw)
    assert row.locator(".pill").inner_text() == mine["status"] == "alive"
    assert mine["privilege"] in row.inner_text() and mine["host"] in row.inner_text()
    alive = sum(1 for a in twin["agents"] if a["status"] == "alive")
    assert _figure(page, "agents").startswith(f"{len(agents)} agent")
    assert f"{alive} alive" in _figure(page, "agents")
    # Telemetry keeps arriving while the test reads: the figure shown lies between the API's before and after.
    before = _api(server, "/api/v2/sensor")["events"]
    page.reload()
    shown = int(_figure(page, "events", "#dash-sensor"))
    assert before <= shown <= _api(server, "/api/v2/sensor")["events"]
    page.screenshot(path=str(shots / "dashboard.png"))


def _create_adversary(page: Any, server: Server, shots: Path) -> None:
    page.click("header nav >> text=Content")
    page.fill("input[name=q]", "T1057")
    page.click("form.toolbar button[type=submit]")
    shown = int(_figure(page, "abilities").split()[0])
    assert shown == len(_api(server, "/api/v2/ui/content?q=T1057")["abilities"]) >= 1
    page.click("text=New adversary")
    bad = "\n".join(
        [
            f"adversary_id: {ADVERSARY_ID}",
            "name: Web UI test",
            "description: three safe discovery abilities",
            "atomic_ordering: {not: a list}",  # line 4
        ]
    )
    page.fill("#yaml", bad)
    page.click("text=Check and save")
    error = page.locator("[data-editor-errors] li").first
    assert error.get_attribute("data-error-line") == "4", error.inner_text()
    page.screenshot(path=str(shots / "editor-error.png"))
    good = "\n".join([*bad.splitlines()[:3], "atomic_ordering:", *[f"  - {a}" for a in ABILITIES]])
    page.fill("#yaml", good)
    page.click("text=Check and save")
    assert page.locator("[data-saved]").count() == 1
    stored = _api(server, f"/api/v2/adversaries/{ADVERSARY_ID}")
    assert stored["atomic_ordering"] == ABILITIES


def _start(page: Any, name: str, *, manual: bool) -> str:
    page.click("header nav >> text=Operations")
    page.fill("#name", name)
    page.select_option("#adversary_id", ADVERSARY_ID)
    page.select_option("#group", GROUP)
    if manual:
        page.check("#manual")
    assert not page.locator("#sandbox").is_checked()  # this host's agent is not sandboxed: run on the host
    page.click("#start")
    page.wait_for_url("**/ui/operations/*")
    return str(page.url.rsplit("/", 1)[1])


def _manual_operation(page: Any, server: Server, shots: Path) -> str:
    op_id = _start(page, "web ui round 1", manual=True)
    decisions = 0
    deadline = time.monotonic() + 60
    while _api(server, f"/api/v2/operations/{op_id}")["state"] != "finished":
        assert time.monotonic() < deadline, "the manual operation did not finish"
        pending = page.locator("button[data-approve]")
        if pending.count() == 0:
            page.wait_for_timeout(100)  # the link table is refreshed over SSE: no reload here
            continue
        row = page.locator("tr[data-status='pause']").first
        skip = "T1049" in row.inner_text()  # skipped: round 1 shows it not_executed
        if decisions == 0:
            page.screenshot(path=str(shots / "operation-manual.png"))
        row.locator("button[data-skip]" if skip else "button[data-approve]").click()
        page.wait_for_load_state()
        decisions += 1
    assert decisions >= 3
    page.locator("body[data-stream-done='1']").wait_for(state="attached")
    assert int(page.get_attribute("body", "data-updates") or 0) > 0  # the table changed over SSE
    _check_operation(page, server, op_id)
    page.screenshot(path=str(shots / "operation-finished.png"), full_page=True)
    return op_id


def _autonomous_operation(page: Any, server: Server) -> str:
    op_id = _start(page, "web ui round 2", manual=False)
    page.locator("body[data-stream-done='1']").wait_for(state="attached", timeout=60_000)
    _check_operation(page, server, op_id)
    return op_id


def _check_operation(page: Any, server: Server, op_id: str) -> None:
    """The live table, once the stream said it is done, shows what the API says."""
    op = _api(server, f"/api/v2/operations/{op_id}")
    twin = _api(server, f"/api/v2/ui/operations/{op_id}")
    assert not twin["live"] and not twin["settling"]  # the stream ended only once alerts had settled
    assert _figure(page, "links") == f"{op['links_finished']}/{op['links_total']}"
    assert _figure(page, "alerts_so_far") == str(twin["alerts_so_far"])
    for link in op["chain"]:
        row = page.locator(f"tr[data-link='{link['id']}']")
        assert row.get_attribute("data-status") == link["status_name"]
        assert row.locator("[data-col=pid]").inner_text() == ("" if link["pid"] is None else str(link["pid"]))
        want = next(lk["alerts_so_far"] for lk in twin["links"] if lk["id"] == link["id"])
        assert row.locator("[data-col=alerts]").inner_text() == str(want)


def _stop_watcher(watcher: subprocess.Popen[Any]) -> None:
    """SIGTERM drains the kernel and ships the last batch: after it, the rounds' telemetry is all stored."""
    time.sleep(0.75)
    stop(watcher)


def _round_pages(page: Any, server: Server, first: str, second: str, shots: Path) -> None:
    report = _api(server, f"/api/v2/rounds/{second}")
    page.goto(server.url + f"/ui/operations/{second}")
    page.click("#round-link")
    page.wait_for_url(f"**/ui/rounds/{second}")
    s = report["summary"]
    assert _figure(page, "detection_rate_testable") == _pct(s["detection_rate_testable"])
    assert _figure(page, "detection_rate_executed") == _pct(s["detection_rate_executed"])
    for key in ("detected", "testable", "executed", "in_profile", "mapped"):
        assert _figure(page, key, "#summary") == str(s[key]), key
    cells = page.locator("#matrix a.cell")
    assert cells.count() == len(report["techniques"]) == 3
    for t in report["techniques"]:
        cell = page.locator(f"#matrix a.cell[data-technique='{t['technique_id']}']")
        assert cell.get_attribute("data-outcome") == t["outcome"]
    page.screenshot(path=str(shots / "round.png"), full_page=True)

    # The drill-down of a detected technique: its reason, events and alerts as the API has them.
    detected = next(t for t in report["techniques"] if t["outcome"] == "detected")
    page.click(f"#matrix a.cell[data-technique='{detected['technique_id']}']")
    page.wait_for_url(f"**/techniques/{detected['technique_id']}")
    assert _figure(page, "reason") == detected["reason"]
    for link in (lk for lk in report["links"] if lk["link_id"] in detected["links"]):
        section = f"section[data-link='{link['link_id']}']"
        assert _figure(page, "events_seen", section).startswith(str(link["events_seen"]))
        assert _figure(page, "alerts", section) == str(len(link["alerts"]))
    assert page.locator("table.events tbody tr").count() > 0  # the events the sensor saw
    assert "--enrol-token" not in page.content()  # the agent's fork of the executor, and its token, left out
    page.screenshot(path=str(shots / "technique.png"), full_page=True)

    # The comparison with round 1 (where T1049 was skipped): the API's change list, shown.
    page.goto(server.url + f"/ui/rounds/{second}")
    page.select_option("select[name=other]", first)
    page.click("#compare")
    page.wait_for_url("**/compare?other=*")
    page.screenshot(path=str(shots / "compare.png"))
    twin = _api(server, f"/api/v2/ui/rounds/{second}/compare/{first}")
    changed = page.locator("#changes tr[data-technique]")
    assert changed.count() == len(twin["changes"]) >= 1
    assert "T1049" in {c["technique_id"] for c in twin["changes"]}
    page.screenshot(path=str(shots / "compare.png"))

    # The downloaded JSON is the API's report.
    page.goto(server.url + f"/ui/rounds/{second}")
    with page.expect_download() as info:
        page.click("#dl-json")
    downloaded = json.loads(Path(info.value.path()).read_text())
    assert downloaded["summary"] == report["summary"]
    # The other downloads are the API's renderings of the same round.
    for link_id, route in (("dl-report-html", "report.html"), ("dl-report-md", "report.md")):
        with page.expect_download() as info:
            page.click(f"#{link_id}")
        text = Path(info.value.path()).read_text()
        assert text == _api_text(server, f"/api/v2/rounds/{second}/{route}"), route
        assert second in text  # the round's own report, not an empty or generic page
    with page.expect_download() as info:
        page.click("#dl-layer-json")
    layer = json.loads(Path(info.value.path()).read_text())
    assert layer == _api(server, f"/api/v2/rounds/{second}/layer")
    shown = {t["techniqueID"] for t in layer["techniques"]}
    assert shown >= {t["technique_id"] for t in report["techniques"]}

    # The dashboard: the latest round's rate against the previous one.
    page.goto(server.url + "/ui/")
    pair = _api(server, "/api/v2/ui/dashboard")["rounds"]
    assert pair["latest"]["id"] == second and pair["previous"]["id"] == first
    assert _figure(page, "detection_rate_testable") == _pct(pair["latest"]["detection_rate_testable"])
    assert _figure(page, "delta") == f"{100 * pair['delta']:+.0f} pts"
    page.screenshot(path=str(shots / "dashboard-after.png"))


def _alerts_and_rules(page: Any, server: Server, shots: Path) -> None:
    page.click("header nav >> text=Alerts")
    alerts = _api(server, "/api/v2/alerts?limit=10000")
    assert _figure(page, "alerts").endswith(f"of {len(alerts)}")
    page.screenshot(path=str(shots / "alerts.png"))
    page.click("header nav >> text=Rules")
    rules = _api(server, "/api/v2/rules")
    supported = sum(1 for r in rules if r["supported"])
    assert _figure(page, "rules") == f"{supported} supported of {len(rules)}"
    twin = _api(server, "/api/v2/ui/rules")
    top = twin["rules"][0]
    assert page.locator(f"tr[data-rule='{top['id']}'] [data-col=hits]").first.inner_text() == str(top["hits"])
    assert top["hits"] == sum(1 for a in alerts if a["rule"]["id"] == top["id"] and not a["suppressed_by"])
    page.screenshot(path=str(shots / "rules.png"))
