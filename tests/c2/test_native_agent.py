"""The native contact with the real agent: the zipapp from `assay agent build` and the deploy command as
real processes under the system python3, payloads checked by sha256, a server killed and restarted under a
running command, and a kill that makes the agent run its deadman instructions."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from c2_helpers import (
    ENROL,
    PROBE,
    SRC,
    Server,
    no_proxy,
    run_operation,
    serving,
    start_server,
    stop,
    system_python,
    wait_for,
    write_content,
)

from assay.storage import Store, sqlite_url


def _assay(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", "from assay.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True, env=no_proxy())


@contextmanager
def _process(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env or no_proxy(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        stop(proc)


def _enrolled(server: Server, pid: int) -> str:
    def find() -> str | None:
        _, agents = server.call("GET", "/api/v2/agents")
        return next((a["paw"] for a in agents if a["pid"] == pid), None)

    return wait_for(find, what=f"agent pid {pid} to enrol")  # type: ignore[no-any-return]


def _links(server: Server, op: dict[str, Any]) -> list[dict[str, Any]]:
    status, links = server.call("GET", f"/api/v2/operations/{op['id']}/links")
    assert status == 200
    return links  # type: ignore[no-any-return]


def test_zipapp_agent_runs_a_payload_ability_with_its_sha256_checked(tmp_path: Path) -> None:
    zipapp = tmp_path / "assay-agent.pyz"
    built = _assay("agent", "build", "--output", str(zipapp))
    digest = hashlib.sha256(zipapp.read_bytes()).hexdigest()
    assert digest in built.stdout and zipapp.stat().st_mode & 0o111
    workdir = tmp_path / "work"
    python = system_python()
    with serving(tmp_path) as server:
        cmd = [python, str(zipapp), "--server", server.url, "--enrol-token", ENROL, "--group", "zip",
               "--workdir", str(workdir)]  # fmt: skip
        with _process(cmd, tmp_path) as agent:
            _enrolled(server, agent.pid)
            op = run_operation(server, "c2-payload", "zip")
            (link,) = _links(server, op)
            assert link["status"] == 0 and link["stdout"] == "probe-ran\n", link
            assert not (workdir / "c2-probe.sh").exists()  # delete_payload (Caldera's default)
            _, listed = server.call("GET", "/api/v2/payloads")
            assert {
                "name": "c2-probe.sh",
                "size": len(PROBE),
                "sha256": hashlib.sha256(PROBE).hexdigest(),
            } in listed


def test_deploy_command_fetches_the_zipapp_and_starts_the_agent(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        line = _assay(
            "agent", "deploy-command", "--server", server.url, "--enrol-token", ENROL, "--group", "dep",
            "--foreground",
        ).stdout.strip()  # fmt: skip
        assert line.count("\n") == 0 and "assay-agent.pyz" in line
        target = tmp_path / "target"
        target.mkdir()
        env = {**no_proxy(), "PATH": "/usr/bin:/bin"}  # the target host has python3 and nothing of ours
        with _process(["sh", "-c", line], target, env) as agent:
            paw = _enrolled(server, agent.pid)  # `exec`: the shell became the agent
            op = run_operation(server, "c2-small", "dep")
            assert [lk["status"] for lk in _links(server, op)] == [0, 0, 0]
        assert (target / "assay-agent.pyz").read_bytes()[:2] == b"#!"
        status, body = server.call("GET", "/agent/assay-agent.pyz", key=None)
        assert status == 401 and "enrolment token" in body["error"]  # served to token holders only
        _, agents = server.call("GET", "/api/v2/agents")
        assert any(a["paw"] == paw and a["exe_name"].startswith("python") for a in agents)


def test_agent_rides_out_a_server_restart_and_delivers_the_result_it_held(tmp_path: Path) -> None:
    content = write_content(tmp_path)
    args = ("--content", str(content))
    server = start_server(tmp_path / "data", *args)
    env = {**no_proxy(), "PYTHONPATH": str(SRC)}
    python = system_python()
    cmd = [python, "-m", "assay.agent", "--server", server.url, "--enrol-token", ENROL, "--group", "rs"]
    try:
        with _process(cmd, tmp_path, env) as agent:
            paw = _enrolled(server, agent.pid)
            status, op = server.call(
                "POST",
                "/api/v2/operations",
                {"name": "rs", "adversary": {"adversary_id": "c2-slow"}, "group": "rs"},
            )
            assert status == 200, op
            link = wait_for(lambda: [lk for lk in _links(server, op) if lk["delegated_at"]], what="delivery")[
                0
            ]
            # `delegated_at` is stored before the reply leaves (a crash must not hand a link out twice), so
            # the kill waits for the command itself: killed between the two, the agent never gets the link.
            wait_for(lambda: _descendant_running(agent.pid, b"sleep"), what="the command to start")
            stop(server.process, signal.SIGKILL)  # mid-command: the agent cannot post its result
            time.sleep(3.5)  # the command ends while the server is down
            server = start_server(tmp_path / "data", *args, port=server.port)
            store = Store.open(sqlite_url(tmp_path / "data"), migrate=False)
            try:
                stored = wait_for(
                    lambda: (lk := store.link(link["id"])) is not None and lk.finished_at and lk,
                    30,
                    "the result",
                )
                assert stored.stdout == "slow-done\n" and stored.status == 0 and stored.paw == paw
                assert [r["accepted"] for r in store.results(link["id"])] == [True]  # recorded once
            finally:
                store.close()
            assert agent.poll() is None
            assert "server unreachable" in _stderr_so_far(agent)
    finally:
        stop(server.process)


def _descendant_running(root: int, program: bytes) -> bool:
    """Whether a process under ``root`` (found through /proc's parent links) runs ``program``."""
    parents: dict[int, int] = {}
    argv0: dict[int, bytes] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # the process ended while we looked
        parents[int(entry.name)] = int(stat.rsplit(b")", 1)[1].split()[1])
        argv0[int(entry.name)] = Path(cmdline.split(b"\0", 1)[0].decode(errors="replace")).name.encode()
    for pid, name in argv0.items():
        ancestor = parents.get(pid)
        while ancestor and ancestor != root:
            ancestor = parents.get(ancestor)
        if ancestor == root and name == program:
            return True
    return False


def _stderr_so_far(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=15)
    assert proc.stderr is not None
    return proc.stderr.read()


def test_kill_makes_the_agent_run_its_deadman_instructions_and_exit(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        assert server.call("PATCH", "/api/v2/config/agents", {"deadman_abilities": ["c2-echo"]})[0] == 200
        env = {**no_proxy(), "PYTHONPATH": str(SRC)}
        cmd = [
            sys.executable,
            "-m",
            "assay.agent",
            "--server",
            server.url,
            "--enrol-token",
            ENROL,
            "--group",
            "dm",
        ]
        with _process(cmd, tmp_path, env) as agent:
            paw = _enrolled(server, agent.pid)

            def deadman_dispatched() -> list[dict[str, Any]]:
                _, trail = server.call("GET", f"/api/v2/audit?paw={paw}&kind=dispatch")
                return [e for e in trail if e["data"]["deadman"]]

            (task,) = wait_for(deadman_dispatched, what="the deadman instruction to be delivered")
            assert task["data"]["command"] == f"echo hello-from-{paw}"
            status, killed = server.call("POST", f"/api/v2/agents/kill/{paw}")
            assert status == 200 and killed["status"] in (
                "pending kill",
                "dead",
            )  # a held beacon may be quicker
            assert agent.wait(timeout=30) == 0
            assert "deadman" in (agent.stderr.read() if agent.stderr else "")
        store = Store.open(sqlite_url(server.data_dir), migrate=False)
        try:
            (result,) = store.results(task["link_id"])
        finally:
            store.close()
        assert result["stdout"] == f"hello-from-{paw}\n" and result["accepted"]
        _, after = server.call("GET", f"/api/v2/agents/{paw}")
        assert after["status"] == "dead"
        assert json.dumps(after)
