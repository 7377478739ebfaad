"""Shared pieces of the fault tests: content written to a temp dir, and waiting on files and conditions."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def write_content(base: Path, adversary_id: str, abilities: Sequence[dict[str, Any]]) -> Path:
    """A content directory with these abilities and one adversary that runs them in order."""
    content = base / "content"
    content.mkdir()
    (content / "abilities.yml").write_text(json.dumps(list(abilities)))
    adversary = {
        "adversary_id": adversary_id,
        "name": adversary_id,
        "atomic_ordering": [a["id"] for a in abilities],
    }
    (content / "adversary.yml").write_text(json.dumps(adversary))
    return content


def ability(
    ability_id: str, command: str, *, timeout: int = 30, cleanup: str | None = None
) -> dict[str, Any]:
    executor: dict[str, Any] = {"name": "sh", "platform": "linux", "command": command, "timeout": timeout}
    if cleanup is not None:
        executor["cleanup"] = cleanup
    return {
        "id": ability_id,
        "name": ability_id,
        "tactic": "execution",
        "technique_id": "T1059.004",
        "safety": "safe",
        "executors": [executor],
    }


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = 30, every: float = 0.05) -> T:
    """Poll ``probe`` until it returns something other than None (or False); fail saying ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value is not None and value is not False:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def kill_pid_file(path: Path) -> None:
    """Kill the process whose pid a command of ours wrote to ``path`` (a child our killed agent left)."""
    if not path.exists():
        return
    text = path.read_text().strip()
    if not text:
        return
    try:
        os.kill(int(text), signal.SIGKILL)
    except ProcessLookupError:
        pass
