"""Hand-built kernel records, for driving the decoder without a kernel."""

from __future__ import annotations

import mmap
import struct

from assay.sensor import _records as R
from assay.sensor._ringbuf import RingBuffer
from assay.sensor._syscalls import by_name

NS = 10_000_000  # ns per clock tick


def hdr(
    kind: int,
    pid: int = 100,
    start_ticks: int = 5000,
    ppid: int = 1,
    pstart_ticks: int = 30,
    uid: int = 0,
    flags: int = 0,
    comm: bytes = b"tester",
    ts_ns: int = 1_000_000_000,
    ns: tuple[int, int, int] = (1, 2, 3),
    ns_pid: int | None = None,
) -> tuple[object, ...]:
    mnt, net, pidns = ns
    return (
        ts_ns,
        start_ticks * NS + 1234,
        pstart_ticks * NS + 99,
        kind,
        flags,
        pid,
        pid,
        ppid,
        ns_pid if ns_pid is not None else pid,
        7,  # cgroup id
        uid,
        uid,
        0,
        0,
        0xFFFFFFFF,
        1,
        mnt,
        net,
        pidns,
        0,
        comm,
    )


def exec_rec(
    argv: list[bytes], exe: bytes, cwd: bytes, filename: bytes | None = None, flags: int = 0, **kw: object
) -> bytes:
    argv_raw = b"".join(a + b"\0" for a in argv)
    fn = filename if filename is not None else exe
    data = argv_raw + fn + b"\0" + exe + cwd + b"docker-" + b"a" * 64 + b".scope\0"
    cg = b"docker-" + b"a" * 64 + b".scope"
    head = R.EXEC.pack(
        *hdr(R.EV_EXEC, flags=flags, **kw),  # type: ignore[arg-type]
        len(argv_raw),
        len(argv_raw),
        len(fn),
        len(exe),
        len(cwd),
        len(cg),
        0,
    )
    return head + data


def fork_rec(parent: int, parent_start: int, child: int, child_start: int, **kw: object) -> bytes:
    return R.FORK.pack(
        *hdr(R.EV_FORK, pid=parent, start_ticks=parent_start, **kw),  # type: ignore[arg-type]
        child_start * NS,
        parent_start * NS,
        child,
        parent,
        child,
    )


def exit_rec(status: int, **kw: object) -> bytes:
    return R.EXIT.pack(*hdr(R.EV_EXIT, **kw), status, 0)  # type: ignore[arg-type]


def sys_rec(
    name: str,
    args: tuple[int, ...] = (0, 0, 0, 0, 0, 0),
    ret: int = 0,
    strs: tuple[bytes | None, bytes | None, bytes | None] = (None, None, None),
    bases: tuple[bytes | None, bytes | None] = (None, None),
    fd_path: bytes | None = None,
    blob: bytes = b"",
    sock: tuple[int, int, int, int, int, bytes, bytes] | None = None,
    flags: int = 0,
    **kw: object,
) -> bytes:
    """A syscall record; `strs` follow the descriptor's string arguments (slot i = the i-th string)."""
    sc = by_name()[name]
    slen = [0] * 6
    data = b""
    for slot, s, base in ((0, strs[0], bases[0]), (1, strs[1], bases[1]), (2, strs[2], None)):
        if s is not None:
            data += s + b"\0"
            slen[slot] = len(s) + 1
        if base is not None:
            data += base
            slen[3 + slot] = len(base)
    if fd_path is not None:
        data += fd_path
        slen[5] = len(fd_path)
    data += blob
    family, stype, proto, lport, rport, laddr, raddr = sock or (0, 0, 0, 0, 0, b"", b"")
    if sock:
        flags |= R.F_SOCK
    head = R.SYS.pack(
        *hdr(R.EV_SYSCALL, flags=flags, **kw),  # type: ignore[arg-type]
        ret,
        *(list(args) + [0] * 6)[:6],
        sc.nr,
        *slen,
        len(blob),
        0,
        family,
        stype,
        proto,
        lport,
        rport,
        0,
        0,
        laddr.ljust(16, b"\0"),
        raddr.ljust(16, b"\0"),
    )
    return head + data


def ring_image(records: list[tuple[bytes, int]], size: int, start: int = 0) -> RingBuffer:
    """A ring of `size` bytes whose consumer is at `start`, holding `records` (payload, header flag bits)."""
    page = mmap.PAGESIZE
    cons, data = mmap.mmap(-1, page), mmap.mmap(-1, page + 2 * size)
    pos = start
    for payload, bits in records:
        for copy in (0, size):  # the data area is mapped twice back to back
            off = page + copy + (pos & (size - 1))
            body = struct.pack("<II", len(payload) | bits, 0) + payload
            end = min(len(body), page + 2 * size - off)
            data[off : off + end] = body[:end]
        pos += (len(payload) + 15) & ~7
    data[0:8] = struct.pack("<Q", pos)
    cons[0:8] = struct.pack("<Q", start)
    return RingBuffer.over(cons, data, size)
