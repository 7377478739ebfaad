"""eBPF records → normalized :class:`Event`s (sans-I/O: bytes in, events out, the process tree updated).

This is the hot path of the sensor: one call per kernel record, thousands per second in a process storm, so
it is written for CPython's costs rather than for elegance (``docs/sensor.md`` has the measurements):

- a record is read where it lies (``feed(buf, off, n)``, ``buf`` being the ring buffer's mapping), with one
  ``struct`` unpack of only the fields the common case needs; the 48-byte context block is compared as
  bytes, and unpacked only when the process's cached context must be rebuilt;
- the actor's event context (``process.*``, parent, user, namespaces: ~25 fields) is built once per process
  and copied per event (one C-level dict copy); fork and exec derive the new context from the old one;
- the argv, paths and cgroup of an exec are parsed once per distinct exec (a small cache keyed by the raw
  bytes): a storm of the same command line costs one dict lookup per exec, not a decode, split and join;
- siblings share work: a parent's context is turned into its children's once (:class:`_Brood`), and a
  child that runs what a sibling ran gets the sibling's post-exec context. Shared, not copied: a cached
  context is right for its process but for the identity (``process.pid``, ``.entity_id``, ``.start``),
  which every event sets from the tree node, so a storm's process costs one dict copy per event;
- the function calls per record are kept to a minimum (each costs about as much as a dict store).

Tests drive it with records packed by hand through :meth:`Decoder.decode`, so it needs neither root nor a
kernel. Values in events (argv lists, ancestry lists) are shared between events and processes: treat them as
read-only.
"""

from __future__ import annotations

import mmap
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from assay.errors import SensorError
from assay.events import Action, Event
from assay.sensor import _records as R
from assay.sensor._actions import (
    OPEN_FAMILY,
    WRITE_INTENT,
    join_path,
    kill_worth_reporting,
    open_flags,
    socket_fields,
    syscall_fields,
    target_fields,
)
from assay.sensor._syscalls import Syscall
from assay.sensor._tree import (
    ProcessInfo,
    ProcessTree,
    container_id_from_cgroup,
    exec_fields,
    fork_fields,
    fork_template,
)

_NS_PER_TICK = 10_000_000  # USER_HZ = 100
# Events are made as `_new(Event)` plus one slot store: what Event(f) does, without a Python-level __init__
# call per event (a test holds Event to its single `fields` slot).
_new = object.__new__
_EINPROGRESS = 115
_EXEC, _FORK, _EXIT = Action.EXEC.value, Action.FORK.value, Action.EXIT.value
_KILL, _PTRACE = Action.KILL.value, Action.PTRACE.value
_READ_SENSITIVE = Action.FILE_READ_SENSITIVE.value

# The common header without its context block and comm (skipped: compared as bytes, unpacked on a miss),
# followed by each record type's own fields.
_HEAD = "<QQQ6I64x"  # ts, start, pstart, type, flags, pid, tid, ppid, ns_pid
# Lifecycle records unpack only what their decoding reads (pad bytes for the rest): every field unpacked is
# an int object made and freed, and these three are a storm's records.
_EXIT_REC = struct.Struct("<QQ16xII4xI64xi")  # ts, start, pid, tid, ns_pid; exit status
# ts, start, pid; child start, child pstart, child pid, child ppid, child ns_pid
_FORK_REC = struct.Struct("<QQ16xI12x64xQQIII")
# ts, start, flags, pid, tid, ns_pid; argv_len, argv_total, filename/exe/cwd/cg/cg1 lengths
_EXEC_REC = struct.Struct("<QQ12xIII4xI64xIIHHHHH")
_SYS_REC = struct.Struct(_HEAD + "q6QI6HHH")  # + ret, args[6], nr, slen[6], blob_len, argv_len
_SOCK = struct.Struct("<HHHHHBB16s16s")  # struct sockinfo
_SOCK_OFFSET = R.SYS.size - 48
_CTX, _CTX_END = R.CTX_START, R.CTX_END
_HDR_SIZE, _EXEC_DATA, _SYS_DATA = R.HDR_SIZE, R.EXEC.size, R.SYS.size
_EXIT_SIZE, _FORK_SIZE = R.EXIT.size, R.FORK.size
_EV_EXIT, _EV_FORK, _EV_EXEC, _EV_SYSCALL = R.EV_EXIT, R.EV_FORK, R.EV_EXEC, R.EV_SYSCALL
_ARGV_TRUNC, _PATH_TRUNC, _SENSITIVE, _SOCK_FLAG = R.F_ARGV_TRUNC, R.F_PATH_TRUNC, R.F_SENSITIVE, R.F_SOCK

