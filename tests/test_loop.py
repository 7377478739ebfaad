"""The backbone end to end: `assay serve` under uvicorn on an ephemeral loopback port, the agent as a real
separate process under the system python3 (which has none of the server's dependencies), a small adversary
of safe abilities, and the records checked in the database the server wrote."""

from __future__ import annotations

import itertools
import json
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from assay.content import load_builtin
from assay.emulation import LinkStatus, OperationState, SkipReason
from assay.events import USER_HZ
from assay.storage import Store, sqlite_url
from serving import API_KEY, Server, agent_process, launch_server, serving, stop

ROOT = Path(__file__).resolve().parent.parent

PROBES = """\
- id: probe-sh
  name: Probe (sh)
  tactic: discovery
  technique_id: T1082
  safety: safe
  platforms:
    linux:
      sh:
        command: |
          read -r stat < /proc/$$/stat
          echo "PROBE $$ $stat"
- id: probe-python
  name: Probe (python)
  tactic: execution
  technique_id: T1059.006
  safety: safe
  platforms:
    linux:
      python:
        command: |
          import os
          print("PROBE", os.getpid(), open(f"/proc/{os.getpid()}/stat").read())
- id: windows-only
  name: Windows only
  tactic: discovery
  technique_id: T1082
  safety: safe
  platforms:
    windows:
      psh:
        command: Get-Process
"""


def _builtin_id(technique: str) -> str:
    return next(a.id for a in load_builtin().library.abilities.values() if a.technique_id == technique)


def _content(base: Path) -> Path:
    content = base / "content"
    content.mkdir()
    (content / "probes.yml").write_text(PROBES)
    order = ["probe-sh", _builtin_id("T1546.004"), "windows-only", "probe-python", _builtin_id("T1048.003")]
    (content / "adversary.yml").write_text(
        json.dumps({"adversary_id": "it-small", "name": "small", "atomic_ordering": order})
    )
    return content


@contextmanager
def _serving(base: Path, *extra: str) -> Iterator[Server]:
    with serving(base / "data", "--content", str(_content(base)), *extra) as server:
        yield server


@contextmanager
def _agent(server: Server) -> Iterator[str]:
    with agent_process(server, "it") as (_, paw):
        yield paw


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with _serving(tmp_path_factory.mktemp("serve")) as srv:
        yield srv


@pytest.fixture(scope="module")
def agent(server: Server) -> Iterator[str]:
    with _agent(server) as paw:
        yield paw


def _boot_time() -> int:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return int(line.split()[1])
    raise AssertionError("no btime in /proc/stat")


def _run(server: Server, adversary: str, group: str = "it") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    status, op = server.call(
        "POST",
        "/api/v2/operations",
        {"name": "it", "adversary": {"adversary_id": adversary}, "planner": {"id": "atomic"}, "group": group},
    )
    assert status == 200, op
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and op["state"] != "finished":
        time.sleep(0.05)
        _, op = server.call("GET", f"/api/v2/operations/{op['id']}")
    assert op["state"] == "finished", op
    status, links = server.call("GET", f"/api/v2/operations/{op['id']}/links")
    assert status == 200
    return op, links


