"""Running commands for the benign workload: every command's argv, exit code and time kept as a record.

A step is a named group of commands; it succeeded when every command exited 0. The records are what the
baseline report (and its test) shows to prove a step really ran, not only that the workload exited 0.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COMMAND_TIMEOUT = 60.0


@dataclass
class CommandRecord:
    argv: list[str]
    returncode: int
    seconds: float
    output: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "argv": self.argv,
            "returncode": self.returncode,
            "seconds": round(self.seconds, 3),
            "output": self.output,
        }


@dataclass
class StepRecord:
    """One run of one workload step."""

    step: str
    cycle: int
    started: float
    ended: float = 0.0
    commands: list[CommandRecord] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.commands) and all(c.returncode == 0 for c in self.commands)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "cycle": self.cycle,
            "started": self.started,
            "ended": self.ended,
            "ok": self.ok,
            "error": self.error,
            "commands": [c.to_dict() for c in self.commands],
        }


class StepFailed(Exception):
    """A command of a step exited non-zero: the step stops there (its record says which command)."""


class Runner:
    """Runs the commands of one step, recording each; stops the step at the first failure."""

    def __init__(self, record: StepRecord, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.record = record
        self.cwd = cwd
        self.env = {**os.environ, **(env or {})}

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        stdin: str | None = None,
        check: bool = True,
        timeout: float = COMMAND_TIMEOUT,
    ) -> CommandRecord:
        started = time.monotonic()
        try:
            proc = subprocess.run(
                list(argv),
                cwd=cwd or self.cwd,
                input=stdin.encode() if stdin is not None else None,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                capture_output=True,
                env=self.env,
                timeout=timeout,
                check=False,
            )
            rc, out = proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace")
        except subprocess.TimeoutExpired as exc:
            rc, out = -9, f"timed out after {timeout:.0f} s: {exc}"
        except OSError as exc:
            rc, out = 127, f"cannot run {argv[0]}: {exc}"
        rec = CommandRecord(list(argv), rc, time.monotonic() - started, out[-2000:])
        self.record.commands.append(rec)
        if check and rc != 0:
            raise StepFailed(f"{' '.join(argv)} exited {rc}: {out[-500:]}")
        return rec
