"""Process storm: what each sensor source captures, loses and costs, side by side with a no-sensor baseline.

    python bench/sensor_storm.py                   # 20,000 x `/bin/true a b c d`, 2,000 x 40 long args
    python bench/sensor_storm.py --storm 2000 --long 200 --sources ebpf

Per source and workload it prints: processes spawned and the spawn rate against a no-sensor baseline run
just before it (this machine's load drifts: a baseline per row keeps the ratio honest); exec events
captured for the storm's own processes; how many of those had the complete argv; loss the source reported
against what is actually missing; Python CPU per 1,000 events delivered; exec -> delivered latency; and
the attach time. Two extra eBPF rows: reading the ring buffer without decoding (the floor under the Python
cost), and a forced-loss run (a 256 KiB ring not read during the storm) to show the loss accounting
against the truth.

Needs root. Sources that cannot start here are listed with their reason.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from assay.errors import SensorError
from assay.events import Event
from assay.sensor import AuditSource, EbpfSource, ProcConnectorSource, Source

# The spawner: posix_spawn, 4 in flight (like a busy shell or build), prints its pid, then its wall time.
SPAWNER = r"""
import os, sys, time
n = int(sys.argv[1]); args = sys.argv[2:]
print(os.getpid(), flush=True)
sys.stdin.readline()  # go
t0 = time.monotonic(); live = set()
for _ in range(n):
    live.add(os.posix_spawn("/bin/true", ["/bin/true", *args], os.environ))
    if len(live) >= 4:
        pid, _ = os.wait(); live.discard(pid)
for pid in live:
    os.waitpid(pid, 0)