def test_operation_runs_links_with_pids_and_start_ticks_then_cleans_up(server: Server, agent: str) -> None:
    op, links = _run(server, "it-small")
    assert [agent] == [a["paw"] for a in op["host_group"]]
    by_ability = {(lk["ability_id"], lk["cleanup"]): lk for lk in links}
    t1546, t1048 = _builtin_id("T1546.004"), _builtin_id("T1048.003")
    ran = [lk for lk in links if not lk["cleanup"] and lk["status"] != LinkStatus.DISCARD]
    assert [lk["ability_id"] for lk in ran] == ["probe-sh", t1546, "probe-python", t1048]
    btime = _boot_time()
    for lk in links:
        if lk["status"] == LinkStatus.DISCARD:
            continue
        assert lk["status"] == LinkStatus.SUCCESS, lk
        assert lk["exit_code"] == 0, lk
        assert lk["pid"] > 0 and lk["start_ticks"] > 0
        assert lk["paw"] == agent and lk["technique_id"] and lk["tactic"]
        # The start ticks name the process the agent started at the time it says it started it.
        # (btime is whole seconds and the VM's wall clock may be slewed: a loose bound; probes check exactly.)
        assert abs(btime + lk["start_ticks"] / USER_HZ - lk["started_at"]) < 5.0, lk
        assert lk["planned_at"] <= lk["delegated_at"] <= lk["finished_at"]
        assert lk["started_at"] <= lk["finished_at"]
    for probe in ("probe-sh", "probe-python"):
        lk = by_ability[(probe, 0)]
        marker = next(line for line in lk["stdout"].splitlines() if line.startswith("PROBE "))
        _, pid, stat = marker.split(" ", 2)
        fields = stat[stat.rfind(")") + 2 :].split()
        assert int(pid) == lk["pid"]  # the executor itself, not a child or the agent
        assert int(fields[22 - 3]) == lk["start_ticks"]  # exactly what /proc said
    assert "listener received" in by_ability[(t1048, 0)]["stdout"]
    assert by_ability[(t1048, 0)]["executor"] == "bash"
    skipped = by_ability[("windows-only", 0)]
    assert skipped["skip_reason_id"] == SkipReason.PLATFORM and "windows" in skipped["skip_reason"]
    # Cleanup: one link per executed ability with a cleanup, newest first, and the work dirs are gone.
    cleanups = [lk for lk in links if lk["cleanup"]]
    assert [lk["cleanup_of"] for lk in cleanups] == [
        by_ability[(t1048, 0)]["id"],
        by_ability[(t1546, 0)]["id"],
    ]
    assert all(lk["status"] == LinkStatus.SUCCESS for lk in cleanups)
    assert not Path(f"/tmp/assay-{agent}").exists()
    # The database the server wrote holds the same links, as they are.
    store = Store.open(sqlite_url(server.data_dir), migrate=False)
    try:
        stored = store.links(op["id"])
        record = store.operation(op["id"])
    finally:
        store.close()
    assert record is not None and record.state is OperationState.FINISHED
    assert [(s.id, s.pid, s.start_ticks, s.cleanup) for s in stored] == [
        (lk["id"], lk["pid"], lk["start_ticks"], bool(lk["cleanup"])) for lk in links
    ]
    # Link-to-link latency: one link's result received → the next link handed out (printed, not asserted).
    executed = [s for s in stored if s.delegated_at is not None]
    gaps = [(b.delegated_at or 0) - (a.finished_at or 0) for a, b in itertools.pairwise(executed)]
    print(
        f"\nlink-to-link latency over {len(gaps)} gaps: median {statistics.median(gaps) * 1000:.1f} ms, "
        f"max {max(gaps) * 1000:.1f} ms"
    )


