"""Fault: the PostgreSQL server restarts while the Assay server is under write load.

This test starts its own cluster (so restarting it touches nothing else) and restarts it with `pg_ctl` while
a writer posts telemetry batches. Requests that arrive while the database is down may be refused with a
clear 503; every batch the server acknowledged (200) must be in the database afterwards, and the server
must reconnect by itself (no restart of Assay) and acknowledge writes again.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from serving import start_server, stop

PER_BATCH = 50


def _bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found:
        pytest.skip("PostgreSQL server binaries not found under /usr/lib/postgresql")
    return found[-1].parent


@pytest.fixture
def own_postgres() -> Iterator[tuple[str, Callable[[], None]]]:
    """(URL, restart) of a cluster this test owns, on a unix socket only; stopped by its data dir."""
    bindir = _bindir()
    base = Path(tempfile.mkdtemp(prefix="assay-pgr-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(base, account.pw_uid, account.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", 40000 + os.getpid() % 10000
    options = f"-k {base} -p {port} -c listen_addresses=''"
    ctl = [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-t", "60"]
    initdb = [*run_as, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "assay", "--no-sync"]
    subprocess.run(initdb, check=True, capture_output=True, timeout=120)
    subprocess.run([*ctl, "-o", options, "start"], check=True, capture_output=True, timeout=120)

    def restart() -> None:
        subprocess.run(
            [*ctl, "-m", "fast", "-o", options, "restart"], check=True, capture_output=True, timeout=60
        )

    try:
        yield f"postgresql+psycopg://assay@/postgres?host={base}&port={port}", restart
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True, timeout=60, check=False)
        shutil.rmtree(base, ignore_errors=True)


def _batch(n: int) -> dict[str, Any]:
    events = [
        {
            "@timestamp": time.time(),
            "event": {"action": "exec", "source": "ebpf"},
            "host": {"name": "pg-restart"},
            "process": {"pid": 2000 + i, "entity_id": f"{2000 + i}:{n}", "command_line": f"batch {n}"},
        }
        for i in range(PER_BATCH)
    ]
    return {"events": events, "alerts": []}


@pytest.mark.postgres
@pytest.mark.slow
def test_postgres_restart_under_load_loses_nothing_acknowledged(
    tmp_path: Path, own_postgres: tuple[str, Callable[[], None]]
) -> None:
    url, restart = own_postgres
    server = start_server(tmp_path / "data", "--db", url)
    acked: list[int] = []
    refused: list[tuple[int, int, Any]] = []
    stopping = threading.Event()

    def writer() -> None:
        n = 0
        while not stopping.is_set():
            status, body = server.call("POST", "/api/v2/telemetry", _batch(n))
            if status == 200:
                acked.append(n)
            else:
                refused.append((n, status, body))
            n += 1

    thread = threading.Thread(target=writer, daemon=True)
    try:
        thread.start()
        time.sleep(1.5)
        before = len(acked)
        assert before > 0, refused
        restart()
        restarted = time.monotonic()
        while len(acked) < before + 20 and time.monotonic() - restarted < 20:
            time.sleep(0.05)
        stopping.set()
        thread.join(timeout=70)
        assert len(acked) >= before + 20, f"no writes acknowledged after the restart: {refused[-3:]}"
        sensor = server.ok("GET", "/api/v2/sensor")  # reads answer too
        assert sensor
        assert server.process.poll() is None
    finally:
        stopping.set()
        stop(server.process)
    for _n, status, body in refused:  # a refusal says the database failed: no 500, no traceback
        assert status == 503, (status, body)
        assert "failed" in body["error"], body
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT split_part(entity_id, ':', 2)::int, count(*) FROM events GROUP BY 1"
        ).fetchall()
    counts = dict(rows)
    missing = [n for n in acked if counts.get(n) != PER_BATCH]
    assert not missing, f"acknowledged batches not (fully) stored: {missing[:10]}"
    print(f"\npostgres restart: {len(acked)} batches acknowledged, {len(refused)} refused during the restart")
