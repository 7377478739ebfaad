"""Fault: the disk under the SQLite database fills up while the server writes.

The data directory is a 3 MB tmpfs this test mounts (root) and unmounts. Telemetry is written through the
API until the disk is full, then: the write that did not fit gets a clear error (507, saying the disk is
full; never a 500 traceback), the database passes `PRAGMA integrity_check` with every earlier batch intact,
and the server keeps answering reads (and writes again once space is freed).
"""

from __future__ import annotations

import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serving import Server, start_server, stop

BATCH = 200


def _batch(n: int) -> dict[str, Any]:
    now = time.time()
    events = [
        {
            "@timestamp": now,
            "event": {"action": "exec", "source": "ebpf"},
            "host": {"name": "disk-full"},
            "process": {
                "pid": 1000 + i,
                "entity_id": f"{1000 + i}:{n}",
                "command_line": f"batch {n} " + "x" * 200,
            },
        }
        for i in range(BATCH)
    ]
    return {"events": events, "alerts": []}


@pytest.fixture
def small_disk() -> Iterator[Path]:
    mount = Path(tempfile.mkdtemp(prefix="assay-full-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mount)], check=False
    )
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


@pytest.mark.root
def test_full_disk_gives_a_clear_error_keeps_the_database_and_keeps_answering(small_disk: Path) -> None:
    data = small_disk / "data"
    server: Server = start_server(data)
    stored: list[int] = []
    refusal: tuple[int, Any] | None = None
    try:
        (small_disk / "filler").write_bytes(b"\0" * 1_500_000)  # held back, to give it back later
        for n in range(200):
            status, body = server.call("POST", "/api/v2/telemetry", _batch(n))
            if status != 200:
                refusal = (status, body)
                break
            stored.append(n)
        assert refusal is not None, "3 MB never filled up"
        assert stored, "not even one batch fitted"
        status, body = refusal
        assert status == 507, refusal
        assert "disk" in body["error"].lower() and "full" in body["error"].lower(), body
        assert "Traceback" not in str(body)
        # Reads still work on a full disk.
        sensor = server.ok("GET", "/api/v2/sensor")
        assert sensor, sensor
        status, events = server.call("GET", "/api/v2/events?host=disk-full&limit=10000")
        assert status == 200 and len(events) == min(10_000, BATCH * len(stored)), (status, len(events))
        assert server.ok("GET", "/api/v2/agents") == []
        assert server.process.poll() is None
        # Space back: the server writes again without a restart.
        (small_disk / "filler").unlink()
        status, body = server.call("POST", "/api/v2/telemetry", _batch(len(stored)))
        assert status == 200, (status, body)
        stored.append(len(stored))
    finally:
        stop(server.process)
    db = sqlite3.connect(data / "assay.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        count = db.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        db.close()
    assert count == BATCH * len(stored)  # every acknowledged batch, and nothing of the refused one
