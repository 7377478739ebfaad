"""Fault: SIGTERM of the server while 500 simulated Caldera agents beacon and an operation runs.

The beacons come from a minimal client (base64 JSON profiles on `/enrol/<token>/beacon`, as Sandcat sends
them), 500 paws spread over worker threads; a real native agent runs the operation. The server is stopped
with SIGTERM mid-operation and started again on the same port while the load goes on. Afterwards every
acknowledged registration is stored, every acknowledged beacon's last-seen time survived the stop, and the
operation resumed where it was: each step ran once, in order, and the cleanups ran.
"""

from __future__ import annotations

import base64
import json
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fault_helpers import ability, wait_until, write_content

from assay.storage import Store, sqlite_url
from serving import ENROL, Server, agent_process, start_server, stop

AGENTS = 500
WORKERS = 25
STEPS = 6
STOP_AT = 2


def _beacon(url: str, paw: str) -> bool:
    profile = {"paw": paw, "group": "load", "host": "sim", "platform": "linux", "executors": ["sh"], "pid": 1}
    body = base64.b64encode(json.dumps(profile).encode())
    request = urllib.request.Request(f"{url}/enrol/{ENROL}/beacon", body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False  # the server is down: not acknowledged


class Load:
    """WORKERS threads, each beaconing for its share of the paws in turn; remembers what was acknowledged."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.acked: dict[str, float] = {}  # paw -> when its last acknowledged beacon was sent
        self.sent = self.failed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(WORKERS)]

    def _run(self, worker: int) -> None:
        paws = [f"sim-{i:03d}" for i in range(worker, AGENTS, WORKERS)]
        while not self._stop.is_set():
            for paw in paws:
                sent_at = time.time()
                ok = _beacon(self.url, paw)
                with self._lock:
                    self.sent += 1
                    if ok:
                        self.acked[paw] = sent_at
                    else:
                        self.failed += 1
                if not ok:
                    time.sleep(0.05)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=20)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_sigterm_under_beacon_load_loses_nothing_and_resumes_the_operation(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    log = tmp_path / "agent-side.log"
    steps = [
        ability(
            f"step-{i}",
            f"echo start {i} >> {log}\nsleep 0.5\necho step {i}",
            cleanup=f"echo cleanup {i} >> {log}" if i % 2 == 0 else None,
        )
        for i in range(STEPS)
    ]
    content = write_content(tmp_path, "sigterm", steps)
    db_args = ["--db", request.getfixturevalue("postgres_url")] if backend == "postgres" else []
    args = ("--content", str(content), "--caldera-compat", *db_args)
    server = start_server(tmp_path / "data", *args)
    second: Server | None = None
    try:
        with agent_process(server, "op") as (agent, _paw), Load(server.url) as load:
            wait_until("every simulated agent to register", lambda: len(load.acked) == AGENTS, timeout=40)
            body = {"name": "sigterm", "adversary": {"adversary_id": "sigterm"}, "group": "op"}
            op_id = server.ok("POST", "/api/v2/operations", body)["id"]
            wait_until(
                f"step {STOP_AT} to start", lambda: log.exists() and f"start {STOP_AT}" in log.read_text()
            )
            stopped_at = time.monotonic()
            stop(server.process, signal.SIGTERM)
            stop_seconds = time.monotonic() - stopped_at
            code = server.process.returncode
            acked_before_stop = dict(load.acked)
            second = start_server(tmp_path / "data", *args, port=server.port)
            op = second.wait_for(op_id, timeout=40)
            sent_before = load.sent
            wait_until("beacons acknowledged again", lambda: load.sent > sent_before + 200, timeout=20)
            assert agent.poll() is None
            listed = {a["paw"] for a in second.ok("GET", "/api/v2/agents")}
    finally:
        stop(server.process)
        if second is not None:
            stop(second.process)
    # uvicorn shuts down gracefully, then re-raises the signal it caught: -15 is a clean stop, as is 0.
    assert code in (0, -signal.SIGTERM), f"SIGTERM should stop the server cleanly, exit {code}"
    assert stop_seconds < 15, f"the server took {stop_seconds:.1f} s to stop"
    assert {f"sim-{i:03d}" for i in range(AGENTS)} <= listed
    url = db_args[1] if db_args else sqlite_url(tmp_path / "data")
    store = Store.open(url, migrate=False)
    try:
        seen = {a.paw: a.last_seen for a in store.agents()}
    finally:
        store.close()
    # Every beacon acknowledged before the stop left its mark: last-seen is at least when it was sent
    # (last-seen is written in batches; the stop must flush the batch, not drop it).
    stale = {p: (t, seen.get(p)) for p, t in acked_before_stop.items() if (seen.get(p) or 0) < t - 0.01}
    assert not stale, f"{len(stale)} acknowledged beacons lost their last-seen: {list(stale.items())[:3]}"
    lines = log.read_text().splitlines()
    assert [ln for ln in lines if ln.startswith("start ")] == [f"start {i}" for i in range(STEPS)]
    assert [ln for ln in lines if ln.startswith("cleanup ")] == ["cleanup 4", "cleanup 2", "cleanup 0"]
    assert op["state"] == "finished"
    main = [lk for lk in op["chain"] if not lk["cleanup"]]
    assert [lk["status"] for lk in main] == [0] * STEPS, [lk["status"] for lk in main]
    print(
        f"\nsigterm ({backend}): stopped in {stop_seconds:.1f} s; {load.sent} beacons, {load.failed} refused"
    )
