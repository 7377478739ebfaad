"""Fixtures for tests that watch the real kernel.

One eBPF source is attached for the whole session (attaching per test would add up). Other people's tests
run on this machine at the same time, so every test finds *its* events by the pids of the processes it
started (and their descendants) or by the temporary paths it created, never by "the next event".
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from assay.events import Event
from assay.sensor import EbpfSource, SelfNoise, Source


class Watch:
    """Collects a source's events and finds the ones belonging to a test's own processes."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.events: list[Event] = []

    def pump(self, timeout: float = 0.05) -> None:
        self.events.extend(self.source.poll(timeout))

    def wait_for(self, match: Callable[[Event], bool], timeout: float = 10.0, count: int = 1) -> list[Event]:
        """Poll until `count` events match (or timeout); return every matching event seen."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events if match(e)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            self.pump()

    def of(
        self, pid: int, timeout: float = 10.0, until: Callable[[Event], bool] | None = None
    ) -> list[Event]:
        """Events of process `pid` and its descendants, once `until` matched (default: the exit of `pid`)."""

        def in_tree(e: Event) -> bool:
            return e.pid == pid or any(x.startswith(f"{pid}:") for x in e.lineage)

        def done(e: Event) -> bool:
            return in_tree(e) and (until(e) if until else (e.action == "exit" and e.pid == pid))

        self.wait_for(done, timeout)
        return [e for e in self.events if in_tree(e)]

    def run(self, argv: list[str], cwd: str | Path | None = None, **kw: object) -> tuple[int, list[Event]]:
        """Run a small program to completion; return its pid and the events of its process tree."""
        p = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
        p.wait(timeout=30)
        return p.pid, self.of(p.pid)

    def python(self, code: str, cwd: str | Path | None = None) -> tuple[int, list[Event]]:
        return self.run([sys.executable, "-c", code], cwd=cwd)


@pytest.fixture(scope="session")
def ebpf_source() -> Iterator[EbpfSource]:
    src = EbpfSource(
        os.uname().nodename,
        SelfNoise(),
        sensitive_paths=("*/.ssh/", "*/.aws/credentials"),
    )
    src.start()
    yield src
    src.stop()


@pytest.fixture
def watch(ebpf_source: EbpfSource) -> Watch:
    w = Watch(ebpf_source)
    w.pump(0)  # drop what other tests (and other people) left queued
    w.events.clear()
    return w