print(time.monotonic() - t0, flush=True)
"""

STORM_ARGS = ["a", "b", "c", "d"]
LONG_ARGS = [f"{i:02d}" + "x" * 198 for i in range(40)]  # 40 x 200 chars, 8 KB of argv


@dataclass
class Row:
    source: str
    workload: str
    spawned: int = 0
    rate: float = 0.0
    captured: int | None = None
    complete: int | None = None
    loss_reported: int | None = None
    missing: int | None = None
    cpu_ms_per_1k: float | None = None
    events: int = 0
    latencies: list[float] = field(default_factory=list)
    attach: float | None = None
    baseline: float = 0.0
    note: str = ""


class RawEbpf(EbpfSource):
    """Reads the ring buffer and counts records without decoding them: the floor of the Python cost."""

    def _handle(self, rec: memoryview) -> None:
        self._records += 1


def run(source: Source | None, workload: str, args: list[str], n: int, poll: bool = True) -> Row:
    row = Row(source.name if source else "baseline (no sensor)", workload)
    if source is not None:
        t0 = time.monotonic()
        source.start()
        row.attach = time.monotonic() - t0
    sp = subprocess.Popen(
        [sys.executable, "-c", SPAWNER, str(n), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sp.stdout is not None and sp.stdin is not None
    spawner = int(sp.stdout.readline())
    events: list[Event] = []
    latencies: list[float] = []
    cpu0 = time.process_time()
    sp.stdin.write("go\n")
    sp.stdin.flush()

    def pump(timeout: float) -> None:
        if source is None:
            time.sleep(timeout)
            return
        batch = source.poll(timeout)
        now = time.time()
        for e in batch:
            if e.action == "exec" and e.get("process.parent.pid") == spawner:
                latencies.append(now - e.timestamp)
        events.extend(batch)

    while sp.poll() is None:
        pump(0.02) if poll else time.sleep(0.05)
    wall = float(sp.stdout.readline())
    sp.stdout.close()
    sp.stdin.close()
    if source is not None:
        for _ in range(25):  # what the sensor still has queued
            pump(0.02)
        source.stop()
        events.extend(source.poll(0))
    cpu = time.process_time() - cpu0
    row.spawned, row.rate = n, n / wall
    if source is None:
        return row
    stats = source.stats()
    mine = [e for e in events if e.action == "exec" and e.get("process.parent.pid") == spawner]
    expected = ["/bin/true", *args]
    row.captured = len(mine)
    row.complete = sum(1 for e in mine if e.get("process.args") == expected)
    row.loss_reported = sum(int(e["loss.count"]) for e in events if e.action == "loss")
    # fork, exec and exit of each spawned process: all three name the spawner as parent
    ours = sum(
        1 for e in events if e.action in ("fork", "exec", "exit") and e.get("process.parent.pid") == spawner
    )
    row.missing = 3 * n - ours
    delivered = stats.get("events", len(events)) or stats.get("records", 0)
    row.events = delivered
    row.cpu_ms_per_1k = cpu * 1000 / max(delivered, 1) * 1000
    row.latencies = latencies
    if isinstance(source, AuditSource):
        row.note = "loss counted in audit records"
    if isinstance(source, RawEbpf):
        row.captured = row.complete = row.missing = None
        row.events = stats.get("records", 0)
        row.cpu_ms_per_1k = cpu * 1000 / max(row.events, 1) * 1000
        row.note = "records read, not decoded"
    return row


def fmt(v: Any, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[Row]) -> None:
    head = (
        f"{'source':<28} {'workload':<6} {'spawned':>7} {'spawn/s':>8} {'vs base':>7} {'exec seen':>9} "
        f"{'argv ok':>7} {'loss rep.':>9} {'missing':>8} {'CPU ms/1k':>9} {'lat p50':>8} {'lat p99':>8} "
        f"{'attach s':>8}  note"
    )
    print(head)
    print("-" * len(head))
    for r in rows:

        def pct(x: int, r: Row = r) -> str:
            return f"{100 * x / r.spawned:.1f}%" if r.spawned else "-"

        p50 = f"{statistics.median(r.latencies) * 1000:.1f}ms" if r.latencies else "-"
        p99 = f"{sorted(r.latencies)[int(len(r.latencies) * 0.99) - 1] * 1000:.1f}ms" if r.latencies else "-"
        print(
            f"{r.source:<28} {r.workload:<6} {r.spawned:>7} {r.rate:>8.0f} "
            f"{r.rate / r.baseline:>7.2f} "
            f"{pct(r.captured) if r.captured is not None else '-':>9} "
            f"{pct(r.complete) if r.complete is not None else '-':>7} "
            f"{fmt(r.loss_reported):>9} {fmt(r.missing):>8} {fmt(r.cpu_ms_per_1k, '.1f'):>9} "
            f"{p50:>8} {p99:>8} {fmt(r.attach, '.3f'):>8}  {r.note}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--storm", type=int, default=20000)
    ap.add_argument("--long", type=int, default=2000)
    ap.add_argument("--sources", default="ebpf,audit,proc_connector")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("sensor_storm: needs root (skipped)")
        return
    host = os.uname().nodename
    makers = {
        "ebpf": lambda: EbpfSource(host),
        "ebpf (raw ring read)": lambda: RawEbpf(host),
        "audit": lambda: AuditSource(host, wait_for_owner=30),
        "proc_connector": lambda: ProcConnectorSource(host),
        "ebpf forced loss (256 KiB)": lambda: EbpfSource(host, ring_bytes=256 << 10),
    }
    wanted = [s.strip() for s in args.sources.split(",") if s.strip()]
    order = list(wanted)
    if "ebpf" in wanted:
        order[order.index("ebpf") + 1 : order.index("ebpf") + 1] = ["ebpf (raw ring read)"]
        order.append("ebpf forced loss (256 KiB)")
    rows: list[Row] = []
    for workload, wargs, n in (("storm", STORM_ARGS, args.storm), ("long", LONG_ARGS, args.long)):
        for name in order:
            if name not in makers:
                print(f"unknown source {name!r}")
                continue
            base = run(None, workload, wargs, n)  # the baseline for this row, measured just before it
            base.baseline = base.rate
            try:
                src = makers[name]()
                forced = name.startswith("ebpf forced")
                row = run(src, workload, wargs, n, poll=not forced)
            except SensorError as exc:
                print(f"{name}: not available here: {exc}")
                continue
            row.source, row.baseline = name, base.rate
            if forced:
                row.latencies = []  # nothing read during the storm: the latency says nothing
            rows.append(base)
            rows.append(row)
    table(rows)
    print(
        "\nloss rep. = loss the source reported (all processes on the host); missing = fork/exec/exit events "
        "of the storm's own processes that were not delivered. CPU = this process's CPU (decoding, tree, "
        "self-noise) per 1,000 events delivered. Latency = exec in the kernel -> event returned by poll()."
    )


if __name__ == "__main__":
    main()
