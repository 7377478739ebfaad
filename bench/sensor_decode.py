"""The eBPF sensor's Python cost per event without a kernel, a storm or noise: repeatable figures.

    python bench/sensor_decode.py                     # synthetic storm, long-argv and mixed streams
    python bench/sensor_decode.py --records FILE      # records saved by sensor_storm.py --save-records
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=_CallPythonObject \\
        python bench/sensor_decode.py --once          # instructions: the same count on every run

Each stream is laid out in anonymous memory exactly as the kernel lays out its ring buffer, then drained
through the real RingBuffer and Decoder, in drains of --batch records (what one poll() after a 20 ms sleep
sees in a storm here), the events of each drain dropped before the next (a consumer streams them on).
Printed per stream: the consumer thread's CPU per event for reading the ring only (the baseline, measured
in the same run) and for reading and decoding, their ratio, and the GC share. Unlike sensor_storm.py, the
caches are warm: this is the floor under the storm figure, which adds the cost of waking up cold after each
sleep and of sharing two CPUs with the storm.

Synthetic streams are shaped like the real ones (same record layouts, a spawner's fork + exec + exit of
`/bin/true a b c d` per process; `long`: 40 arguments of 200 characters; `mixed`: storm plus file writes,
renames, deletes and connects of a few busy processes). --once runs each stream once (for callgrind, which
counts only what runs inside the ctypes callback that wraps the measured drains).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import mmap
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from assay.sensor import _records as R
from assay.sensor._decoder import Decoder
from assay.sensor._ringbuf import RingBuffer
from assay.sensor._syscalls import by_name, by_number
from assay.sensor._tree import ProcessTree

NS = 10_000_000
HOST_NS = {"mnt": 4026531841, "net": 4026531840, "pid": 4026531836}
STORM_ARGV = [b"/bin/true", b"a", b"b", b"c", b"d"]
LONG_ARGV = [b"/bin/true"] + [f"{i:02d}".encode() + b"x" * 198 for i in range(40)]
SPAWNER_ARGV = [b"/usr/bin/python3", b"-c", b"import os ..." + b"x" * 300, b"20000", b"a", b"b", b"c", b"d"]


def header(
    kind: int, pid: int, start: int, ppid: int, pstart: int, ts: int, comm: bytes
) -> tuple[object, ...]:
    return (ts, start * NS + 7, pstart * NS + 3, kind, 0, pid, pid, ppid, pid, 1, 0, 0, 0, 0,
            0xFFFFFFFF, 0xFFFFFFFF, HOST_NS["mnt"], HOST_NS["net"], HOST_NS["pid"], 0, comm)  # fmt: skip


def exec_record(h: tuple[object, ...], argv: list[bytes], exe: bytes, filename: bytes, cwd: bytes) -> bytes:
    raw_argv = b"".join(a + b"\0" for a in argv)
    cg = b"user.slice"
    data = raw_argv + filename + b"\0" + exe + cwd + cg + b"\0"
    lens = (len(raw_argv), len(raw_argv), len(filename), len(exe), len(cwd), len(cg), 0)
    return R.EXEC.pack(*h, *lens) + data


def syscall_record(h: tuple[object, ...], name: str, path: bytes, blob: bytes = b"") -> bytes:
    sc = by_name()[name]
    slen = [0] * 6
    data = b""
    if path:
        data, slen[0] = path + b"\0", len(path) + 1
    sock = (0, 0, 0, 0, 0, 0, 0, b"", b"")
    if blob:
        family, port = struct.unpack_from("<H", blob)[0], struct.unpack_from(">H", blob, 2)[0]
        sock = (family, 1, 6, 40000, port, 0, 0, socket.inet_aton("127.0.0.1"), blob[4:8])
    args = (0xFFFFFF9C, 0, 0o1101, 0o644, 0, 0) if name == "openat" else (3, 0, len(blob), 0, 0, 0)
    flags = R.F_SOCK if blob else 0
    h = (*h[:4], flags, *h[5:])
    return R.SYS.pack(*h, 0, *args, sc.nr, *slen, len(blob), 0, *sock) + data + blob


def storm(n: int, argv: list[bytes], syscalls: bool = False) -> Iterator[bytes]:
    """A spawner (pid 1000) exec'd, then n children: fork, exec `argv`, exit; optionally busy neighbours."""
    tick = 500_000
    yield exec_record(header(R.EV_EXEC, 1000, tick, 999, 100, tick * NS, b"python3"), SPAWNER_ARGV,
                      b"/usr/bin/python3.11", b"/usr/bin/python3", b"/work")  # fmt: skip
    connect = (
        struct.pack("<H", socket.AF_INET) + struct.pack(">H", 8080) + socket.inet_aton("10.0.0.5") + bytes(8)
    )
    for i in range(n):
        pid, t = 2000 + i % 30000, tick + 1 + i
        parent = header(R.EV_FORK, 1000, tick, 999, 100, t * NS, b"python3")
        yield R.FORK.pack(*parent, t * NS, tick * NS, pid, 1000, pid)
        yield exec_record(header(R.EV_EXEC, pid, t, 1000, tick, t * NS + 50, b"true"), argv,
                          b"/usr/bin/true", b"/bin/true", b"/work")  # fmt: skip
        yield R.EXIT.pack(*header(R.EV_EXIT, pid, t, 1000, tick, t * NS + 90, b"true"), 0, 0)
        if syscalls and i % 2 == 0:  # a build next door: a few long-lived processes writing files
            w = header(R.EV_SYSCALL, 900 + i % 4, 1000 + i % 4, 1, 1, t * NS + 95, b"cc1")
            yield syscall_record(w, "openat", f"/tmp/build/obj{i % 97}.o".encode())
            if i % 6 == 0:
                yield syscall_record(w, "unlink", f"/tmp/build/obj{i % 89}.tmp".encode())
            if i % 10 == 0:
                yield syscall_record(w, "connect", b"", connect)


