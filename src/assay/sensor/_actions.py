"""What a syscall means as event fields, shared by every source so the same call reads the same everywhere.

The eBPF decoder and the audit source both describe a syscall by its table row, its arguments, its string
arguments (paths resolved to absolute where the source knows the directory), a struct the caller passed
(a sockaddr) and its result; these functions turn that into ``file.*``, ``destination.*``, ``user.target.*``
... fields. Keeping one implementation is what makes ``event.action`` and the fields source-independent.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from assay.events import Action
from assay.sensor import _net
from assay.sensor import _records as R
from assay.sensor._syscalls import NO_ARG, NOT_PATH, Syscall

_AT_REMOVEDIR = 0x200
_O_WRONLY, _O_RDWR, _O_CREAT, _O_TRUNC = 0o1, 0o2, 0o100, 0o1000
WRITE_INTENT = _O_WRONLY | _O_RDWR | _O_CREAT | _O_TRUNC
_S_IFMT = 0o170000
_NODE_TYPES = {0o010000: "fifo", 0o020000: "char", 0o060000: "block", 0o140000: "socket", 0o100000: "file"}
OPEN_FAMILY = frozenset({"open", "openat", "openat2"})
# Plain strings, not Action members: reading an Enum class attribute costs ~170 ns on CPython 3.11
# (EnumType.__getattr__), several times per syscall event; StrEnum members compare equal to their values.
_ACCEPT = Action.ACCEPT.value
_BIND = Action.BIND.value
_BPF_LOAD = Action.BPF_LOAD.value
_CONNECT = Action.CONNECT.value
_EXEC_FAILED = Action.EXEC_FAILED.value
_FILE_CHMOD = Action.FILE_CHMOD.value
_FILE_CHOWN = Action.FILE_CHOWN.value
_FILE_DELETE = Action.FILE_DELETE.value
_FILE_READ_SENSITIVE = Action.FILE_READ_SENSITIVE.value
_FILE_RENAME = Action.FILE_RENAME.value
_FILE_WRITE = Action.FILE_WRITE.value
_KILL = Action.KILL.value
_MEMFD_CREATE = Action.MEMFD_CREATE.value
_MODULE_LOAD = Action.MODULE_LOAD.value
_MKNOD = Action.MKNOD.value
_MOUNT = Action.MOUNT.value
_PERSONALITY = Action.PERSONALITY.value
_PRCTL = Action.PRCTL.value
_PTRACE = Action.PTRACE.value
_SETGID = Action.SETGID.value
_SETUID = Action.SETUID.value
_SYSLOG = Action.SYSLOG.value
_UMOUNT = Action.UMOUNT.value
# (module constants, not R.X: an attribute lookup each time, several per syscall event)
_F_SENSITIVE = R.F_SENSITIVE
_F_SENSITIVE_DIR = R.F_SENSITIVE_DIR
_S_ARG0 = R.S_ARG0
_S_ARG1 = R.S_ARG1
_S_ARG2 = R.S_ARG2
_S_BASE0 = R.S_BASE0
_S_BASE1 = R.S_BASE1
_S_FDPATH = R.S_FDPATH
FILE_ACTIONS = frozenset(
    {_FILE_WRITE, _FILE_DELETE, _FILE_RENAME, _FILE_CHMOD, _FILE_CHOWN, _FILE_READ_SENSITIVE}
)


def join_path(base: str | None, path: str) -> str:
    """A caller-given path resolved against the directory it was relative to (lexically, like the kernel
    would for a path without symlinks); absolute paths and unknown bases are returned as given."""
    if not base or path.startswith("/"):
        return path
    return os.path.normpath(f"{base}/{path}") if path else base


def text(raw: bytes | memoryview) -> str:
    return bytes(raw).decode("utf-8", "backslashreplace")


def s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def open_flags(sc: Syscall, args: tuple[int, ...], blob: bytes) -> int:
    if sc.name == "openat2":
        return int.from_bytes(blob[:8], "little") if len(blob) >= 8 else 0
    return args[sc.open_flags] if sc.open_flags < 6 else 0


def kill_worth_reporting(sc: Syscall, args: tuple[int, ...], pid: int, tid: int) -> bool:
    """Signal 0 only probes for existence, and a process signalling itself is not an attack on another."""
    sig = args[2] if sc.name == "tgkill" else args[1]
    target = s32(args[0])
    return sig != 0 and target not in (pid, tid)


# A signal or a trace names its target by pid alone; what that pid runs is what a rule needs (a kill of a
# database daemon, a trace of sshd), and only the process tree still knows it once the target is gone.
_TARGETS = {
    _KILL: ("signal.target_pid", "signal.target_executable"),
    _PTRACE: ("ptrace.target_pid", "ptrace.target_executable"),
}


def target_fields(action: str, f: dict[str, Any], by_pid: Callable[[int], Any]) -> None:
    """Add the executable of a kill's or a ptrace's target process, when the process tree knows it."""
    keys = _TARGETS.get(action)
    if keys is None:
        return
    pid = f.get(keys[0])
    if isinstance(pid, int) and pid > 0:  # 0 and negative pids name process groups, not one process
        info = by_pid(pid)
        if info is not None and info.executable:
            f[keys[1]] = info.executable


def syscall_fields(
    sc: Syscall,
    action: str,
    f: dict[str, Any],
    args: tuple[int, ...],
    strs: list[str | None],
    blob: bytes,
    ret: int,
    flags: int,
) -> None:
    path = strs[_S_ARG0]
    if path is not None and sc.strs and sc.strs[0][1] != NOT_PATH:
        path = join_path(strs[_S_BASE0], path)
    if action in FILE_ACTIONS:
        p = strs[_S_FDPATH] if sc.fd_path != NO_ARG else path
        if p is not None:
            f["file.path"] = p
        if action == _FILE_RENAME and strs[_S_ARG1] is not None:
            f["file.target_path"] = join_path(strs[_S_BASE1], strs[_S_ARG1] or "")
        creates = sc.name == "creat" or (sc.open_flags < 6 and args[sc.open_flags] & _O_CREAT)
        if sc.mode_arg is not None and (action == _FILE_CHMOD or creates):
            f["file.mode"] = args[sc.mode_arg] & 0o7777
        elif sc.name == "openat2" and len(blob) >= 16 and open_flags(sc, args, blob) & _O_CREAT:
            f["file.mode"] = int.from_bytes(blob[8:16], "little") & 0o7777  # struct open_how.mode
        if sc.name in OPEN_FAMILY:
            f["file.flags"] = open_flags(sc, args, blob)
        if sc.name == "rmdir" or (sc.name == "unlinkat" and args[2] & _AT_REMOVEDIR):
            f["file.type"] = "dir"
        if sc.name in ("chown", "lchown", "fchownat", "fchown"):
            i = 1 if sc.name != "fchownat" else 2
            if s32(args[i]) != -1:
                f["file.uid"] = args[i] & 0xFFFFFFFF
            if s32(args[i + 1]) != -1:
                f["file.gid"] = args[i + 1] & 0xFFFFFFFF
        if flags & _F_SENSITIVE_DIR:
            f["file.sensitive_match"] = "directory"
        elif flags & _F_SENSITIVE:
            f["file.sensitive_match"] = "file"
    elif action in (_CONNECT, _BIND):
        _net.sockaddr_fields(action, blob, f)
    elif action == _EXEC_FAILED:
        if path is not None:
            f["file.path"] = path
    elif action in (_SETUID, _SETGID):
        target = cred_target(sc, args)
        if target is not None:
            f["user.target.id" if action == _SETUID else "group.target.id"] = target
    elif action == _PTRACE:
        f["ptrace.request"] = args[0]
        f["ptrace.target_pid"] = s32(args[1])
    elif action == _KILL:
        f["signal.number"] = args[2] if sc.name == "tgkill" else args[1]
        f["signal.target_pid"] = s32(args[0])
    elif action == _PRCTL:
        f["prctl.option"] = args[0]
    elif action == _MEMFD_CREATE:
        if strs[_S_ARG0] is not None:
            f["memfd.name"] = strs[_S_ARG0]
        f["file.flags"] = args[1]
    elif action == _MOUNT:
        if sc.name == "mount":
            if strs[_S_ARG0] is not None:
                f["mount.source"] = strs[_S_ARG0]
            if strs[_S_ARG1] is not None:
                f["mount.target"] = join_path(strs[_S_BASE1], strs[_S_ARG1] or "")
            if strs[_S_ARG2] is not None:
                f["mount.fstype"] = strs[_S_ARG2]
        else:
            if path is not None:
                f["mount.source"] = path
            if strs[_S_ARG1] is not None:
                f["mount.target"] = join_path(strs[_S_BASE1], strs[_S_ARG1] or "")
    elif action == _UMOUNT:
        if path is not None:
            f["mount.target"] = path
    elif action == _BPF_LOAD:
        f["bpf.command"] = args[0]
        if len(blob) >= 4:
            f["bpf.prog_type"] = int.from_bytes(blob[:4], "little")
        if len(blob) >= 64:
            name = blob[48:64].split(b"\0", 1)[0]
            if name:
                f["bpf.prog_name"] = text(name)
    elif action == _PERSONALITY:
        f["personality.persona"] = args[0] & 0xFFFFFFFF  # unsigned int
    elif action == _SYSLOG:
        f["syslog.action"] = s32(args[0])
    elif action == _MKNOD:
        if path is not None:
            f["file.path"] = path
        if sc.mode_arg is not None:
            mode = args[sc.mode_arg]
            kind = _NODE_TYPES.get(mode & _S_IFMT, "file")  # mknod treats a type of 0 as a regular file
            f["file.type"] = kind
            f["file.mode"] = mode & 0o7777
            if kind in ("char", "block"):
                f["file.device"] = args[sc.mode_arg + 1]  # dev follows mode in mknod and mknodat
    elif action == _MODULE_LOAD:
        if strs[_S_FDPATH] is not None:
            f["file.path"] = strs[_S_FDPATH]
        params = strs[_S_ARG1] if sc.name == "finit_module" else strs[_S_ARG0]
        if params:
            f["module.params"] = params


def cred_target(sc: Syscall, args: tuple[int, ...]) -> int | None:
    """The id a set*id call asks for: the effective one where the call names several."""
    # setre*id(r, e), setres*id(r, e, s): effective first, then real
    cand = [args[0]] if sc.name in ("setuid", "setgid", "setfsuid", "setfsgid") else [args[1], args[0]]
    for c in cand:
        if s32(c) != -1:
            return c & 0xFFFFFFFF
    return None


def socket_fields(
    action: str,
    f: dict[str, Any],
    family: int,
    sock_type: int,
    proto: int,
    lport: int,
    rport: int,
    laddr: bytes,
    raddr: bytes,
) -> None:
    fam = _net.family_name(family)
    if fam is None:
        return
    f.setdefault("network.family", fam)
    tr = _net.transport(family, sock_type, proto)
    if tr:
        f["network.transport"] = tr
    if family == _net.AF_UNIX:
        return
    local_ip = _net.ip_text(laddr, family)
    remote_ip = _net.ip_text(raddr, family)
    if action == _ACCEPT:
        # the peer that connected in is the source; this host's listening end the destination
        f["source.ip"], f["source.port"] = remote_ip, rport
        f["destination.ip"], f["destination.port"] = local_ip, lport
    elif action == _CONNECT:
        f.setdefault("destination.ip", remote_ip)
        f.setdefault("destination.port", rport)
        if lport:
            f["source.ip"], f["source.port"] = local_ip, lport
    else:  # bind, listen: the local end; after bind(port 0) the socket knows the port it got
        f.setdefault("source.ip", local_ip)
        if lport:
            f["source.port"] = lport
