"""The eBPF source: loads ``bpf/sensor.bpf.o`` (prebuilt CO-RE), attaches it, reads its ring buffer.

Start-up order matters for completeness: attach first, *then* take the ``/proc`` snapshot, so that no process
can slip between the two (one that forks in the gap is both in the snapshot and in the ring buffer, and the
tree keeps the first sighting).

Detach needs no cleanup step: every attachment is a BPF link held by a file descriptor of this process, so
the kernel removes it when the process exits, even after SIGKILL. Nothing is pinned.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from assay.errors import SensorError
from assay.events import Event
from assay.sensor import _libbpf
from assay.sensor import _records as R
from assay.sensor._decoder import Decoder
from assay.sensor._noise import SelfNoise
from assay.sensor._ringbuf import RingBuffer
from assay.sensor._sensitive import DEFAULT_SENSITIVE_PATHS, NAME_CAP, SENS_DIR, compile_paths
from assay.sensor._source import Source
from assay.sensor._syscalls import by_number, syscall_table
from assay.sensor._tree import ProcessTree

DEFAULT_RING_BYTES = 8 << 20
# Threads that can be inside a hooked syscall at once (the `pending` table); past it, a syscall is a
# counted drop.
DEFAULT_PENDING_ENTRIES = 16384
PROGRAM_PREFIX = "assay_"


def object_path() -> Path:
    """The prebuilt CO-RE object shipped as package data (rebuilt by ``make bpf``)."""
    return Path(str(resources.files("assay.sensor").joinpath("bpf/sensor.bpf.o")))


def host_namespaces(proc: Path = Path("/proc")) -> dict[str, int]:
    """Namespace inodes of init (pid 1), i.e. of the host; events from other namespaces say which."""
    out: dict[str, int] = {}
    for ns in ("mnt", "net", "pid"):
        for who in ("1", "self"):
            try:
                out[ns] = (proc / who / "ns" / ns).stat().st_ino
                break
            except OSError:
                continue
    return out


class EbpfSource(Source):
    name = "ebpf"

    def __init__(
        self,
        host: str,
        self_noise: SelfNoise | None = None,
        reason: str = "",
        *,
        bpf_object: Path | None = None,
        ring_bytes: int = DEFAULT_RING_BYTES,
        pending_entries: int = DEFAULT_PENDING_ENTRIES,
        lazy: bool = True,
        wakeup_bytes: int | None = None,
        sensitive_paths: Iterable[str] = DEFAULT_SENSITIVE_PATHS,
        snapshot: bool = True,
        proc: Path = Path("/proc"),
    ) -> None:
        super().__init__(host, self_noise, reason)
        self.object_path = bpf_object or object_path()
        if ring_bytes < 4096 or ring_bytes & (ring_bytes - 1):
            raise SensorError(f"ring buffer size {ring_bytes} must be a power of two >= 4096")
        self.ring_bytes = ring_bytes
        if pending_entries < 1:
            raise SensorError(f"pending_entries {pending_entries} must be at least 1")
        self.pending_entries = pending_entries
        self.lazy = lazy
        self.wakeup_bytes = wakeup_bytes if wakeup_bytes is not None else min(1 << 20, ring_bytes // 4)
        self.sensitive = compile_paths(sensitive_paths)
        self._snapshot = snapshot
        self._proc = proc
        self.tree = ProcessTree()
        self._syscalls = by_number()
        self.decoder = Decoder(self.tree, host, self._syscalls, host_namespaces(proc), proc=proc)
        self._obj: _libbpf.BpfObject | None = None
        self._ring: RingBuffer | None = None
        self._stats_fd = -1
        self._ncpu = 0
        self._cpu_dropped: list[int] = []
        self._by_type_dropped: list[list[int]] = []
        self._pending_full: list[int] = []
        self._last_loss_check = 0.0
        self._next_loss_read = 0.0  # monotonic time by which the drop counters are read again
        self._next_sync = 0.0  # monotonic time of the next clock-offset refresh
        self.load_seconds = 0.0
        self.attach_seconds = 0.0
        self.snapshot_size = 0
        self.program_ids: list[int] = []
        self._records = 0  # ring-buffer records read (decoded or not)
        self._kernel_records = 0  # records the kernel says it submitted, as of the last read

    # --- start ------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Open, configure and load the object (the slow, failure-prone part), without attaching."""
        with self._lock:
            if self._obj is not None:
                return
            t0 = time.monotonic()
            obj = _libbpf.BpfObject(self.object_path)
            try:
                obj.set_max_entries("rb", self.ring_bytes)
                obj.set_max_entries("pending", self.pending_entries)
                obj.set_rodata(
                    {
                        "cfg_self_pid": os.getpid(),
                        "cfg_lazy": int(self.lazy),
                        "cfg_wakeup_bytes": self.wakeup_bytes,
                        "cfg_sensitive": int(bool(self.sensitive)),
                    }
                )
                obj.load()
                self._configure(obj)
            except BaseException:
                obj.close()
                raise
            self._obj = obj
            self.load_seconds = time.monotonic() - t0

    def _start(self) -> None:
        self.prepare()
        obj = self._obj
        assert obj is not None
        t0 = time.monotonic()
        obj.attach_all()
        self._ncpu = _libbpf.possible_cpus()
        self._stats_fd = obj.map_fd("stats")
        self._cpu_dropped = [0] * self._ncpu
        self._by_type_dropped = [[0] * 5 for _ in range(self._ncpu)]
        self._pending_full = [0] * self._ncpu
        self._ring = RingBuffer(obj.map_fd("rb"), self.ring_bytes)
        self.attach_seconds = time.monotonic() - t0
        self.program_ids = obj.program_ids()
        self._last_loss_check = time.time()
        if self._snapshot:
            self.snapshot_size = self.tree.snapshot(self._proc, skip={os.getpid()})

    def _configure(self, obj: _libbpf.BpfObject) -> None:
        fd = obj.map_fd("sc_desc")
        for sc in syscall_table():
            _libbpf.map_update(fd, sc.nr.to_bytes(4, "little"), sc.descriptor(), f"sc_desc[{sc.name}]")
        fd = obj.map_fd("ignored")
        for pid in self.noise.ignore_pids:
            _libbpf.map_update(fd, pid.to_bytes(4, "little"), b"\1\0\0\0", "ignored")
        fd = obj.map_fd("sensitive")
        for (dev, ino), kind in self.sensitive.inodes.items():
            key = R.INODE_KEY.pack(ino, R.kernel_dev(dev), 0)
            _libbpf.map_update(fd, key, kind.to_bytes(4, "little"), "sensitive")
        fd = obj.map_fd("sensitive_names")
        for d, n in self.sensitive.names:
            key = d.encode().ljust(NAME_CAP, b"\0") + n.encode().ljust(NAME_CAP, b"\0")
            _libbpf.map_update(fd, key, SENS_DIR.to_bytes(4, "little"), "sensitive_names")

    def ignore_pid(self, pid: int) -> None:
        """Add a process to ignore while running (a server started after the sensor)."""
        with self._lock:
            self.noise = SelfNoise(
                self.noise.ignore_pids | {pid}, self.noise.agent_pids, self.noise.server_endpoints
            )
            if self._obj is not None:
                _libbpf.map_update(
                    self._obj.map_fd("ignored"), pid.to_bytes(4, "little"), b"\1\0\0\0", "ignored"
                )

    # --- poll -------------------------------------------------------------------------------------------
    def _filter(self, batch: list[Event]) -> list[Event]:
        """The kernel already dropped the ignored pids (and the sensor); left: the agents' beacons."""
        if not self.noise.agent_pids:
            return batch
        drops = self.noise.drops
        return [e for e in batch if e.fields["event.action"] != "connect" or not drops(e)]

    def _poll(self, timeout: float, *, final: bool = False) -> list[Event]:
        ring = self._ring
        if ring is None:
            return []
        ring.wait(timeout)
        dec = self.decoder
        mono = time.monotonic()
        if mono >= self._next_sync:
            dec.sync_clock()  # the wall-clock offset moves only with NTP steps: once a second is plenty
            self._next_sync = mono + 1.0
        if ring.idle() and not final and mono < self._next_loss_read:
            # Nothing to read, and the ring was empty since the last drain, so no counter moved. After a
            # sleep every line costs microseconds (cold caches): an idle poll does only this.
            self._last_loss_check = time.time()
            return []
        started = time.time()
        errors_before = dec.errors
        out = dec.events = []
        self._records += ring.drain(dec.feed)
        dec.events = []
        bad = dec.errors - errors_before
        if bad:
            self.counts["decode_errors"] = self.counts.get("decode_errors", 0) + bad
        now = time.time()
        if bad:
            out.append(self._loss(bad, self._last_loss_check, now, **{"loss.reason": "undecodable records"}))
        # Reading the drop counters is a syscall and a few hundred bytes of Python, which after a sleep costs
        # as much as decoding dozens of records; skip it when the ring provably had room for every record
        # (no counter can have moved), but read at least once a second and always at the end.
        if final or mono >= self._next_loss_read or ring.could_have_dropped(R.MAX_RECORD):
            out.extend(self._loss_events(now))
            self._next_loss_read = mono + 1.0
        else:
            # nothing was dropped up to the drain's last look at the ring, which is later than `started`
            self._last_loss_check = started
        return out

    def _read_drops(self) -> list[tuple[int, int, int, list[int], int]]:
        """Per CPU: (cpu, dropped so far, last drop boot-ns, dropped per record type, of which syscalls the
        full ``pending`` table could not stash at entry) from the stats map."""
        size = (R.STATS.size + 7) & ~7
        raw = _libbpf.map_lookup(self._stats_fd, b"\0\0\0\0", size * self._ncpu)
        if raw is None:
            raise SensorError("cannot read the kernel drop counters (stats map)")
        out = []
        submitted = 0
        for cpu in range(self._ncpu):
            v = R.STATS.unpack_from(raw, cpu * size)
            submitted += v[0]
            out.append((cpu, v[1], v[2], list(v[3:8]), v[8]))
        self._kernel_records = submitted
        return out

    def _loss_events(self, now: float) -> list[Event]:
        out: list[Event] = []
        start = self._last_loss_check
        for cpu, dropped, last_ts, by_type, pending_full in self._read_drops():
            delta = dropped - self._cpu_dropped[cpu]
            if delta > 0:
                kinds = [
                    R.RECORD_TYPES[t]
                    for t in R.RECORD_TYPES
                    if t < len(by_type) and by_type[t] > self._by_type_dropped[cpu][t]
                ]
                end = last_ts / 1e9 + self.decoder.clock_offset if last_ts else now
                extra: dict[str, Any] = {"loss.cpu": cpu, "loss.record_types": kinds}
                unstashed = pending_full - self._pending_full[cpu]
                if unstashed > 0:
                    extra["loss.pending_full"] = unstashed
                    extra["loss.reason"] = (
                        f"{unstashed} syscalls found the in-kernel syscall-entry table full"
                        + ("" if unstashed == delta else "; the rest did not fit in the ring buffer")
                    )
                out.append(self._loss(delta, start, end, **extra))
                self._cpu_dropped[cpu] = dropped
                self._by_type_dropped[cpu] = by_type
                self._pending_full[cpu] = pending_full
        self._last_loss_check = now
        return out

    def _extra_stats(self) -> dict[str, Any]:
        """``records`` read from the ring; ``kernel_records`` the kernel submitted (equal once drained)."""
        if self._stats_fd >= 0:
            self._read_drops()
        out = {"records": self._records, "kernel_records": self._kernel_records, "tree_size": len(self.tree)}
        for cpu, dropped in enumerate(self._cpu_dropped):
            if dropped:
                out[f"dropped_cpu{cpu}"] = dropped  # the per-CPU counters, as reported in loss events
        return out

    # --- stop -------------------------------------------------------------------------------------------
    def _stop(self) -> list[Event]:
        tail: list[Event] = []
        if self._obj is not None:
            self._obj.detach()  # no new records from here on
        if self._ring is not None:
            if self._stats_fd >= 0:
                tail = self._poll(0.0, final=True)  # what was queued, and the final drop count
            self._ring.close()
            self._ring = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None
        self._stats_fd = -1
        return tail


def probe_ebpf() -> str | None:
    """Why the eBPF source cannot load here, or None when it can (loads the object without attaching)."""
    if os.geteuid() != 0:
        return "the eBPF source needs root (CAP_BPF and CAP_PERFMON)"
    src = EbpfSource("probe", snapshot=False, sensitive_paths=())
    try:
        src.prepare()
    except SensorError as exc:
        return f"the eBPF sensor cannot load here: {exc}"
    finally:
        src.stop()
    return None
