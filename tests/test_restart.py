"""Restart safety: `kill -9` of the server in the middle of an operation, then a restart on the same port.

A real uvicorn server process and a real agent process. The server is killed while a link is running on the
agent, so that link's result is delivered while the server is down. After the restart the operation must go
on from where it was: every ability runs exactly once (the agent's own log proves no command ran twice), the
result delivered during the outage is recorded, and the cleanup runs in reverse order.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from assay.storage import Store, sqlite_url
from serving import Server, agent_process, start_server, stop

STEPS = 8
KILL_AT = 3  # the server dies while step 3 runs


def _content(base: Path, log: Path) -> Path:
    content = base / "content"
    content.mkdir()
    abilities = []
    for i in range(STEPS):
        command = f'echo "start {i}" >> {log}\nsleep 0.4\necho "end {i}" >> {log}\necho "step {i} done"'
        executor = {"name": "sh", "platform": "linux", "command": command, "timeout": 30}
        if i % 3 == 0:
            executor["cleanup"] = f'echo "cleanup {i}" >> {log}'
        abilities.append(
            {
                "id": f"step-{i}",
                "name": f"step {i}",
                "tactic": "execution",
                "technique_id": "T1059.004",
                "safety": "safe",
                "executors": [executor],
            }
        )
    (content / "steps.yml").write_text(json.dumps(abilities))
    adversary = {
        "adversary_id": "restart",
        "name": "restart",
        "atomic_ordering": [a["id"] for a in abilities],
    }
    (content / "adversary.yml").write_text(json.dumps(adversary))
    return content


def _wait_for_line(log: Path, line: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and line in log.read_text().splitlines():
            return
        time.sleep(0.01)
    raise AssertionError(f"{line!r} never appeared in {log}")


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_kill_9_mid_operation_loses_no_result_and_runs_no_link_twice(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    log = tmp_path / "agent-side.log"
    content = _content(tmp_path, log)
    db_args = ["--db", request.getfixturevalue("postgres_url")] if backend == "postgres" else []
    args = ("--content", str(content), *db_args)
    server = start_server(tmp_path / "data", *args)
    second: Server | None = None
    try:
        with agent_process(server, "restart") as (agent, _paw):
            body = {"name": "restart", "adversary": {"adversary_id": "restart"}, "group": "restart"}
            op_id = server.ok("POST", "/api/v2/operations", body)["id"]
            _wait_for_line(log, f"start {KILL_AT}")
            stop(server.process, signal.SIGKILL)
            killed_at = time.time()
            _wait_for_line(log, f"end {KILL_AT}")  # its result is delivered while nobody listens
            time.sleep(0.3)
            second = start_server(tmp_path / "data", *args, port=server.port)
            restarted_at = time.time()
            op = second.wait_for(op_id, timeout=90)
            assert agent.poll() is None  # the same agent process, never re-enrolled
    finally:
        stop(server.process)
        if second is not None:
            stop(second.process)
    lines = log.read_text().splitlines()
    starts = [line for line in lines if line.startswith("start ")]
    assert starts == [f"start {i}" for i in range(STEPS)]  # each command ran once, in order
    assert [line for line in lines if line.startswith("cleanup ")] == ["cleanup 6", "cleanup 3", "cleanup 0"]
    chain = op["chain"]
    steps = [lk for lk in chain if not lk["cleanup"]]
    assert [lk["ability_id"] for lk in steps] == [f"step-{i}" for i in range(STEPS)]
    assert all(lk["status"] == 0 and lk["stdout"].startswith("step ") and lk["pid"] > 0 for lk in steps)
    assert [lk["status"] for lk in chain if lk["cleanup"]] == [0, 0, 0]
    url = db_args[1] if db_args else sqlite_url(tmp_path / "data")
    store = Store.open(url, migrate=False)
    try:
        results = {lk["id"]: store.results(lk["id"]) for lk in chain}
    finally:
        store.close()
    assert all(sum(r["accepted"] for r in rs) == 1 for rs in results.values()), results
    during = results[steps[KILL_AT]["id"]]
    accepted = next(r for r in during if r["accepted"])
    assert accepted["received_at"] >= restarted_at - 1.0  # it arrived after the restart: kept by the agent
    assert steps[KILL_AT]["finished_at"] > killed_at
    delay = accepted["received_at"] - killed_at
    print(f"\nrestart ({backend}): link {KILL_AT}'s result arrived {delay:.1f} s after kill -9")
