"""Helpers for the C2 tests: a real `assay serve` process on an ephemeral loopback port, and HTTP calls."""

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

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
API_KEY = "c2-test-api-key-" + "k" * 24
ENROL = "c2-test-enrol-token-" + "e" * 24

# Three harmless abilities (they only print) and an adversary running them in order.
CONTENT = """\
- id: c2-echo
  name: Echo
  tactic: discovery
  technique_id: T1082
  safety: safe
  platforms:
    linux:
      sh:
        command: echo hello-from-#{paw}
        cleanup: echo cleaned-#{paw}
- id: c2-id
  name: Id
  tactic: discovery
  technique_id: T1033
  safety: safe
  platforms:
    linux:
      sh:
        command: id -u
- id: c2-slow
  name: Slow
  tactic: discovery
  technique_id: T1082
  safety: safe
  platforms:
    linux:
      sh:
        command: sleep 3; echo slow-done
- id: c2-payload
  name: Payload
  tactic: execution
  technique_id: T1059.004
  safety: safe
  platforms:
    linux:
      sh:
        command: sh ./c2-probe.sh
        payloads: [c2-probe.sh]
"""
PROBE = b"#!/bin/sh\necho probe-ran\n"


def no_proxy() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def system_python() -> str:
    """The system python3, which has none of the server's dependencies (the agent must not need them)."""
    return shutil.which("python3", path="/usr/bin:/bin") or sys.executable


def write_content(base: Path, extra_adversaries: dict[str, list[str]] | None = None) -> Path:
    content = base / "content"
    content.mkdir(exist_ok=True)
    (content / "abilities.yml").write_text(CONTENT)
    adversaries = {
        "c2-small": ["c2-echo", "c2-id"],
        "c2-payload": ["c2-payload"],
        "c2-slow": ["c2-slow"],
        **(extra_adversaries or {}),
    }
    for name, order in adversaries.items():
        (content / f"{name}.yml").write_text(
            json.dumps({"adversary_id": name, "name": name, "atomic_ordering": order})
        )
    payloads = content / "payloads"
    payloads.mkdir(exist_ok=True)
    (payloads / "c2-probe.sh").write_bytes(PROBE)
    return content


@dataclass
class Server:
    url: str
    data_dir: Path
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = API_KEY,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        sent = {"Content-Type": "application/json", **(headers or {})}
        if key:
            sent["KEY"] = key
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.url + path, data, sent, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                payload = response.read()
                return response.status, _decode(payload)
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, _decode(exc.read())


def _decode(payload: bytes) -> Any:
    try:
        return json.loads(payload) if payload else None
    except ValueError:
        return payload


def start_server(data_dir: Path, *args: str, port: int = 0) -> Server:
    cmd = [
        sys.executable,
        "-c",
        "from assay.cli import main; main()",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        *args,
    ]
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
def serving(base: Path, *args: str, content: bool = True) -> Iterator[Server]:
    extra = ["--content", str(write_content(base))] if content else []
    server = start_server(base / "data", "--api-key", API_KEY, "--enrol-token", ENROL, *extra, *args)
    try:
        yield server
    finally:
        stop(server.process)


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def run_operation(server: Server, adversary: str, group: str, timeout: float = 60.0) -> dict[str, Any]:
    status, op = server.call(
        "POST",
        "/api/v2/operations",
        {"name": f"op-{adversary}", "adversary": {"adversary_id": adversary}, "group": group},
    )
    assert status == 200, op

    def finished() -> dict[str, Any] | None:
        _, current = server.call("GET", f"/api/v2/operations/{op['id']}")
        return current if current["state"] == "finished" else None

    return wait_for(finished, timeout, f"operation {op['id']} to finish")  # type: ignore[no-any-return]
