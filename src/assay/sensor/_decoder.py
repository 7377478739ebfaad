"""eBPF records → normalized :class:`Event`s (sans-I/O: bytes in, events out, the process tree updated).

This is the hot path of the sensor: one call per kernel record. It avoids intermediate objects: a record is
unpacked once, the actor's cached ``process.*`` fields come from the tree, and the event dict is built in one
go. Tests drive it with records packed by hand, so it needs neither root nor a kernel.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
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
)
from assay.sensor._syscalls import Syscall
from assay.sensor._tree import ProcessInfo, ProcessTree, container_id_from_cgroup, exec_fields, fork_fields

_NS_PER_TICK = 10_000_000  # USER_HZ = 100
_EINPROGRESS = 115
_EXEC, _FORK, _EXIT = Action.EXEC.value, Action.FORK.value, Action.EXIT.value


def _text(raw: bytes | memoryview) -> str:
    return bytes(raw).decode("utf-8", "backslashreplace")


def _slice_text(data: bytes | str, off: int, n: int) -> str:
    return data[off : off + n] if isinstance(data, str) else _text(data[off : off + n])


def split_argv(raw: bytes) -> list[str]:
    """NUL-separated argv as the kernel keeps it (each argument NUL-terminated)."""
    if not raw:
        return []
    # one decode, then a split: NUL is one byte in UTF-8 and never produced by backslashreplace
    parts = raw.decode("utf-8", "backslashreplace").split("\0")
    if parts[-1] == "":
        parts.pop()
    return parts


class Decoder:
    """Turns raw records into events for one host, keeping the process tree current."""

    def __init__(
        self,
        tree: ProcessTree,
        host: str,
        syscalls: Mapping[int, Syscall],
        host_namespaces: Mapping[str, int] | None = None,
        source: str = "ebpf",
    ) -> None:
        self.tree = tree
        self.host = host
        self.source = source
        self.syscalls = dict(syscalls)
        self._host_ns = dict(host_namespaces or {})
        self.clock_offset = 0.0
        self._containers: dict[str, str | None] = {}
        self.sync_clock()

    def sync_clock(self) -> None:
        """Kernel timestamps are CLOCK_BOOTTIME; the offset to the wall clock moves with NTP steps."""
        self.clock_offset = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)

    # --- entry point ------------------------------------------------------------------------------------
    def decode(self, rec: bytes | memoryview) -> Event | None:
        if len(rec) < R.HDR_SIZE:
            raise SensorError(f"kernel record of {len(rec)} bytes is shorter than its header")
        kind = rec[R.TYPE_OFFSET]  # u32, little-endian, < 256
        if kind == R.EV_SYSCALL:
            return self._syscall(rec)
        if kind == R.EV_EXEC:
            return self._exec(rec)
        if kind == R.EV_FORK:
            return self._fork(rec)
        if kind == R.EV_EXIT:
            return self._exit(rec)
        raise SensorError(f"kernel record of unknown type {kind}")

    # --- common parts -----------------------------------------------------------------------------------
    def _actor(self, h: tuple[Any, ...]) -> ProcessInfo:
        pid = h[5]  # R.H_PID
        start = h[1] // _NS_PER_TICK  # R.H_START
        info = self.tree.by_pid(pid)
        if info is None or info.start != start:
            comm = h[R.H_COMM].split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
            info = self.tree.ensure(pid, start, h[R.H_PPID], h[R.H_PSTART] // _NS_PER_TICK, comm)
        return info

    def _base(
        self, h: tuple[Any, ...], rec: bytes | memoryview, action: str, info: ProcessInfo
    ) -> dict[str, Any]:
        """The event's fields: a copy of the process's cached context, plus the per-event ones.

        The context (process, parent, user, namespaces, cgroup) changes only on exec, on the parent's exec, or
        when the record's context block (credentials, namespaces, cgroup) differs; it is built once and then
        copied (one C-level dict copy) for each event, which is what keeps storms cheap.
        """
        ctx = info.cache
        if ctx is None or not self._fresh(info, rec):
            ctx = self._context(h, bytes(rec[R.CTX_START : R.CTX_END]), info)
        f = ctx.copy()
        f["@timestamp"] = h[0] / 1e9 + self.clock_offset
        f["event.action"] = action
        f["process.tid"] = h[6]
        if "namespace.pid" in ctx:
            f["process.ns_pid"] = h[8]  # R.H_NSPID: per process, so not part of the cached context
        return f

    @staticmethod
    def _fresh(info: ProcessInfo, rec: bytes | memoryview) -> bool:
        parent = info.parent
        return (
            info.cache_version == info.version
            and (parent is None or info.cache_parent_version == parent.version)
            and info.cache_key == rec[R.CTX_START : R.CTX_END]
        )

    def _context(self, h: tuple[Any, ...], key: bytes, info: ProcessInfo) -> dict[str, Any]:
        uid, euid, gid = h[R.H_UID], h[R.H_EUID], h[R.H_GID]
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
        if h[R.H_LOGINUID] != R.INVALID_UID:
            f["user.audit.id"] = h[R.H_LOGINUID]
        f["cgroup.id"] = h[R.H_CGROUP]
        hn = self._host_ns
        if hn:
            pidns = h[R.H_PIDNS]
            if pidns != hn.get("pid"):
                f["namespace.pid"] = pidns
                f["process.pid_ns"] = pidns
            if h[R.H_MNTNS] != hn.get("mnt"):
                f["namespace.mnt"] = h[R.H_MNTNS]
            if h[R.H_NETNS] != hn.get("net"):
                f["namespace.net"] = h[R.H_NETNS]
        self._remember(info, f, key)
        return f

    @staticmethod
    def _remember(info: ProcessInfo, ctx: dict[str, Any], key: bytes) -> None:
        info.cache = ctx
        info.cache_key = key
        info.cache_version = info.version
        info.cache_parent_version = info.parent.version if info.parent is not None else -1

    # --- process lifecycle ------------------------------------------------------------------------------
    def _exec(self, rec: bytes | memoryview) -> Event:
        h = R.EXEC.unpack_from(rec)  # the header fields come first in every record's tuple
        argv_len, argv_total, fn_len, exe_len, cwd_len, cg_len, cg1_len = h[R.H_LEN :]
        raw = bytes(rec[R.EXEC.size :])
        # ASCII (nearly always): one decode, then slices at the byte offsets; else decode piece by piece
        data: bytes | str = raw.decode("ascii") if raw.isascii() else raw
        txt = _slice_text
        off = argv_len
        args = split_argv(raw[:argv_len])
        filename = txt(data, off, fn_len) if fn_len else None
        off += fn_len + 1 if fn_len else 0
        exe = txt(data, off, exe_len) if exe_len else None
        off += exe_len
        cwd = txt(data, off, cwd_len) if cwd_len else None
        off += cwd_len
        cg = txt(data, off, cg_len) if cg_len else ""
        off += cg_len + 1 if cg_len else 0
        cg1 = txt(data, off, cg1_len) if cg1_len else ""
        flags = h[R.H_FLAGS]
        truncated = bool(flags & R.F_ARGV_TRUNC)
        info = self._actor(h)
        if exe is None and filename is not None:
            exe = join_path(cwd, filename)
        fresh = info.cache is not None and self._fresh(info, rec)
        self.tree.exec(info, exe, args, cwd, truncated=truncated)
        if info.container_id is None and (cg or cg1):
            info.container_id = self._container(cg) or self._container(cg1)
        if fresh and info.cache is not None:
            # same user and namespaces as before the exec: only the image fields change
            self._remember(info, exec_fields(info.cache, info), info.cache_key)
        f = self._base(h, rec, _EXEC, info)
        if truncated:
            f["process.args_truncated"] = True
            f["process.args_bytes"] = argv_total
        if flags & R.F_ARGV_FAULT:
            f["process.args_fault"] = True
        if filename is not None and filename != exe:
            f["process.exec_filename"] = filename
        if cg:
            f["cgroup.path"] = cg
        return Event(f)

    def _container(self, cgroup_name: str) -> str | None:
        if not cgroup_name:
            return None
        cid = self._containers.get(cgroup_name, "")
        if cid == "":
            cid = self._containers[cgroup_name] = container_id_from_cgroup(cgroup_name)
        return cid

    def _fork(self, rec: bytes | memoryview) -> Event:
        h = R.FORK.unpack_from(rec)
        child_start, child_pstart, child_pid, child_ppid, child_ns_pid = h[R.H_LEN :]
        parent = self._actor(h)  # the forking process, so the child inherits what is known of it
        child = self.tree.fork(
            child_pid, child_start // _NS_PER_TICK, child_ppid, child_pstart // _NS_PER_TICK
        )
        if child.cache is None and child.parent is parent:
            # the child runs the parent's image with the parent's credentials: derive, do not rebuild
            pctx = parent.cache
            if pctx is None or not self._fresh(parent, rec):
                pctx = self._context(h, bytes(rec[R.CTX_START : R.CTX_END]), parent)
            self._remember(child, fork_fields(pctx, child, parent), parent.cache_key)
        f = self._base(h, rec, _FORK, child)
        f["process.tid"] = child_pid
        if "process.ns_pid" in f:
            f["process.ns_pid"] = child_ns_pid
        return Event(f)

    def _exit(self, rec: bytes | memoryview) -> Event:
        h = R.EXIT.unpack_from(rec)
        status = h[R.H_LEN]
        info = self._actor(h)
        f = self._base(h, rec, _EXIT, info)
        sig = status & 0x7F
        if sig:
            f["process.exit_code"] = 128 + sig  # the shell's convention for "killed by signal N"
            f["signal.number"] = sig
        else:
            f["process.exit_code"] = (status >> 8) & 0xFF
        self.tree.exit(info)
        return Event(f)

    # --- syscalls ---------------------------------------------------------------------------------------
    def _syscall(self, rec: bytes | memoryview) -> Event | None:
        t = h = R.SYS.unpack_from(rec)
        i = R.H_LEN
        ret = t[i]
        args = t[i + 1 : i + 7]
        nr = t[i + 7]
        slen = t[i + 8 : i + 14]
        blob_len, argv_len = t[i + 14], t[i + 15]
        s_family, s_type, s_proto, s_lport, s_rport, _state, _pad, s_laddr, s_raddr = t[i + 16 :]
        sc = self.syscalls.get(nr)
        if sc is None:
            raise SensorError(f"kernel record for syscall {nr}, which is not in the table")
        data = bytes(rec[R.SYS.size :])
        strs: list[str | None] = [None] * 6
        off = 0
        for slot in _SLOT_ORDER:
            n = slen[slot]
            if not n:
                continue
            if slot <= R.S_ARG2:  # a user string, stored with its NUL
                strs[slot] = _text(data[off : off + n - 1])
            else:  # a path from a dentry walk, stored without one
                strs[slot] = _text(data[off : off + n])
            off += n
        blob = data[off : off + blob_len]
        off += blob_len
        fail_argv = split_argv(data[off : off + argv_len]) if argv_len else None

        action: str = sc.action.value
        flags = h[R.H_FLAGS]
        if sc.name in OPEN_FAMILY and flags & R.F_SENSITIVE and not open_flags(sc, args, blob) & WRITE_INTENT:
            action = Action.FILE_READ_SENSITIVE.value
        info = self._actor(h)
        if action == Action.KILL and not kill_worth_reporting(sc, args, h[R.H_PID], h[R.H_TID]):
            return None
        f = self._base(h, rec, action, info)
        f["event.outcome"] = "success" if ret >= 0 else ("unknown" if ret == -_EINPROGRESS else "failure")
        if ret < 0:
            f["event.code"] = -ret
        f["syscall.name"] = sc.name
        syscall_fields(sc, action, f, args, strs, blob, ret, flags)
        if flags & R.F_SOCK:
            socket_fields(action, f, s_family, s_type, s_proto, s_lport, s_rport, s_laddr, s_raddr)
        if fail_argv is not None:
            f["exec.args"] = fail_argv
            if flags & R.F_ARGV_TRUNC:
                f["exec.args_truncated"] = True
        if flags & R.F_PATH_TRUNC:
            f["file.path_truncated"] = True
        return Event(f)


_SLOT_ORDER = (R.S_ARG0, R.S_BASE0, R.S_ARG1, R.S_BASE1, R.S_ARG2, R.S_FDPATH)
