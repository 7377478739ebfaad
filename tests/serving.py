"""Real processes for the operation tests: `assay serve` under uvicorn on a loopback port, and the agent under
the system python3. Every process is started here and stopped by its own pid."""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
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


def system_python() -> str:
    """The system python3, which has none of the server's dependencies (the agent must not need them)."""
    return shutil.which("python3", path="/usr/bin:/bin") or sys.executable


@dataclass
class Server:
    url: str
    data_dir: Path
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    context: ssl.SSLContext | None = None  # for an https:// server (assay serve --tls)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        key: str | None = API_KEY,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        """One request; the JSON body decoded (the raw bytes when it is not JSON), and the status."""
        sent = {"Content-Type": "application/json", **(headers or {})}
        if key:
            sent["KEY"] = key
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.url + path, data, sent, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60, context=self.context) as response:
                return response.status, _decode(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, _decode(exc.read())

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


def _decode(payload: bytes) -> Any:
    try:
        return json.loads(payload) if payload else None
    except ValueError:
        return payload


def launch_server(data_dir: Path, *args: str, port: int = 0) -> Server:
    """`assay serve` with exactly these arguments, once it says where it listens."""
    cmd = [
        sys.executable, "-c", "from assay.cli import main; main()", "serve", "--port", str(port),
        "--data-dir", str(data_dir), *args,
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
    stop(proc)
    raise AssertionError("server did not start:\n" + "\n".join(lines))


def start_server(data_dir: Path, *extra: str, port: int = 0) -> Server:
    """`assay serve` with the tests' API key and enrolment token."""
    return launch_server(data_dir, "--api-key", API_KEY, "--enrol-token", ENROL, *extra, port=port)


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    """Stop a process this test started, by its pid, and close our ends of its pipes."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
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


def start_agent(server: Server, group: str, paw: str | None = None) -> tuple[subprocess.Popen[str], str]:
    """A real agent process under the system python3 (none of the server's dependencies); returns its paw.

    ``paw``: the id it asks for (an agent coming back as itself); by default the server assigns one."""
    env = {**no_proxy(), "PYTHONPATH": str(SRC)}
    cmd = [
        system_python(),
        "-m",
        "assay.agent",
        "--server",
        server.url,
        "--enrol-token",
        ENROL,
        "--group",
        group,
        *(["--paw", paw] if paw else []),
    ]
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
def agent_process(
    server: Server, group: str, paw: str | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc, paw = start_agent(server, group, paw)
    try:
        yield proc, paw
    finally:
        stop(proc)
