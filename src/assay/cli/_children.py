"""Child processes of `assay demo`: started, watched and stopped by PID, never by name.

Children run in their own session so that Ctrl-C reaches only the demo, which then shuts the round down in
order (finish the operation, let cleanup run, drain the sensor) instead of every process dying at once.
Their output goes to log files in the round directory; a child that dies early is reported with its log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from assay.errors import AssayError


class ChildError(AssayError):
    """A child process of the round failed to start or died."""


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ChildError(f"{self.name} was not started")
        return self.proc.pid

    def start(self) -> Child:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **self.env},
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check(self) -> None:
        """Raise with the log's tail if the child has died."""
        if self.proc is not None and self.proc.poll() is not None:
            raise ChildError(
                f"{self.name} exited with code {self.proc.returncode}; last lines of {self.log_path}:\n"
                + self.log_tail()
            )

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, then SIGKILL: only this child's own PID."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode


def assay_argv(*args: str) -> list[str]:
    """Run Assay's own CLI with this interpreter (the venv's), whatever is on PATH."""
    return [sys.executable, "-m", "assay", *args]


def wait_until(
    what: str,
    condition: Callable[[], bool],
    timeout: float,
    children: Sequence[Child] = (),
    interval: float = 0.05,
) -> None:
    """Poll ``condition`` until true; fail early, with the log, if a child dies meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        for child in children:
            child.check()
        if condition():
            return
        if time.monotonic() >= deadline:
            raise ChildError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
