"""Fault: `kill -9` of the agent while a link runs on it.

A real server and a real agent process. The link's command (`sleep 30` in effect) outlives its agent;
nobody will ever send its result. The server must stop waiting once the link's timeout and grace pass,
record the link as timed out with the reason readable through the API, and, when an agent comes back under
the same paw, still send it the ability's cleanup (the command ran, so what it did must be undone).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from fault_helpers import ability, kill_pid_file, wait_until, write_content

from serving import Server, agent_process, start_agent, start_server, stop

LINK_TIMEOUT = 3
GRACE = 1.0


def _link(server: Server, op_id: str, ability_id: str, *, cleanup: bool = False) -> dict[str, Any] | None:
    op = server.ok("GET", f"/api/v2/operations/{op_id}")
    found = [lk for lk in op["chain"] if lk["ability_id"] == ability_id and lk["cleanup"] == cleanup]
    return found[0] if found else None


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_agent_killed_mid_link_times_out_and_cleanup_runs_when_it_returns(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    pid_file, marks = tmp_path / "sleeper.pid", tmp_path / "marks.log"
    sleeper = ability(
        "sleeper",
        f"echo $$ > {pid_file}\necho ran >> {marks}\nexec sleep 30",
        timeout=LINK_TIMEOUT,
        cleanup=f"echo cleaned >> {marks}",
    )
    content = write_content(tmp_path, "agent-killed", [sleeper])
    db_args = ["--db", request.getfixturevalue("postgres_url")] if backend == "postgres" else []
    server = start_server(tmp_path / "data", "--content", str(content), *db_args)
    try:
        agent, paw = start_agent(server, "killed")
        try:
            body = {
                "name": "agent-killed",
                "adversary": {"adversary_id": "agent-killed"},
                "group": "killed",
                "link_grace": GRACE,
                "collect_timeout": 60,
            }
            op_id = server.ok("POST", "/api/v2/operations", body)["id"]
            wait_until("the link's command to start", lambda: pid_file.exists() and pid_file.read_text())
            stop(agent, signal.SIGKILL)
            killed_at = time.time()
        finally:
            stop(agent)
        timed_out = wait_until(
            "the link to time out",
            lambda: (lk := _link(server, op_id, "sleeper")) and lk["status"] == 124 and lk,
            timeout=LINK_TIMEOUT + GRACE + 20,
        )
        assert timed_out["finished_at"] >= killed_at
        assert f"no result from agent {paw}" in timed_out["stderr"], timed_out["stderr"]
        assert "timeout" in timed_out["stderr"]
        # No agent: the operation waits in cleanup with the cleanup link queued, not lost.
        op = server.wait_for(op_id, states=("cleanup",), timeout=10)
        assert "cleaned" not in marks.read_text()
        pending = _link(server, op_id, "sleeper", cleanup=True)
        assert pending is not None and pending["status"] == -3, op["chain"]
        with agent_process(server, "killed", paw=paw) as (_again, same_paw):
            assert same_paw == paw
            op = server.wait_for(op_id, timeout=30)
    finally:
        stop(server.process)
        kill_pid_file(pid_file)
    cleanup = [lk for lk in op["chain"] if lk["cleanup"]]
    assert [(lk["ability_id"], lk["status"], lk["paw"]) for lk in cleanup] == [("sleeper", 0, paw)]
    assert marks.read_text().splitlines() == ["ran", "cleaned"]  # the command once, its cleanup once
    step = next(lk for lk in op["chain"] if not lk["cleanup"])
    assert step["status"] == 124  # the late-comer did not rewrite the timed-out link
