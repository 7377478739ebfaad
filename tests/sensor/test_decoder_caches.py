"""The decoder's shortcuts (cached, derived and shared contexts) against full builds, on random histories.

Every event's context must equal what :meth:`Decoder.build_context` builds from scratch out of the tree and
the record, plus only the per-event fields (key order may differ: a derived context appends what its source
lacked). The histories mix what the shortcuts must get
right: storms of siblings running the same command, parents exec'ing while their children live, credential
and namespace changes, pid reuse, CLONE_PARENT, processes first seen mid-life, long and non-ASCII argv.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from assay.events import Event
from assay.sensor import _records as R
from assay.sensor._decoder import Decoder
from assay.sensor._syscalls import by_number
from assay.sensor._tree import ProcessInfo, ProcessTree

from .records import NS, exec_rec, exit_rec, hdr, ring_image, sys_rec

PER_EVENT = {
    "@timestamp",
    "event.action",
    "process.tid",
    "process.ns_pid",
    "process.exit_code",
    "signal.number",
    "process.args_truncated",
    "process.args_bytes",
    "process.args_fault",
    "process.exec_filename",
    "cgroup.path",
    "event.outcome",
    "event.code",
    "syscall.name",
    "file.path",
}
COMMANDS: list[tuple[list[bytes], bytes, bytes]] = [
    ([b"/bin/true", b"a", b"b"], b"/usr/bin/true", b"/tmp"),
    ([b"sh", b"-c", b"id"], b"/usr/bin/dash", b"/root"),
    ([b"python3", b"-c", b"print('\xc3\xa9')"], b"/usr/bin/python3.11", b"/srv"),  # not ASCII
    ([b"x" * 300 for _ in range(5)], b"/usr/bin/long", b"/"),  # past the parse cache's key size
    ([b""], b"/bin/empty-arg", b""),  # an empty argument, no cwd
]


@dataclass
class Proc:
    pid: int
    start: int
    ppid: int
    pstart: int
    uid: int = 0
    ns: tuple[int, int, int] = (1, 2, 3)
    children: list[int] = field(default_factory=list)

    def kw(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "start_ticks": self.start,
            "ppid": self.ppid,
            "pstart_ticks": self.pstart,
            "uid": self.uid,
            "ns": self.ns,
        }


def fork_record(parent: Proc, child: Proc, ts: int) -> bytes:
    return R.FORK.pack(
        *hdr(R.EV_FORK, ts_ns=ts, **parent.kw()),  # type: ignore[arg-type]
        child.start * NS,
        child.pstart * NS,
        child.pid,
        child.ppid,
        child.pid,
    )


def history(seed: int, steps: int) -> list[bytes]:
    """A random but consistent process history, as the kernel would report it."""
    rng = random.Random(seed)
    live: dict[int, Proc] = {}
    tick = 1000
    next_pid = 200
    for pid in (2, 3):  # older than the sensor: first seen mid-life
        live[pid] = Proc(pid, 10 * pid, 1, 1)
    out: list[bytes] = []
    for i in range(steps):
        tick += 1
        ts = tick * NS
        p = rng.choice(list(live.values()))
        op = rng.random()
        if op < 0.35 and len(live) < 60:
            reuse = [q for q in range(200, next_pid) if q not in live]
            pid = rng.choice(reuse) if reuse and rng.random() < 0.2 else next_pid
            next_pid += pid == next_pid
            clone_parent = rng.random() < 0.1 and p.ppid in live
            real = live[p.ppid] if clone_parent else p
            child = Proc(pid, tick, real.pid, real.start, p.uid, p.ns)
            live[pid] = child
            out.append(fork_record(p, child, ts))
        elif op < 0.6:
            argv, exe, cwd = rng.choice(COMMANDS)
            flags = R.F_ARGV_TRUNC if rng.random() < 0.05 else 0
            out.append(exec_rec(argv, exe, cwd, flags=flags, ts_ns=ts, **p.kw()))  # type: ignore[arg-type]
        elif op < 0.75 and len(live) > 3:
            del live[p.pid]
            for (
                orphan
            ) in live.values():  # re-parented to init: the kernel's ppid changes, the tree's does not
                if (orphan.ppid, orphan.pstart) == (p.pid, p.start):
                    orphan.ppid, orphan.pstart = 1, 1
            out.append(exit_rec(rng.choice((0, 1 << 8, 9)), ts_ns=ts, **p.kw()))  # type: ignore[arg-type]
        elif op < 0.85:
            out.append(sys_rec("unlink", strs=(f"/tmp/f{i}".encode(), None, None), ts_ns=ts, **p.kw()))  # type: ignore[arg-type]
        elif op < 0.93:
            p.uid = rng.choice((0, 1000))  # setuid: later records carry the new credentials
        else:
            p.ns = (1, 2, rng.choice((3, 77)))  # unshare(CLONE_NEWPID) for its next children, say
    return out


def full_context(dec: Decoder, rec: bytes, event: Event) -> dict[str, object]:
    info = dec.tree.get(event["process.entity_id"])
    assert isinstance(info, ProcessInfo)
    return dec.build_context(rec, 0, info)


@pytest.mark.parametrize("seed", range(12))
def test_every_event_equals_a_full_build(seed: int) -> None:
    dec = Decoder(ProcessTree(), "h1", by_number("x86_64"), {"mnt": 1, "net": 2, "pid": 3}, proc=None)
    seen = 0
    for rec in history(seed, 600):
        ev = dec.decode(rec)
        if ev is None:
            continue
        full = full_context(dec, rec, ev)
        assert {k: ev[k] for k in full} == full
        assert set(ev.fields) - set(full) <= PER_EVENT
        seen += 1
    assert seen > 400


def test_storm_siblings_share_what_they_can_and_keep_their_identity() -> None:
    dec = Decoder(ProcessTree(), "h1", by_number("x86_64"), {"mnt": 1, "net": 2, "pid": 3}, proc=None)
    shell = Proc(100, 5000, 1, 30)
    dec.decode(exec_rec([b"bash"], b"/usr/bin/bash", b"/root", **shell.kw()))  # type: ignore[arg-type]
    execs = []
    for i in range(3):
        child = Proc(101 + i, 5001 + i, 100, 5000)
        dec.decode(fork_record(shell, child, (6000 + i) * NS))
        ev = dec.decode(exec_rec([b"/bin/true", b"a"], b"/usr/bin/true", b"/tmp", **child.kw()))  # type: ignore[arg-type]
        assert ev is not None
        execs.append(ev)
    assert [e["process.entity_id"] for e in execs] == ["101:5001", "102:5002", "103:5003"]
    assert [e["process.pid"] for e in execs] == [101, 102, 103]
    assert all(e["process.parent.executable"] == "/usr/bin/bash" for e in execs)
    assert execs[0]["process.args"] is execs[2]["process.args"]  # parsed once, shared (read-only)
    # the parent execs: its children's parent fields follow, and the next child starts from the new image
    dec.decode(exec_rec([b"zsh"], b"/usr/bin/zsh", b"/root", **shell.kw()))  # type: ignore[arg-type]
    late = dec.decode(exit_rec(0, **Proc(101, 5001, 100, 5000).kw()))  # type: ignore[arg-type]
    assert late is not None and late["process.parent.executable"] == "/usr/bin/zsh"
    child = Proc(110, 5010, 100, 5000)
    fork = dec.decode(fork_record(shell, child, 7000 * NS))
    assert fork is not None and fork["process.executable"] == "/usr/bin/zsh"


def test_forked_sets_every_slot() -> None:
    parent = ProcessInfo(1, 2, "1:2")
    child = ProcessInfo.forked(5, 6, "5:6", parent)
    for slot in ProcessInfo.__slots__:
        getattr(child, slot)  # AttributeError if a slot was left unset
    assert child.ancestry == ("1:2",) and child.ancestry is parent.child_ancestry()


# --- the ring buffer ----------------------------------------------------------------------------------
def test_ring_reads_across_the_wrap_skips_discarded_and_stops_at_busy() -> None:
    recs = [bytes([i]) * (20 + i) for i in range(6)]
    size = 4096
    ring = ring_image(
        [(recs[0], 0), (recs[1], 1 << 30), (recs[2], 0), (recs[3], 0), (recs[4], 1 << 31), (recs[5], 0)],
        size,
        start=size - 40,  # the first records straddle the end of the data area
    )
    got: list[bytes] = []
    n = ring.drain(lambda buf, off, length: got.append(buf[off : off + length]))
    assert n == 3 and got == [recs[0], recs[2], recs[3]]  # discarded skipped, stopped at the busy one
    assert ring.pending() > 0  # the busy record and the one after it are still there


def test_ring_tells_when_the_kernel_could_have_dropped() -> None:
    size = 64 << 10
    small = ring_image([(b"x" * 100, 0)] * 10, size)
    small.drain(lambda buf, off, length: None)
    assert not small.could_have_dropped(R.MAX_RECORD)  # 10 small records: never near full
    full = ring_image([(b"x" * 4000, 0)] * 12, size)
    full.drain(lambda buf, off, length: None)
    assert full.could_have_dropped(R.MAX_RECORD)  # 48 KiB in a 64 KiB ring: a big record may not have fit
    assert ring_image([], 4096).could_have_dropped(R.MAX_RECORD)  # a ring smaller than a record: always


def test_ring_is_idle_only_when_empty_since_the_last_drain() -> None:
    ring = ring_image([(b"x" * 100, 0)] * 3, 64 << 10)
    assert not ring.idle()  # records waiting
    assert ring.drain(lambda buf, off, length: None) == 3
    assert not ring.idle()  # empty now, but it held records since the drain before: a poll must look
    assert ring.drain(lambda buf, off, length: None) == 0
    assert ring.idle()


def test_feeding_from_a_ring_gives_what_decode_gives() -> None:
    stream = history(99, 300)
    one = Decoder(ProcessTree(), "h1", by_number("x86_64"), {"mnt": 1, "net": 2, "pid": 3}, proc=None)
    two = Decoder(ProcessTree(), "h1", by_number("x86_64"), {"mnt": 1, "net": 2, "pid": 3}, proc=None)
    one.clock_offset = two.clock_offset = 5.0
    expected = [e for e in (one.decode(r) for r in stream) if e is not None]
    ring = ring_image([(r, 0) for r in stream], 1 << 20)
    assert ring.drain(two.feed) == len(stream) and two.errors == 0
    assert [e.fields for e in two.events] == [e.fields for e in expected]


def test_a_bad_record_is_counted_and_the_rest_decoded() -> None:
    dec = Decoder(ProcessTree(), "h1", by_number("x86_64"), {"mnt": 1, "net": 2, "pid": 3}, proc=None)
    bad = bytearray(exit_rec(0))
    bad[R.TYPE_OFFSET] = 99
    cut = exit_rec(0)[:-8]  # a header, but not the exit code: must not be read from the next record
    recs = [exit_rec(0), bytes(bad), b"short", cut, exit_rec(0, pid=7)]
    ring = ring_image([(r, 0) for r in recs], 1 << 16)
    assert ring.drain(dec.feed) == 5
    assert dec.errors == 3 and len(dec.events) == 2
    assert dec.last_error is not None and "exit record of 112 bytes is too short" in str(dec.last_error)


def test_records_h_caps_match() -> None:
    from .test_records import BPF_DIR

    text = (BPF_DIR / "records.h").read_text()
    for name in ("ARGV_CAP", "STR_CAP", "CG_CAP", "SYS_DATA"):
        value = next(line.split()[2] for line in text.splitlines() if line.startswith(f"#define {name} "))
        assert int(value) == getattr(R, name), name
