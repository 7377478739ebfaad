"""Real processes for the operation tests: `assay serve` under uvicorn on a loopback port, and the agent under
the system python3. Every process is started here and stopped by its own pid."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
API_KEY = "ops-api-key-" + "k" * 24
ENROL = "ops-enrol-token-" + "t" * 24


def no_proxy() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


@dataclass
class Server:
    url: str
    data_dir: Path
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def call(self, method: str, path: str, body: Any = None, key: str | None = API_KEY) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["KEY"] = key
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            with exc:
                raw = exc.read()
                return exc.code, json.loads(raw) if raw else None

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, data = self.call(method, path, body)
        assert 200 <= status < 300, (status, data)
        return data

    def wait_for(
        self, op_id: str, states: tuple[str, ...] = ("finished",), timeout: float = 60
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        op: dict[str, Any] = {}
        while time.monotonic() < deadline:
            op = self.ok("GET", f"/api/v2/operations/{op_id}")
            if op["state"] in states:
                return op
            time.sleep(0.05)
        raise AssertionError(
            f"operation still {op.get('state')}: {[lk['status'] for lk in op.get('chain', [])]}"
        )


def start_server(data_dir: Path, *extra: str, port: int = 0) -> Server:
    cmd = [
        sys.executable, "-c", "from assay.cli import main; main()", "serve", "--port", str(port),
        "--data-dir", str(data_dir), "--api-key", API_KEY, "--enrol-token", ENROL, *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=no_proxy())
    lines: list[str] = []
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if "listening on " in line:
            return Server(line.split("listening on ", 1)[1].strip(), data_dir, proc, lines)
    proc.kill()
    proc.wait()
    raise AssertionError("server did not start:\n" + "\n".join(lines))


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    """Stop a process this test started, by its pid, and close our ends of its pipes."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@contextmanager
def serving(data_dir: Path, *extra: str) -> Iterator[Server]:
    server = start_server(data_dir, *extra)
    try:
        yield server
    finally:
        stop(server.process)


def start_agent(server: Server, group: str) -> tuple[subprocess.Popen[str], str]:
    """A real agent process under the system python3 (none of the server's dependencies); returns its paw."""
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    env = {**no_proxy(), "PYTHONPATH": str(SRC)}
    cmd = [python, "-m", "assay.agent", "--server", server.url, "--enrol-token", ENROL, "--group", group]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, agents = server.call("GET", "/api/v2/agents")
        mine = [a for a in agents or [] if a["pid"] == proc.pid]
        if mine:
            return proc, str(mine[0]["paw"])
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read() if proc.stderr else "agent exited")
        time.sleep(0.05)
    stop(proc)
    raise AssertionError("agent did not enrol")


@contextmanager
def agent_process(server: Server, group: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc, paw = start_agent(server, group)
    try:
        yield proc, paw
    finally:
        stop(proc)