def load_records(path: Path) -> list[bytes]:
    data, out, off = path.read_bytes(), [], 0
    while off < len(data):
        (n,) = struct.unpack_from("<I", data, off)
        out.append(data[off + 4 : off + 4 + n])
        off += 4 + n
    return out


class Ring:
    """Records laid out as a kernel ring buffer (8-byte headers, 8-aligned), drained batch by batch."""

    def __init__(self, records: list[bytes]) -> None:
        self.records = records
        need = sum((len(r) + 15) & ~7 for r in records)
        self.size = 1 << max(16, (need - 1).bit_length())
        page = mmap.PAGESIZE
        self.cons, self.data = mmap.mmap(-1, page), mmap.mmap(-1, page + 2 * self.size)
        self.ends: list[int] = []
        pos = 0
        for r in records:
            self.data[page + pos : page + pos + 8 + len(r)] = struct.pack("<II", len(r), 0) + r
            pos += (len(r) + 15) & ~7
            self.ends.append(pos)

    def drains(self, batch: int) -> list[Callable[[Callable[..., None]], int]]:
        """One callable per batch: it publishes the batch's records and drains them."""
        ring = RingBuffer.over(self.cons, self.data, self.size)
        self.cons[0:8] = struct.pack("<Q", 0)
        steps = []
        for i in range(batch - 1, len(self.ends) + batch - 1, batch):
            end = self.ends[min(i, len(self.ends) - 1)]

            def step(handle: Callable[..., None], end: int = end) -> int:
                self.data[0:8] = struct.pack("<Q", end)  # the kernel's producer position
                return ring.drain(handle)

            steps.append(step)
        return steps


def prepare(records: list[bytes], batch: int, decode: bool) -> Callable[[], tuple[float, float, int]]:
    """A run: drains the records once, batch by batch; returns (thread CPU s, of which GC, events)."""
    steps = Ring(records).drains(batch)
    dec = Decoder(ProcessTree(), "bench", by_number(), HOST_NS, proc=None)
    handle = dec.feed if decode else (lambda buf, off, n: None)

    def run() -> tuple[float, float, int]:
        gc_cpu = [0.0, 0.0]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                gc_cpu[1] = time.thread_time()
            else:
                gc_cpu[0] += time.thread_time() - gc_cpu[1]

        events = 0
        cpu = 0.0
        gc.callbacks.append(on_gc)
        try:
            for step in steps:
                dec.events = []
                t0 = time.thread_time()
                n = step(handle)
                cpu += time.thread_time() - t0
                events += len(dec.events) if decode else n
        finally:
            gc.callbacks.remove(on_gc)
        if decode and dec.errors:
            raise SystemExit(f"{dec.errors} records did not decode: {dec.last_error}")
        return cpu, gc_cpu[0], events

    return run


def measure(records: list[bytes], batch: int, decode: bool) -> tuple[float, float, int]:
    return prepare(records, batch, decode)()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=5000, help="processes per synthetic stream")
    ap.add_argument("--batch", type=int, default=100, help="records per drain")
    ap.add_argument("--repeat", type=int, default=7, help="runs per figure (the median is printed)")
    ap.add_argument("--records", type=Path, help="replay records saved by sensor_storm.py --save-records")
    ap.add_argument("--only", help="run only this stream (storm, long, mixed)")
    ap.add_argument("--once", action="store_true", help="run each stream once, inside a ctypes callback")
    args = ap.parse_args()
    if args.records:
        streams = {args.records.name: load_records(args.records)}
    else:
        n = args.processes
        streams = {
            "storm": list(storm(n, STORM_ARGV)),
            "long": list(storm(max(1, n // 10), LONG_ARGV)),
            "mixed": list(storm(n, STORM_ARGV, syscalls=True)),
        }
    if args.only:
        streams = {args.only: streams[args.only]}
    print(f"python: {sys.executable} {sys.version.split()[0]}; {args.batch} records per drain")
    if args.once:
        runs = {name: prepare(records, args.batch, True) for name, records in streams.items()}
        events: dict[str, int] = {}

        def once() -> None:
            for name, run in runs.items():
                events[name] = run()[2]

        ctypes.CFUNCTYPE(None)(once)()
        print(f"ran each stream once: events {events} (count instructions with callgrind, see --help)")
        return
    head = f"{'stream':<14} {'records':>8} {'events':>7} {'ring only us/rec':>16} {'ring+decode us/ev':>17} "
    head += f"{'ratio':>6} {'of it GC':>8}"
    print(head)
    print("-" * len(head))
    for name, records in streams.items():
        raw = [measure(records, args.batch, False) for _ in range(args.repeat)]
        full = [measure(records, args.batch, True) for _ in range(args.repeat)]
        raw_us = statistics.median(c / max(n, 1) for c, _, n in raw) * 1e6
        full_us = statistics.median(c / max(n, 1) for c, _, n in full) * 1e6
        gc_us = statistics.median(g / max(n, 1) for _, g, n in full) * 1e6
        events = full[0][2]
        print(
            f"{name:<14} {len(records):>8} {events:>7} {raw_us:>16.2f} {full_us:>17.2f} "
            f"{full_us / raw_us:>6.1f} {gc_us:>8.2f}"
        )
    print(
        "\nus = microseconds of the draining thread's CPU (time.thread_time), median of the runs; ring "
        "only = the same drains with a no-op handler (the baseline); ms per 1,000 events = the same number."
    )


if __name__ == "__main__":
    main()
