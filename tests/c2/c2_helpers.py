"""Helpers for the C2 tests: a real `assay serve` process on an ephemeral loopback port, and HTTP calls."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from serving import API_KEY, ENROL, ROOT, SRC, Server, no_proxy, start_server, stop, system_python

__all__ = ["API_KEY", "ENROL", "ROOT", "SRC", "Server", "no_proxy", "start_server", "stop", "system_python"]

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


@contextmanager
def serving(base: Path, *args: str, content: bool = True) -> Iterator[Server]:
    extra = ["--content", str(write_content(base))] if content else []
    server = start_server(base / "data", *extra, *args)
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
