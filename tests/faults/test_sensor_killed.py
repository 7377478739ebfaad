"""Fault: `kill -9` of the sensor (`assay watch`) in the middle of a round.

A killed watcher cannot report its own loss, so a round must not read its silence as "nothing happened":
links that ran while no sensor watched are `inconclusive`, not `missed_*`. The watcher beats once a second
(`event.action: sensor`, the span it covered); validation treats the end of the beats as the end of coverage.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fault_helpers import ability, wait_until, write_content

from assay.events import Action, Event
from assay.validation._attribution import coverage_gaps
from serving import API_KEY, Server, agent_process, no_proxy, start_server, stop

STEPS = 6
KILL_AFTER = 2  # the watcher dies while step 2 runs


def test_coverage_gaps_cover_only_what_heartbeats_do() -> None:
    beats = [
        Event.of(Action.SENSOR, "ebpf", t + 1, "h", {"sensor.covered.start": t, "sensor.covered.end": t + 1})
        for t in range(100, 110)
    ]
    assert coverage_gaps(beats, (101.0, 105.0)) == []
    assert coverage_gaps([], (101.0, 120.0)) == []  # a source that never beats: losses alone decide
    (gap,) = coverage_gaps(beats, (108.0, 115.0))
    assert (gap.get("loss.window.start"), gap.get("loss.window.end")) == (110.0, 115.0)
    assert "not reporting for 5.0 s" in gap.get("loss.reason")
    holed = beats[:3] + beats[6:]  # a pause from 103 to 106
    (pause,) = coverage_gaps(holed, (100.0, 110.0))
    assert (pause.get("loss.window.start"), pause.get("loss.window.end")) == (103.0, 106.0)


def _watcher(server: Server, agent_pid: int, ready: Path, log: Path) -> subprocess.Popen[Any]:
    cmd = [
        sys.executable, "-c", "from assay.cli import main; main()", "watch", "--server", server.url,
        "--source", "ebpf", "--ignore-pid", str(server.process.pid), "--ignore-pid", str(os.getpid()),
        "--agent-pid", str(agent_pid), "--ready-file", str(ready),
    ]  # fmt: skip
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, env={**no_proxy(), "ASSAY_API_KEY": API_KEY}, stdout=err, stderr=err)
    wait_until("the sensor to attach", lambda: ready.exists() or proc.poll() is not None, timeout=60)
    assert proc.poll() is None, log.read_text()
    return proc


@pytest.mark.root
@pytest.mark.kernel
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_sensor_killed_mid_round_leaves_uncovered_links_inconclusive(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    marks = tmp_path / "marks.log"
    steps = [
        ability(f"step-{i}", f"echo start {i} >> {marks}\nsleep 1.5\nuname -a\necho step {i}")
        for i in range(STEPS)
    ]
    content = write_content(tmp_path, "sensor-killed", steps)
    db_args = ["--db", request.getfixturevalue("postgres_url")] if backend == "postgres" else []
    server = start_server(tmp_path / "data", "--content", str(content), *db_args)
    watcher: subprocess.Popen[Any] | None = None
    try:
        with agent_process(server, "sensed") as (agent, _paw):
            watcher = _watcher(server, agent.pid, tmp_path / "ready", tmp_path / "watch.log")
            adversary = {"adversary_id": "sensor-killed"}
            body = {"name": "sensor-killed", "adversary": adversary, "group": "sensed"}
            op_id = server.ok("POST", "/api/v2/operations", body)["id"]
            wait_until(
                f"step {KILL_AFTER} to start",
                lambda: marks.exists() and f"start {KILL_AFTER}" in marks.read_text(),
                timeout=40,
            )
            stop(watcher, signal.SIGKILL)
            killed_at = time.time()
            op = server.wait_for(op_id, timeout=40)
        report = server.ok("GET", f"/api/v2/rounds/{op_id}")
    finally:
        if watcher is not None:
            stop(watcher)
        stop(server.process)
    windows = {lk["id"]: (lk["started_at"] or lk["delegated_at"], lk["finished_at"]) for lk in op["chain"]}
    outcomes = {
        lk["ability_id"]: (lk["outcome"], lk["reason"], windows[lk["link_id"]]) for lk in report["links"]
    }
    assert len(outcomes) == STEPS, outcomes
    for ability_id, (outcome, reason, (begin, end)) in outcomes.items():
        if end < killed_at - 1.5:  # finished well inside the watched span: seen, not inconclusive
            assert outcome != "inconclusive", (ability_id, outcome, reason)
        elif begin > killed_at:  # nobody watched it at all
            assert outcome == "inconclusive", (ability_id, outcome, reason)
            assert "not reporting" in reason, reason
        else:  # it straddles the kill: an alert seen before it is real, a miss is not provable
            assert not outcome.startswith("missed"), (ability_id, outcome, reason, begin, end, killed_at)
    after = [a for a, (_o, _r, (begin, _e)) in outcomes.items() if begin > killed_at]
    assert len(after) >= STEPS - KILL_AFTER - 1, outcomes
    seen = [a for a, (o, _r, _w) in outcomes.items() if o == "detected"]
    assert seen, outcomes  # the sensor did see the first links: the outcome is not blanket
