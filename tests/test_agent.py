"""The agent: its runner against real processes, its beacon loop against the in-package fake transport."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from assay.agent import Agent, AgentError, FakeTransport, Runner, start_ticks
from assay.agent._agent import OUTPUT_CAP


def _stat_ticks(stat_line: str) -> int:
    return int(stat_line[stat_line.rfind(")") + 2 :].split()[22 - 3])


def test_script_arrives_on_fd_3_never_in_argv_with_stdin_on_dev_null() -> None:
    script = (
        'echo "argv: $0"; readlink /proc/$$/fd/0; tr "\\0" " " < /proc/$$/cmdline; echo; '
        'read -r s < /proc/$$/stat; echo "$$ $s"'
    )
    outcome = Runner().run("sh", script, 10)
    lines = outcome.stdout.splitlines()
    assert outcome.status == 0 and outcome.exit_code == 0
    assert lines[0] == "argv: /dev/fd/3"
    assert lines[1] == "/dev/null"
    assert lines[2].strip() == "sh /dev/fd/3"  # the command text is in no process's argv
    pid, stat = lines[3].split(" ", 1)
    assert int(pid) == outcome.pid
    assert _stat_ticks(stat) == outcome.start_ticks


def test_exit_codes_stderr_and_python_executor() -> None:
    failed = Runner().run("bash", "echo oops >&2; exit 3", 10)
    assert (failed.status, failed.exit_code, failed.stderr) == (1, 3, "oops\n")
    py = Runner().run("python", "import os; print(os.getpid())", 10)
    assert py.status == 0 and int(py.stdout) == py.pid
    missing = Runner().run("cmd", "dir", 10)
    assert missing.status == 1 and missing.pid is None and "not available" in missing.stderr


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    started = time.monotonic()
    outcome = Runner().run("sh", f"sleep 30 & echo $! > {marker}; wait", 1)
    assert time.monotonic() - started < 10
    assert outcome.status == 124 and outcome.stdout.startswith("Timeout reached, process killed")
    child = int(marker.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        stat = Path(f"/proc/{child}/stat").read_text()
        if stat[stat.rfind(")") + 2] == "Z":  # killed, waiting for its parent (init) to reap it
            break
        time.sleep(0.05)
    alive = (
        Path(f"/proc/{child}").exists() and Path(f"/proc/{child}/stat").read_text().split(") ")[1][0] != "Z"
    )
    assert not alive, "the background child outlived the timeout"


def test_background_child_holding_the_pipes_does_not_hold_the_result() -> None:
    outcome = Runner().run("sh", "sleep 3 & echo $!", 20)
    os.kill(int(outcome.stdout), signal.SIGKILL)  # ours: stop it by its pid
    assert outcome.status == 0
    assert outcome.ended_at - outcome.started_at < 2.5


def test_start_ticks_of_this_process() -> None:
    own = Path(f"/proc/{os.getpid()}/stat").read_text()
    assert start_ticks(os.getpid()) == _stat_ticks(own)
    assert start_ticks(2**22 + 12345) is None


def test_agent_runs_each_instruction_and_keeps_results_until_delivered() -> None:
    transport = FakeTransport(fail_next_results=1)
    logs: list[str] = []
    agent = Agent(transport, Runner(), group="g", paw="p1", log=logs.append)
    transport.queued = [{"id": "L1", "executor": "sh", "command": "echo one", "timeout": 10}]
    assert agent.step(wait=0) == 1
    for worker in agent.workers:
        worker.join(10)
    assert transport.profiles[0]["group"] == "g" and transport.profiles[0]["paw"] == "p1"
    assert "sh" in transport.profiles[0]["executors"]
    assert transport.posted == [] and len(agent.unsent) == 1  # the first post failed: kept, not lost
    assert any("will retry" in m for m in logs)
    assert agent.step(wait=0) == 0  # the next contact re-sends it
    (result,) = transport.posted
    assert (result["id"], result["status"], result["stdout"]) == ("L1", 0, "one\n")
    assert result["pid"] > 0 and result["start_ticks"] > 0
    assert agent.unsent == []


def test_payloads_are_checked_by_sha256_before_anything_runs(tmp_path: Path) -> None:
    transport = FakeTransport(files={"tool.sh": b"echo tool-ran\n"})
    agent = Agent(transport, Runner(), paw="p1", workdir=tmp_path, log=lambda _m: None)
    agent.key = "k"
    good = hashlib.sha256(b"echo tool-ran\n").hexdigest()
    ok = agent.execute(
        {"id": "L1", "command": f"sh {tmp_path}/tool.sh", "payloads": [{"name": "tool.sh", "sha256": good}]}
    )
    assert (ok["status"], ok["stdout"]) == (0, "tool-ran\n")
    assert not (tmp_path / "tool.sh").exists()  # delete_payload defaults to true
    marker = tmp_path / "ran"
    bad = agent.execute(
        {"id": "L2", "command": f"touch {marker}", "payloads": [{"name": "tool.sh", "sha256": "0" * 64}]}
    )
    assert bad["status"] == 1 and "does not match the announced" in bad["stderr"] and bad["pid"] is None
    assert not marker.exists() and not (tmp_path / "tool.sh").exists()  # nothing ran, nothing kept
    missing = agent.execute({"id": "L3", "command": "true", "payloads": [{"name": "gone", "sha256": None}]})
    assert missing["status"] == 1 and "Payload(s) not available: gone" in missing["stderr"]
    sneaky = agent.execute({"id": "L4", "command": "true", "payloads": [{"name": "../x", "sha256": good}]})
    assert sneaky["status"] == 1 and "not a plain file name" in sneaky["stderr"]
    assert [r["id"] for r in transport.posted] == ["L1", "L2", "L3", "L4"]


def test_deadman_instructions_wait_for_the_end_and_a_kill_stops_the_loop(tmp_path: Path) -> None:
    marker = tmp_path / "deadman"
    transport = FakeTransport()
    agent = Agent(transport, Runner(), paw="p1", workdir=tmp_path, log=lambda _m: None)
    transport.queued = [{"id": "D1", "command": f"echo bye > {marker}", "deadman": True}]
    assert agent.step(wait=0) == 0 and not marker.exists()  # kept, not run
    transport.kill = True
    stop = threading.Event()
    agent.run(stop)  # returns: the server killed the agent
    agent.run_deadman()
    assert marker.read_text() == "bye\n"
    assert [r["id"] for r in transport.posted] == ["D1"]


class _Unreachable(FakeTransport):
    def beacon(self, key: str, wait: float) -> dict[str, Any]:
        raise AgentError("connection refused (fake)")


class _Waits(threading.Event):
    def __init__(self, agent: Agent, limit: int) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.agent = agent
        self.limit = limit

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0))
        if len(self.waits) >= self.limit:
            self.set()
        return self.is_set()


def test_backoff_doubles_up_to_a_cap_and_the_watchdog_ends_the_loop() -> None:
    agent = Agent(_Unreachable(), Runner(), paw="p1", log=lambda _m: None)
    stop = _Waits(agent, 8)
    agent.run(stop)
    assert stop.waits == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]
    agent = Agent(_Unreachable(), Runner(), paw="p1", watchdog=0.2, log=lambda _m: None)
    agent.last_contact = time.monotonic() - 1.0
    agent.run(threading.Event())  # returns at once: no contact for longer than the watchdog


def test_results_the_server_did_not_acknowledge_are_kept() -> None:
    class _Partial(FakeTransport):
        def results(self, key: str, results: list[dict[str, Any]]) -> dict[str, Any]:
            self.posted.extend(results)
            return {"acknowledged": [results[0]["id"]], "rejected": []}

    agent = Agent(_Partial(), Runner(), paw="p1", log=lambda _m: None)
    agent.key = "k"
    agent.unsent = [{"id": "A"}, {"id": "B"}]
    agent.flush()
    assert agent.unsent == [{"id": "B"}]


def test_output_is_capped_and_the_truncation_reported() -> None:
    outcome = Runner().run("sh", "head -c 3000000 /dev/zero | tr '\\0' a; echo done >&2", 30)
    assert outcome.status == 0 and len(outcome.stdout) == OUTPUT_CAP
    dropped = 3000000 - OUTPUT_CAP
    assert outcome.stderr.startswith("done\n")
    assert f"stdout truncated, {dropped} bytes dropped" in outcome.stderr