# Execs parsed once per distinct (argv, filename, exe, cwd, cgroup) byte string. Only short ones: hashing a
# long argv costs about what decoding it does. Bounded; dropped wholesale when full (refilled at once).
_PARSE_CACHE_MAX_KEY = 1024
_PARSE_CACHE_ENTRIES = 1024
_BROOD_EXECS = 64  # distinct commands remembered per brood (a shell script's children run many)


def _text(raw: bytes) -> str:
    # (never bytes(raw) on bytes: CPython 3.11 looks up and calls bytes.__bytes__, ~20x a slice's cost)
    return raw.decode("utf-8", "backslashreplace")


def split_argv(raw: bytes) -> list[str]:
    """NUL-separated argv as the kernel keeps it (each argument NUL-terminated)."""
    if not raw:
        return []
    # one decode, then a split: NUL is one byte in UTF-8 and never produced by backslashreplace
    parts = raw.decode("utf-8", "backslashreplace").split("\0")
    if parts[-1] == "":
        parts.pop()
    return parts


ParsedExec = tuple[list[str], str, str | None, str | None, str | None, str, str]
"""argv, command line, filename, executable (resolved against cwd when only a filename), cwd, cg, cg1."""
CachedExec = tuple[list[str], str, str | None, str | None, str | None, str, str | None, str | None]
"""The same with the container id (from cg or cg1) in place of cg1, and the executable's base name (the
process name) last: what the decoder keeps per exec."""


def parse_exec(
    raw: bytes, argv_len: int, fn_len: int, exe_len: int, cwd_len: int, cg_len: int, cg1_len: int
) -> ParsedExec:
    """The variable part of an exec record: ``argv | filename NUL | exe | cwd | cg NUL | cg1``."""
    # ASCII (nearly always): one decode, then slices at the byte offsets; else decode piece by piece
    try:
        data: bytes | str = raw.decode("ascii")
    except UnicodeDecodeError:
        data = raw

    def txt(off: int, n: int) -> str:
        piece = data[off : off + n]
        return piece if isinstance(piece, str) else _text(piece)

    if not argv_len:
        args: list[str] = []
    elif isinstance(data, str):
        args = data[:argv_len].split("\0")  # each argument ends with a NUL: drop the empty tail
        if args[-1] == "":
            args.pop()
    else:
        args = split_argv(raw[:argv_len])
    off = argv_len
    filename = txt(off, fn_len) if fn_len else None
    off += fn_len + 1 if fn_len else 0
    exe = txt(off, exe_len) if exe_len else None
    off += exe_len
    cwd = txt(off, cwd_len) if cwd_len else None
    off += cwd_len
    cg = txt(off, cg_len) if cg_len else ""
    off += cg_len + 1 if cg_len else 0
    cg1 = txt(off, cg1_len) if cg1_len else ""
    if exe is None and filename is not None:
        exe = join_path(cwd, filename)
    return args, " ".join(args), filename, exe, cwd, cg, cg1