def test_rest_api_requires_a_key_and_lists_content_and_agents(server: Server, agent: str) -> None:
    assert server.call("GET", "/api/v2/health", key=None)[0] == 401
    assert server.call("GET", "/api/v2/health", key="wrong")[0] == 401
    request = urllib.request.Request(
        server.url + "/api/v2/health", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["application"] == "assay"
    _, abilities = server.call("GET", "/api/v2/abilities")
    assert len(abilities) == len(load_builtin().library.abilities) + 3
    assert {"ability_id", "technique_id", "executors", "safety"} <= set(abilities[0])
    _, adversaries = server.call("GET", "/api/v2/adversaries")
    assert {a["adversary_id"] for a in adversaries} >= {"it-small", "5b1f3c9e-7a2d-4e8b-9c61-0d4a7e2f8b10"}
    _, agents = server.call("GET", "/api/v2/agents")
    assert any(a["paw"] == agent and a["group"] == "it" and "sh" in a["executors"] for a in agents)
    status, error = server.call(
        "POST",
        "/api/v2/operations",
        {"name": "x", "adversary": {"adversary_id": "nope"}, "planner": {"id": "atomic"}},
    )
    assert status == 400 and "unknown adversary 'nope'" in error["error"]
    assert error["details"]["field"] == "adversary.adversary_id"
    assert server.call("GET", "/api/v2/operations/nope")[0] == 404


def test_agent_contact_rejects_bad_tokens_and_keys(server: Server) -> None:
    status, _ = server.call("POST", "/agent/enrol", {"token": "wrong", "host": "h"}, key=None)
    assert status == 401
    request = urllib.request.Request(
        server.url + "/agent/beacon",
        b'{"wait": 0}',
        {"Content-Type": "application/json", "Authorization": "Bearer nope"},
    )
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(request, timeout=10)
    with exc.value:
        assert exc.value.code == 401


def _event(ts: float, pid: int) -> dict[str, Any]:
    return {
        "@timestamp": ts,
        "event": {"action": "exec", "source": "replay"},
        "host": {"name": "h"},
        "process": {"pid": pid, "entity_id": f"{pid}:1", "args": ["id"]},
    }


def test_telemetry_is_stored_and_bad_records_are_named_without_losing_anything(server: Server) -> None:
    alert = {
        "id": "alert-1",
        "@timestamp": 1.5,
        "rule": {"id": "r1", "title": "t", "level": "high"},
        "techniques": ["T1082"],
        "process": {"entity_id": "7:1", "pid": 7, "lineage": ["7:1"]},
    }
    status, body = server.call(
        "POST", "/api/v2/telemetry", {"events": [_event(1.0, 7), _event(2.0, 8)], "alerts": [alert]}
    )
    assert (status, body) == (200, {"events": 2, "alerts": 1})
    bad_batch = {
        "events": [
            _event(3.0, 9),
            {"event": {"action": "exec"}},
            {**_event(4.0, 1), "process": {"pid": "x"}},
        ],
        "alerts": [{"@timestamp": 1.0}],
    }
    status, body = server.call("POST", "/api/v2/telemetry", bad_batch)
    assert status == 422
    assert [(d["index"], d["field"]) for d in body["details"]] == [
        ("events[1]", "@timestamp"),
        ("events[2]", "process.pid"),
        ("alerts[0]", "rule"),
    ]
    store = Store.open(sqlite_url(server.data_dir), migrate=False)
    try:
        events = store.events(since=0.0, until=10.0)
        alerts = store.alerts(rule_id="r1")
    finally:
        store.close()
    assert [e.pid for e in events] == [7, 8]  # the good batch is intact; nothing of the bad one was stored
    assert [a.id for a in alerts] == ["alert-1"] and alerts[0].lineage == ("7:1",)


def test_first_start_generates_credentials_prints_them_once_and_stores_only_hashes(tmp_path: Path) -> None:
    srv = launch_server(tmp_path)
    try:
        key = next(line.rsplit(" ", 1)[1] for line in srv.lines if "generated API key" in line)
        assert any("generated agent enrolment token" in line for line in srv.lines)
        assert srv.call("GET", "/api/v2/health", key=key)[0] == 200
    finally:
        stop(srv.process)
    assert key.encode() not in (tmp_path / "assay.db").read_bytes()
    srv = launch_server(tmp_path)
    try:
        assert not any("generated" in line for line in srv.lines)  # shown once only
        assert srv.call("GET", "/api/v2/health", key=key)[0] == 200
    finally:
        stop(srv.process)


@pytest.mark.postgres
def test_serve_on_postgresql_stores_the_operation_there(tmp_path: Path, postgres_url: str) -> None:
    with _serving(tmp_path, "--db", postgres_url) as srv, _agent(srv) as paw:
        op, links = _run(srv, "it-small")
    assert not (srv.data_dir / "assay.db").exists()  # nothing went to SQLite
    store = Store.open(postgres_url, migrate=False)
    try:
        stored = store.links(op["id"])
        record = store.operation(op["id"])
        assert store.db.backend == "postgresql"
    finally:
        store.close()
    assert record is not None and record.state is OperationState.FINISHED and record.agents == (paw,)
    assert [(s.id, int(s.status), s.pid, s.start_ticks) for s in stored] == [
        (lk["id"], lk["status"], lk["pid"], lk["start_ticks"]) for lk in links
    ]
    assert sum(1 for s in stored if s.cleanup) == 2
