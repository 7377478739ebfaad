"""Process storm: what each sensor source captures, loses and costs, side by side with a no-sensor baseline.

    python bench/sensor_storm.py                   # 20,000 x `/bin/true a b c d`, 2,000 x 40 long args
    python bench/sensor_storm.py --storm 2000 --long 200 --sources ebpf

Per source and workload it prints: processes spawned and the spawn rate against a no-sensor baseline run
just before it (this machine's load drifts: a baseline per row keeps the ratio honest); exec events
captured for the storm's own processes; how many of those had the complete argv; loss the source reported
against what is actually missing; exec -> delivered latency; and the attach time. Two extra eBPF rows:
reading the ring buffer without decoding (the floor under the Python cost), and a forced-loss run (a
256 KiB ring not read during the storm) to show the loss accounting against the truth.

What "Python CPU" means here (the second table). The storm is spawned by a separate process, so none of
its CPU is ours. The consumer is this process's main thread; the figure is that thread's CPU
(``time.thread_time``, user + system) spent *inside* ``source.poll()``: waiting, reading the ring, decoding,
the process tree, loss checks and the self-noise filter, i.e. what the sensor costs its host. The garbage
collections that ran inside ``poll()`` are counted in it and shown apart. The bench's own bookkeeping
(matching events to the storm, latencies) runs outside ``poll()``, keeps no events (a consumer streams
them on), and appears only in the process-wide figure printed beside it, which is what earlier versions of
this bench reported. ``stop()`` (detaching and closing the object) is a one-off and reported on its own.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
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
IDLE_POLLS = 25
LONG_ARGS = [f"{i:02d}" + "x" * 198 for i in range(40)]  # 40 x 200 chars, 8 KB of argv


class CpuMeter:
    """CPU of the consumer thread inside ``poll()``, and of the garbage collections that ran there."""

    def __init__(self) -> None:
        self.poll_cpu = 0.0
        self.gc_cpu = 0.0
        self.collections = [0, 0, 0]
        self.polls = 0
        self._inside = False
        self._gc_t0 = 0.0

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if not self._inside:
            return
        if phase == "start":
            self._gc_t0 = time.thread_time()
        else:
            self.gc_cpu += time.thread_time() - self._gc_t0
            self.collections[info["generation"]] += 1

    def poll(self, source: Source, timeout: float) -> list[Event]:
        self._inside = True
        t0 = time.thread_time()
        try:
            return source.poll(timeout)
        finally:
            self.poll_cpu += time.thread_time() - t0
            self._inside = False
            self.polls += 1

    def __enter__(self) -> CpuMeter:
        gc.callbacks.append(self._on_gc)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._on_gc)


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
    events: int = 0
    poll_cpu: float = 0.0
    gc_cpu: float = 0.0
    collections: list[int] = field(default_factory=lambda: [0, 0, 0])
    polls: int = 0
    process_cpu: float = 0.0
    stop_cpu: float = 0.0
    idle_poll_cpu: float = 0.0
    latencies: list[float] = field(default_factory=list)
    attach: float | None = None
    baseline: float = 0.0
    note: str = ""


class RawEbpf(EbpfSource):
    """Reads the ring buffer and counts records without decoding them: the floor of the Python cost.

    With ``save``, it also copies every record there (for sensor_decode.py --records), which costs a copy.
    """

    def __init__(self, *args: Any, save: list[bytes] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if save is None:
            self.decoder.feed = lambda buf, off, n: None  # type: ignore[method-assign]
        else:
            self.decoder.feed = lambda buf, off, n: save.append(buf[off : off + n])  # type: ignore[method-assign]


class Tally:
    """What the bench needs from the event stream, taken batch by batch (events are not kept)."""

    def __init__(self, spawner: int, expected_args: list[str]) -> None:
        self.spawner = spawner
        self.expected = expected_args
        self.captured = self.complete = self.ours = self.loss = 0
        self.latencies: list[float] = []

    def add(self, batch: list[Event]) -> None:
        now = time.time()
        spawner = self.spawner
        for e in batch:
            action = e.action
            if action == "loss":
                self.loss += int(e["loss.count"])
            elif action in ("fork", "exec", "exit") and e.get("process.parent.pid") == spawner:
                # fork, exec and exit of each spawned process: all three name the spawner as parent
                self.ours += 1
                if action == "exec":
                    self.captured += 1
                    self.complete += e.get("process.args") == self.expected
                    self.latencies.append(now - e.timestamp)


def run(
    source: Source | None, workload: str, args: list[str], n: int, poll: bool = True, interval: float = 0.02
) -> Row:
    row = Row(source.name if source else "baseline (no sensor)", workload)
    events_before = 0
    if source is not None:
        t0 = time.monotonic()
        source.start()
        row.attach = time.monotonic() - t0
        # the fixed cost of a poll() with (almost) nothing to read, at the same interval, before the storm
        t0 = time.thread_time()
        for _ in range(IDLE_POLLS):
            source.poll(interval)
        row.idle_poll_cpu = (time.thread_time() - t0) / IDLE_POLLS
        events_before = source.stats()["events"]
    sp = subprocess.Popen(
        [sys.executable, "-c", SPAWNER, str(n), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sp.stdout is not None and sp.stdin is not None
    tally = Tally(int(sp.stdout.readline()), ["/bin/true", *args])
    with CpuMeter() as meter:
        cpu0 = time.process_time()
        sp.stdin.write("go\n")
        sp.stdin.flush()

        def pump(timeout: float) -> None:
            if source is None:
                time.sleep(timeout)
            else:
                tally.add(meter.poll(source, timeout))

        while sp.poll() is None:
            pump(interval) if poll else time.sleep(0.05)
        wall = float(sp.stdout.readline())
        sp.stdout.close()
        sp.stdin.close()
        if source is not None:
            for _ in range(25):  # what the sensor still has queued
                pump(0.02)
            row.process_cpu = time.process_time() - cpu0
            t0 = time.thread_time()
            source.stop()
            row.stop_cpu = time.thread_time() - t0
            tally.add(meter.poll(source, 0))
    row.spawned, row.rate = n, n / wall
    if source is None:
        return row
    stats = source.stats()
    row.poll_cpu, row.gc_cpu, row.collections, row.polls = (
        meter.poll_cpu,
        meter.gc_cpu,
        meter.collections,
        meter.polls,
    )
    row.captured, row.complete, row.loss_reported = tally.captured, tally.complete, tally.loss
    row.missing = 3 * n - tally.ours
    row.events = stats.get("events", 0) - events_before
    row.latencies = tally.latencies
    if isinstance(source, AuditSource):
        row.note = "loss counted in audit records"
    if isinstance(source, RawEbpf):
        row.captured = row.complete = row.missing = None
        row.events = stats.get("records", 0)
        row.note = "records read, not decoded"
    return row


def fmt(v: Any, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


def per_1k(seconds: float, events: int) -> str:
    return f"{seconds * 1e6 / events:.2f}" if events else "-"


def table(rows: list[Row]) -> None:
    head = (
        f"{'source':<28} {'workload':<6} {'spawned':>7} {'spawn/s':>8} {'vs base':>7} {'exec seen':>9} "
        f"{'argv ok':>7} {'loss rep.':>9} {'missing':>8} {'lat p50':>8} {'lat p99':>8} {'attach s':>8}  note"
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
            f"{fmt(r.loss_reported):>9} {fmt(r.missing):>8} "
            f"{p50:>8} {p99:>8} {fmt(r.attach, '.3f'):>8}  {r.note}"
        )


def cpu_table(rows: list[Row]) -> None:
    head = (
        f"{'source':<28} {'workload':<6} {'events':>7} {'poll() CPU ms/1k':>16} {'of it GC':>8} "
        f"{'GC runs 0/1/2':>13} {'polls':>6} {'us/poll':>7} {'idle us/poll':>12} {'per event ms/1k':>15} "
        f"{'process CPU ms/1k':>17} {'stop() ms':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if r.source.startswith("baseline"):
            continue
        marginal = max(0.0, r.poll_cpu - r.polls * r.idle_poll_cpu)
        print(
            f"{r.source:<28} {r.workload:<6} {r.events:>7} {per_1k(r.poll_cpu, r.events):>16} "
            f"{per_1k(r.gc_cpu, r.events):>8} {'/'.join(map(str, r.collections)):>13} {r.polls:>6} "
            f"{r.poll_cpu * 1e6 / max(r.polls, 1):>7.0f} {r.idle_poll_cpu * 1e6:>12.0f} "
            f"{per_1k(marginal, r.events):>15} {per_1k(r.process_cpu, r.events):>17} "
            f"{r.stop_cpu * 1000:>9.1f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--storm", type=int, default=20000)
    ap.add_argument("--long", type=int, default=2000)
    ap.add_argument("--sources", default="ebpf,audit,proc_connector")
    ap.add_argument("--save-records", type=Path, help="save the raw row's records (for sensor_decode.py)")
    ap.add_argument(
        "--poll-ms",
        type=float,
        default=20.0,
        help="poll() timeout during the storm (20: the notes' drain interval; assay watch uses 50)",
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("sensor_storm: needs root (skipped)")
        return
    host = os.uname().nodename
    # the interpreter matters: the same decoding costs ~30% more on a CPython built without PGO/LTO
    load = os.getloadavg()[0]
    print(f"python: {sys.executable} {sys.version.split()[0]}; {os.cpu_count()} CPUs; load {load:.2f}")
    print(f"poll() timeout during the storm: {args.poll_ms:g} ms\n")
    saved: list[bytes] | None = [] if args.save_records else None
    makers = {
        "ebpf": lambda: EbpfSource(host),
        "ebpf (raw ring read)": lambda: RawEbpf(host, save=saved),
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
                row = run(src, workload, wargs, n, poll=not forced, interval=args.poll_ms / 1000)
            except SensorError as exc:
                print(f"{name}: not available here: {exc}")
                continue
            row.source, row.baseline = name, base.rate
            if forced:
                row.latencies = []  # nothing read during the storm: the latency says nothing
            rows.append(base)
            rows.append(row)
    if saved is not None:
        with args.save_records.open("wb") as fh:
            for rec in saved:
                fh.write(struct.pack("<I", len(rec)) + rec)
        print(
            f"saved {len(saved)} records to {args.save_records} (the raw rows also paid for copying them)\n"
        )
    table(rows)
    print(
        "\nloss rep. = loss the source reported (all processes on the host); missing = fork/exec/exit events "
        "of the storm's own processes that were not delivered. Latency = exec in the kernel -> event "
        "returned by poll().\n"
    )
    cpu_table(rows)
    print(
        "\nevents = events delivered (every process on the host; records read for the raw row). "
        "poll() CPU = the consumer thread's CPU inside source.poll() (ring, decoding, tree, loss checks, "
        "self-noise), GC included and shown apart; the storm runs in other processes. us/poll = the same "
        "CPU per poll() call (each call after a sleep pays a fixed cost, so fewer events per call cost more "
        f"each); idle us/poll = that fixed cost, measured over {IDLE_POLLS} polls before the storm; per "
        "event = poll() CPU less polls x idle cost, per 1,000 events (what each event adds). process CPU = "
        "the whole bench process over the same span (adds the bench's own bookkeeping). A forced-loss row "
        "reads its ring only after the storm: its CPU is per event delivered, not per event produced."
    )


if __name__ == "__main__":
    main()
