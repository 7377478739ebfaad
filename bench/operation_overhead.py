"""Operation overhead (issue 3): `assay serve` + one real local agent at sleep 0 running N trivial links.

Prints, for an operation of N `true` links (default 50) on one local agent: the median and p95 of "result
received → next link handed to the agent" (both stamped by the server: `finished_at` of a link and
`delegated_at` of the next), and the operation's wall time, beside a baseline measured in the same run: the
agent's runner spawning `true` N times with no server at all (the floor that planning, storage and HTTP add
to). Targets: median ≤ 20 ms, N = 50 in under 5 s. Caldera's atomic planner polls every 5 s: 8 links took
41 s at agent sleep 0 (../shared/notes/caldera-formats.md §E).

    .venv/bin/python bench/operation_overhead.py [N]
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from assay.agent import Runner
from assay.storage import Store, sqlite_url

ROOT = Path(__file__).resolve().parent.parent
KEY, TOKEN = "bench-key-" + "k" * 20, "bench-token-" + "t" * 20


def call(url: str, method: str, path: str, body: object = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url + path, data, {"KEY": KEY, "Content-Type": "application/json"}, method=method
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    runner = Runner()
    started = time.perf_counter()
    for _ in range(n):
        runner.run("sh", "true", 10)
    baseline = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        content = base / "content"
        content.mkdir()
        abilities = [
            {
                "id": f"true-{i}",
                "name": "true",
                "tactic": "execution",
                "technique_id": "T1059.004",
                "safety": "safe",
                "executors": [{"name": "sh", "platform": "linux", "command": "true"}],
            }
            for i in range(n)
        ]
        (content / "abilities.yml").write_text(json.dumps(abilities))
        adversary = {
            "adversary_id": "bench",
            "name": "bench",
            "atomic_ordering": [a["id"] for a in abilities],
        }
        (content / "adversary.yml").write_text(json.dumps(adversary))
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        server = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from assay.cli import main; main()",
                "serve",
                "--port",
                "0",
                "--data-dir",
                str(base / "data"),
                "--api-key",
                KEY,
                "--enrol-token",
                TOKEN,
                "--content",
                str(content),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        agent = None
        try:
            assert server.stdout is not None
            url = ""
            for line in server.stdout:
                if "listening on " in line:
                    url = line.split("listening on ", 1)[1].strip()
                    break
            agent = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "assay.agent",
                    "--server",
                    url,
                    "--enrol-token",
                    TOKEN,
                    "--group",
                    "bench",
                ],
                env={**env, "PYTHONPATH": str(ROOT / "src")},
                stderr=subprocess.DEVNULL,
            )
            while not call(url, "GET", "/api/v2/agents"):
                time.sleep(0.05)
            body = {"name": "bench", "adversary": {"adversary_id": "bench"}, "planner": {"id": "atomic"}}
            t0 = time.perf_counter()
            op = call(url, "POST", "/api/v2/operations", {**body, "group": "bench"})
            assert isinstance(op, dict)
            while op["state"] != "finished":
                time.sleep(0.01)
                op = call(url, "GET", f"/api/v2/operations/{op['id']}")
                assert isinstance(op, dict)
            wall = time.perf_counter() - t0
            store = Store.open(sqlite_url(base / "data"), migrate=False)
            links = [lk for lk in store.links(op["id"]) if lk.delegated_at is not None]
            store.close()
        finally:
            for proc in (agent, server):
                if proc is not None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=10)
            if server.stdout:
                server.stdout.close()
    gaps = sorted((b.delegated_at or 0) - (a.finished_at or 0) for a, b in itertools.pairwise(links))
    p95 = gaps[min(len(gaps) - 1, int(0.95 * len(gaps)))]
    median = statistics.median(gaps)
    print(f"links: {len(links)} (one agent, sleep 0, SQLite)")
    print(
        f"result received -> next link delivered: median {median * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms "
        f"(target: median <= 20 ms: {'met' if median <= 0.020 else 'NOT met'})"
    )
    verdict = "met" if wall < 5 * n / 50 else "NOT met"
    print(f"operation wall time: {wall:.2f} s (target: 50 links in < 5 s: {verdict})")
    print(f"baseline, the agent's runner alone ({n} x true, no server): {baseline:.2f} s")
    print(f"ratio operation / baseline: {wall / baseline:.1f}x")


if __name__ == "__main__":
    main()