class Decoder:
    """Turns raw records into events for one host, keeping the process tree current.

    Two entry points: :meth:`feed` for the ring buffer (appends to :attr:`events`, counts bad records in
    :attr:`errors`), and :meth:`decode` for one record (returns its event, raises on a bad record).
    """

    def __init__(
        self,
        tree: ProcessTree,
        host: str,
        syscalls: Mapping[int, Syscall],
        host_namespaces: Mapping[str, int] | None = None,
        source: str = "ebpf",
        proc: Path | None = Path("/proc"),
    ) -> None:
        self.tree = tree
        self.host = host
        self.source = source
        self.syscalls = dict(syscalls)
        # per number: the row and its action as a plain string (Enum attribute reads are slow, see _actions)
        self._table = {nr: (sc, sc.action.value) for nr, sc in self.syscalls.items()}
        self.proc = proc  # where a process first seen mid-life is looked up (None: nowhere)
        self._host_ns = dict(host_namespaces or {})
        self.clock_offset = 0.0
        self._containers: dict[str, str | None] = {}
        self._parsed: dict[bytes, CachedExec] = {}  # raw exec data -> what it says
        self._pid_get = tree.pid_lookup()
        self.events: list[Event] = []
        self.errors = 0
        self.last_error: SensorError | None = None
        self.sync_clock()

    def sync_clock(self) -> None:
        """Kernel timestamps are CLOCK_BOOTTIME; the offset to the wall clock moves with NTP steps."""
        self.clock_offset = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)

    # --- entry points -----------------------------------------------------------------------------------
    def decode(self, rec: bytes | memoryview) -> Event | None:
        """The event of one record (None when the record is not worth one); SensorError when it is bad."""
        buf = rec if isinstance(rec, bytes) else bytes(rec)
        saved, self.events = self.events, []
        errors = self.errors
        try:
            self.feed(buf, 0, len(buf))
            if self.errors != errors:
                self.errors = errors  # raised here, not counted
                assert self.last_error is not None
                raise self.last_error
            return self.events[0] if self.events else None
        finally:
            self.events = saved

    def feed(self, buf: bytes | mmap.mmap, off: int, n: int) -> None:
        """Decode the record at ``buf[off:off+n]`` onto :attr:`events`; a bad one is counted, not raised.

        ``buf`` must slice to ``bytes`` (bytes, mmap): slices are kept as cache keys.
        """
        try:
            if n < _HDR_SIZE:
                raise SensorError(f"kernel record of {n} bytes is shorter than its header")
            kind = buf[off + R.TYPE_OFFSET]  # u32, little-endian, < 256
            # (the sizes matter: in the ring, unpacking past a short record would read its neighbour)
            if kind == _EV_EXIT and n >= _EXIT_SIZE:
                self._exit(buf, off)
            elif kind == _EV_FORK and n >= _FORK_SIZE:
                self._fork(buf, off)
            elif kind == _EV_EXEC and n >= _EXEC_DATA:
                self._exec(buf, off, n)
            elif kind == _EV_SYSCALL and n >= _SYS_DATA:
                self._syscall(buf, off, n)
            elif kind in R.RECORD_TYPES:
                raise SensorError(f"kernel {R.RECORD_TYPES[kind]} record of {n} bytes is too short")
            else:
                raise SensorError(f"kernel record of unknown type {kind}")
        except SensorError as exc:
            self.errors += 1
            self.last_error = exc

    # --- common parts -----------------------------------------------------------------------------------
    def _actor(self, buf: Any, off: int) -> ProcessInfo:
        """The process a record is about, first seen mid-life (the slow path: the tree reads /proc)."""
        h = R.HDR_STRUCT.unpack_from(buf, off)
        comm = h[R.H_COMM].split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
        return self.tree.ensure(
            h[R.H_PID],
            h[R.H_START] // _NS_PER_TICK,
            h[R.H_PPID],
            h[R.H_PSTART] // _NS_PER_TICK,
            comm,
            proc=self.proc,
        )

    def _context(self, buf: Any, off: int, key: bytes, info: ProcessInfo) -> dict[str, Any]:
        """Build a process's event context in full and cache it under the record's context block."""
        f = self.build_context(buf, off, info)
        _remember(info, f, key)
        return f

    def build_context(self, buf: Any, off: int, info: ProcessInfo) -> dict[str, Any]:
        """A process's event context from the tree and the context block of the record at ``off``, built in
        full: what every cached or derived context must equal (the tests hold the fast paths to it)."""
        cgroup, uid, euid, gid, _egid, loginuid, _sid, mntns, netns, pidns, _pad = R.CTX.unpack_from(
            buf, off + _CTX
        )
        info.uid, info.euid, info.gid = uid, euid, gid
        f = self.tree.fields(info)
        f["event.source"] = self.source
        f["host.name"] = self.host
        f["user.id"] = uid
        name = self.tree.user_name(uid)
        if name is not None:
            f["user.name"] = name
        f["user.effective.id"] = euid
        f["group.id"] = gid
        if loginuid != R.INVALID_UID:
            f["user.audit.id"] = loginuid
        f["cgroup.id"] = cgroup
        hn = self._host_ns
        if hn:
            if pidns != hn.get("pid"):
                f["namespace.pid"] = pidns
                f["process.pid_ns"] = pidns
            if mntns != hn.get("mnt"):
                f["namespace.mnt"] = mntns
            if netns != hn.get("net"):
                f["namespace.net"] = netns
        return f

    # --- process lifecycle ------------------------------------------------------------------------------
    def _exit(self, buf: Any, off: int) -> None:
        ts, start, pid, tid, ns_pid, status = _EXIT_REC.unpack_from(buf, off)
        info = self._pid_get(pid)
        if info is None or info.start != start // _NS_PER_TICK:
            info = self._actor(buf, off)
        # The cache test of _fresh(), written out: exits and syscalls are most of a storm's records, and a
        # call per record costs more than the test itself.
        key = buf[off + _CTX : off + _CTX_END]
        ctx = info.cache
        parent = info.parent
        if (
            ctx is None
            or info.cache_key != key
            or info.cache_version != info.version
            or (parent is not None and info.cache_parent_version != parent.version)
        ):
            ctx = self._context(buf, off, key, info)
        f = ctx.copy()
        f["process.pid"] = pid  # (a cached context may be a sibling's: see _remember)
        f["process.entity_id"] = info.entity_id
        f["process.start"] = info.start
        f["@timestamp"] = ts / 1e9 + self.clock_offset
        f["event.action"] = _EXIT
        f["process.tid"] = tid
        if "namespace.pid" in ctx:
            f["process.ns_pid"] = ns_pid
        sig = status & 0x7F
        if sig:
            f["process.exit_code"] = 128 + sig  # the shell's convention for "killed by signal N"
            f["signal.number"] = sig
        else:
            f["process.exit_code"] = (status >> 8) & 0xFF
        self.tree.exit(info)
        ev = _new(Event)
        ev.fields = f
        self.events.append(ev)

    def _fork(self, buf: Any, off: int) -> None:
        ts, start, pid, c_start, c_pstart, c_pid, c_ppid, c_ns_pid = _FORK_REC.unpack_from(buf, off)
        parent = self._pid_get(pid)  # the forking process, so the child inherits what is known of it
        if parent is None or parent.start != start // _NS_PER_TICK:
            parent = self._actor(buf, off)
        c_pstart //= _NS_PER_TICK
        key = buf[off + _CTX : off + _CTX_END]
        ctx = None
        if parent.pid == c_ppid and parent.start == c_pstart:  # else a CLONE_PARENT sibling: built in full
            child = self.tree.fork(c_pid, c_start // _NS_PER_TICK, c_ppid, c_pstart, parent)
            if child.cache is None:
                # the child runs the parent's image with the parent's credentials: derive, do not rebuild
                pctx = parent.cache
                if pctx is None or not _fresh(parent, key):
                    pctx = self._context(buf, off, key, parent)
                brood = parent.cache_brood
                if brood is None or brood.src is not pctx:
                    brood = parent.cache_brood = _Brood(pctx, parent)
                if child.ancestry is brood.ancestry:  # a new node (not one from the /proc snapshot)
                    # shared by the brood: fresh by construction (the parent's, with the parent's key) but
                    # for the identity, which every event sets
                    ctx = child.cache = brood.ctx
                    child.cache_key = parent.cache_key
                    child.cache_version = child.version
                    child.cache_parent_version = parent.version
                    child.cache_origin = brood
                elif child.parent is parent:
                    _remember(child, fork_fields(pctx, child, parent), parent.cache_key)
        else:
            child = self.tree.fork(c_pid, c_start // _NS_PER_TICK, c_ppid, c_pstart)
        if ctx is None:
            ctx = child.cache
            if ctx is None or not _fresh(child, key):
                ctx = self._context(buf, off, key, child)
        f = ctx.copy()
        f["process.pid"] = c_pid
        f["process.entity_id"] = child.entity_id
        f["process.start"] = child.start
        f["@timestamp"] = ts / 1e9 + self.clock_offset
        f["event.action"] = _FORK
        f["process.tid"] = c_pid
        if "namespace.pid" in ctx:
            f["process.ns_pid"] = c_ns_pid
        ev = _new(Event)
        ev.fields = f
        self.events.append(ev)

    def _exec(self, buf: Any, off: int, n: int) -> None:
        # (no starred unpacking: it goes through an iterator and a list, several times the cost of a tuple)
        (
            ts,
            start,
            flags,
            pid,
            tid,
            ns_pid,
            argv_len,
            argv_total,
            fn_len,
            exe_len,
            cwd_len,
            cg_len,
            cg1_len,
        ) = _EXEC_REC.unpack_from(buf, off)
        raw = buf[off + _EXEC_DATA : off + n]
        small = len(raw) <= _PARSE_CACHE_MAX_KEY
        parsed = self._parsed.get(raw) if small else None
        if parsed is None:
            args, command_line, filename, exe, cwd, cg, cg1 = parse_exec(
                raw, argv_len, fn_len, exe_len, cwd_len, cg_len, cg1_len
            )
            cid = self._container(cg) or self._container(cg1)
            name = exe.rpartition("/")[2] if exe else None
            parsed = (args, command_line, filename, exe, cwd, cg, cid, name)
            if small:
                if len(self._parsed) >= _PARSE_CACHE_ENTRIES:
                    self._parsed.clear()
                self._parsed[raw] = parsed
        args, command_line, filename, exe, cwd, cg, cid, name = parsed
        truncated = bool(flags & _ARGV_TRUNC)
        info = self._pid_get(pid)
        if info is None or info.start != start // _NS_PER_TICK:
            info = self._actor(buf, off)
        key = buf[off + _CTX : off + _CTX_END]
        ctx = info.cache
        parent = info.parent
        fresh = (
            ctx is not None
            and info.cache_key == key
            and info.cache_version == info.version
            and (parent is None or info.cache_parent_version == parent.version)
        )
        # ProcessTree.exec, inline (a call with keywords costs a tenth of a storm exec's decoding)
        info.executable = exe
        if exe:
            info.name = name
        info.args = args
        info.command_line = command_line
        if cwd:
            info.cwd = cwd
        info.args_truncated = truncated
        info.args_from_proc = False
        info.version += 1
        if info.container_id is None and cid:
            info.container_id = cid
        if fresh and ctx is not None:
            # same user and namespaces as before the exec: only the image fields change. A child still on
            # its parent's brood context that runs a command a sibling ran gets the sibling's context with its
            # own identity (a storm's thousands of `/bin/true`s): nothing else in it depends on the child.
            brood = info.cache_origin if small and not truncated else None
            derived = brood.execs.get(raw) if brood is not None else None
            if derived is not None:
                ctx = derived  # shared with the sibling: only the identity differs, set per event
            else:
                ctx = exec_fields(ctx, info)
                if brood is not None:
                    if len(brood.execs) >= _BROOD_EXECS:
                        brood.execs.clear()
                    brood.execs[raw] = ctx
            info.cache = ctx  # same key, same parent: only the version moved
            info.cache_version = info.version
            info.cache_origin = None
        else:
            ctx = self._context(buf, off, key, info)
        f = ctx.copy()
        f["process.pid"] = pid
        f["process.entity_id"] = info.entity_id
        f["process.start"] = info.start
        f["@timestamp"] = ts / 1e9 + self.clock_offset
        f["event.action"] = _EXEC
        f["process.tid"] = tid
        if "namespace.pid" in ctx:
            f["process.ns_pid"] = ns_pid
        if truncated:
            f["process.args_truncated"] = True
            f["process.args_bytes"] = argv_total
        if flags & R.F_ARGV_FAULT:
            f["process.args_fault"] = True
        if filename is not None and filename != exe:
            f["process.exec_filename"] = filename
        if cg:
            f["cgroup.path"] = cg
        ev = _new(Event)
        ev.fields = f
        self.events.append(ev)

    def _container(self, cgroup_name: str) -> str | None:
        if not cgroup_name:
            return None
        cid = self._containers.get(cgroup_name, "")
        if cid == "":
            cid = self._containers[cgroup_name] = container_id_from_cgroup(cgroup_name)
        return cid

    # --- syscalls ---------------------------------------------------------------------------------------
    def _syscall(self, buf: Any, off: int, n: int) -> None:
        t = _SYS_REC.unpack_from(buf, off)
        ts, start, _ps, _t, flags, pid, tid, _pp, ns_pid, ret = t[:10]
        args: tuple[int, ...] = t[10:16]
        nr, s_arg0, s_arg1, s_arg2, s_base0, s_base1, s_fdpath, blob_len, argv_len = t[16:]
        row = self._table.get(nr)
        if row is None:
            raise SensorError(f"kernel record for syscall {nr}, which is not in the table")
        sc, action = row
        # data: the present strings in the order arg0, base0, arg1, base1, arg2, fdpath, then blob, argv.
        # User strings (arg*) are stored with their NUL, paths from a dentry walk (base*, fdpath) without.
        strs: list[str | None] = [None] * 6
        data = buf[off + _SYS_DATA : off + n]  # (slices of it stop at the record's end, whatever the lengths)
        pos = 0
        if s_arg0:
            strs[0] = data[: s_arg0 - 1].decode("utf-8", "backslashreplace")
            pos = s_arg0
        if s_base0:
            strs[3] = data[pos : pos + s_base0].decode("utf-8", "backslashreplace")
            pos += s_base0
        if s_arg1:
            strs[1] = data[pos : pos + s_arg1 - 1].decode("utf-8", "backslashreplace")
            pos += s_arg1
        if s_base1:
            strs[4] = data[pos : pos + s_base1].decode("utf-8", "backslashreplace")
            pos += s_base1
        if s_arg2:
            strs[2] = data[pos : pos + s_arg2 - 1].decode("utf-8", "backslashreplace")
            pos += s_arg2
        if s_fdpath:
            strs[5] = data[pos : pos + s_fdpath].decode("utf-8", "backslashreplace")
            pos += s_fdpath
        blob = data[pos : pos + blob_len] if blob_len else b""
        pos += blob_len
        fail_argv = split_argv(data[pos : pos + argv_len]) if argv_len else None

        if flags & _SENSITIVE and sc.name in OPEN_FAMILY and not open_flags(sc, args, blob) & WRITE_INTENT:
            action = _READ_SENSITIVE
        info = self._pid_get(pid)
        if info is None or info.start != start // _NS_PER_TICK:
            info = self._actor(buf, off)
        if action == _KILL and not kill_worth_reporting(sc, args, pid, tid):
            return
        # The cache test of _fresh(), written out: exits and syscalls are most of a storm's records, and a
        # call per record costs more than the test itself.
        key = buf[off + _CTX : off + _CTX_END]
        ctx = info.cache
        parent = info.parent
        if (
            ctx is None
            or info.cache_key != key
            or info.cache_version != info.version
            or (parent is not None and info.cache_parent_version != parent.version)
        ):
            ctx = self._context(buf, off, key, info)
        f = ctx.copy()
        f["process.pid"] = pid
        f["process.entity_id"] = info.entity_id
        f["process.start"] = info.start
        f["@timestamp"] = ts / 1e9 + self.clock_offset
        f["event.action"] = action
        f["process.tid"] = tid
        if "namespace.pid" in ctx:
            f["process.ns_pid"] = ns_pid
        if ret >= 0:
            f["event.outcome"] = "success"
        else:
            f["event.outcome"] = "unknown" if ret == -_EINPROGRESS else "failure"
            f["event.code"] = -ret
        f["syscall.name"] = sc.name
        syscall_fields(sc, action, f, args, strs, blob, ret, flags)
        if action in (_KILL, _PTRACE):
            target_fields(action, f, self._pid_get)
        if flags & _SOCK_FLAG:
            family, s_type, proto, lport, rport, _state, _pad, laddr, raddr = _SOCK.unpack_from(
                buf, off + _SOCK_OFFSET
            )
            socket_fields(action, f, family, s_type, proto, lport, rport, laddr, raddr)
        if fail_argv is not None:
            f["exec.args"] = fail_argv
            if flags & _ARGV_TRUNC:
                f["exec.args_truncated"] = True
        if flags & _PATH_TRUNC:
            f["file.path_truncated"] = True
        ev = _new(Event)
        ev.fields = f
        self.events.append(ev)


def _fresh(info: ProcessInfo, key: bytes) -> bool:
    """The cached context still holds: same credentials/namespaces/cgroup, no exec of it or its parent."""
    parent = info.parent
    return (
        info.cache_key == key
        and info.cache_version == info.version
        and (parent is None or info.cache_parent_version == parent.version)
    )


def _remember(info: ProcessInfo, ctx: dict[str, Any], key: bytes) -> None:
    # A cached context is never mutated (it may be shared by siblings: events copy it and set the identity)
    info.cache = ctx
    info.cache_key = key
    info.cache_version = info.version
    info.cache_parent_version = info.parent.version if info.parent is not None else -1
    info.cache_origin = None


class _Brood:
    """What every child of one process starts with: the parent's context turned into a child's (the parent's
    image as ``process.parent.*``, the children's shared ancestry), from one version of the parent's context
    (``src``: replaced, never mutated, so identity tells staleness). Children copy ``ctx`` and set their pid,
    entity id and start. ``execs``: the context a child has after exec'ing a given command (by raw record
    bytes), for its siblings that run the same."""

    __slots__ = ("ancestry", "ctx", "execs", "src")

    def __init__(self, src: dict[str, Any], parent: ProcessInfo) -> None:
        self.src = src
        self.ancestry = parent.child_ancestry()
        self.ctx = fork_template(src, parent, list(self.ancestry))
        self.execs: dict[bytes, dict[str, Any]] = {}
