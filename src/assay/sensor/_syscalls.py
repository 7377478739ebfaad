"""The syscalls the sensor watches, and what each one means in the event taxonomy.

One table drives every source: the eBPF object's ``sc_desc`` map (which arguments are paths, sockets, structs
to copy), the audit rules (which syscalls to ask kauditd for), and the mapping back to ``event.action``. The
same behaviour therefore gets the same action whichever source saw it.

Every variant of a call is listed: glibc on x86-64 still uses ``chmod``/``rename``/``unlink`` (not only the
``*at`` forms), and hooking only the ``*at`` forms was measured to catch a quarter of file activity.

Numbers are x86-64's; other architectures need their own column (arm64 has no ``open``, ``rename``...).
"""

from __future__ import annotations

import platform
import struct
from dataclasses import dataclass

from assay.errors import SensorError
from assay.events import Action

# Special values of the descriptor bytes; mirrored from records.h.
NO_ARG = 0xFF
DIRFD_CWD = 0xFE
NOT_PATH = 0xFD
FROM_RET = 0xFE
OPEN_HOW = 0xFE
D_FAILED_ONLY = 1 << 0
D_ARGV = 1 << 1
NR_SYSCALLS = 512

# struct sc_desc (records.h): hooked, str_arg[3], str_dirfd[3], fd_path_arg, sock_fd_arg, blob_arg,
# blob_len_arg, blob_size, open_flags_arg, argv_arg, flags, match_arg, match_val.
DESC = struct.Struct("<B3B3BBBBBBBBBBI")
assert DESC.size == 20

BPF_PROG_LOAD = 5


@dataclass(frozen=True, slots=True)
class Syscall:
    """One watched syscall. Argument indexes are 0-based; ``strs`` pairs a string argument with its dirfd."""

    name: str
    nr: int
    action: Action
    strs: tuple[tuple[int, int], ...] = ()
    fd_path: int = NO_ARG
    sock_fd: int = NO_ARG
    blob: int = NO_ARG
    blob_len: int = NO_ARG
    blob_size: int = 0
    open_flags: int = NO_ARG
    argv: int = NO_ARG
    failed_only: bool = False
    match: tuple[int, int] | None = None
    mode_arg: int | None = None  # chmod-family mode, open-family create mode

    def descriptor(self) -> bytes:
        s = [a for a, _ in self.strs] + [NO_ARG] * (3 - len(self.strs))
        d = [dfd for _, dfd in self.strs] + [NOT_PATH] * (3 - len(self.strs))
        flags = (D_FAILED_ONLY if self.failed_only else 0) | (D_ARGV if self.argv != NO_ARG else 0)
        match_arg, match_val = self.match if self.match else (NO_ARG, 0)
        return DESC.pack(
            1,
            *s,
            *d,
            self.fd_path,
            self.sock_fd,
            self.blob,
            self.blob_len,
            self.blob_size,
            self.open_flags,
            self.argv,
            flags,
            match_arg,
            match_val,
        )


A = Action
CWD = DIRFD_CWD
_X86_64: tuple[Syscall, ...] = (
    # file writes: open with write intent (filtered in the kernel), creat, truncate
    Syscall("open", 2, A.FILE_WRITE, strs=((0, CWD),), open_flags=1, mode_arg=2),
    Syscall("openat", 257, A.FILE_WRITE, strs=((1, 0),), open_flags=2, mode_arg=3),
    Syscall("openat2", 437, A.FILE_WRITE, strs=((1, 0),), open_flags=OPEN_HOW, blob=2, blob_size=24),
    Syscall("creat", 85, A.FILE_WRITE, strs=((0, CWD),), mode_arg=1),
    Syscall("truncate", 76, A.FILE_WRITE, strs=((0, CWD),)),
    # deletes and renames
    Syscall("unlink", 87, A.FILE_DELETE, strs=((0, CWD),)),
    Syscall("unlinkat", 263, A.FILE_DELETE, strs=((1, 0),)),
    Syscall("rmdir", 84, A.FILE_DELETE, strs=((0, CWD),)),
    Syscall("rename", 82, A.FILE_RENAME, strs=((0, CWD), (1, CWD))),
    Syscall("renameat", 264, A.FILE_RENAME, strs=((1, 0), (3, 2))),
    Syscall("renameat2", 316, A.FILE_RENAME, strs=((1, 0), (3, 2))),
    # permissions and ownership
    Syscall("chmod", 90, A.FILE_CHMOD, strs=((0, CWD),), mode_arg=1),
    Syscall("fchmod", 91, A.FILE_CHMOD, fd_path=0, mode_arg=1),
    Syscall("fchmodat", 268, A.FILE_CHMOD, strs=((1, 0),), mode_arg=2),
    Syscall("fchmodat2", 452, A.FILE_CHMOD, strs=((1, 0),), mode_arg=2),
    Syscall("chown", 92, A.FILE_CHOWN, strs=((0, CWD),)),
    Syscall("lchown", 94, A.FILE_CHOWN, strs=((0, CWD),)),
    Syscall("fchown", 93, A.FILE_CHOWN, fd_path=0),
    Syscall("fchownat", 260, A.FILE_CHOWN, strs=((1, 0),)),
    # network: the sockaddr as given, plus the socket's own view after the call
    Syscall("connect", 42, A.CONNECT, sock_fd=0, blob=1, blob_len=2),
    Syscall("accept", 43, A.ACCEPT, sock_fd=FROM_RET),
    Syscall("accept4", 288, A.ACCEPT, sock_fd=FROM_RET),
    Syscall("bind", 49, A.BIND, sock_fd=0, blob=1, blob_len=2),
    Syscall("listen", 50, A.LISTEN, sock_fd=0),
    # exec attempts that failed (a successful exec is reported at sched_process_exec, with the real argv)
    Syscall("execve", 59, A.EXEC_FAILED, strs=((0, CWD),), argv=1, failed_only=True),
    Syscall("execveat", 322, A.EXEC_FAILED, strs=((1, 0),), argv=2, failed_only=True),
    # credentials
    Syscall("setuid", 105, A.SETUID),
    Syscall("setreuid", 113, A.SETUID),
    Syscall("setresuid", 117, A.SETUID),
    Syscall("setfsuid", 122, A.SETUID),
    Syscall("setgid", 106, A.SETGID),
    Syscall("setregid", 114, A.SETGID),
    Syscall("setresgid", 119, A.SETGID),
    Syscall("setfsgid", 123, A.SETGID),
    # process control and kernel surface
    Syscall("ptrace", 101, A.PTRACE),
    Syscall("kill", 62, A.KILL),
    Syscall("tkill", 200, A.KILL),
    Syscall("tgkill", 234, A.KILL),
    Syscall("prctl", 157, A.PRCTL),
    Syscall("memfd_create", 319, A.MEMFD_CREATE, strs=((0, NOT_PATH),)),
    Syscall("mount", 165, A.MOUNT, strs=((0, NOT_PATH), (1, CWD), (2, NOT_PATH))),
    Syscall("move_mount", 429, A.MOUNT, strs=((1, 0), (3, 2))),
    Syscall("umount2", 166, A.UMOUNT, strs=((0, CWD),)),
    Syscall("bpf", 321, A.BPF_LOAD, blob=1, blob_len=2, match=(0, BPF_PROG_LOAD)),
    Syscall("init_module", 175, A.MODULE_LOAD, strs=((2, NOT_PATH),)),
    Syscall("finit_module", 313, A.MODULE_LOAD, fd_path=0, strs=((1, NOT_PATH),)),
    # execution domain (ADDR_NO_RANDOMIZE disables ASLR), the kernel log buffer, system discovery
    Syscall("personality", 135, A.PERSONALITY),
    Syscall("syslog", 103, A.SYSLOG),
    Syscall("sysinfo", 99, A.SYSINFO),
    # special files (FIFOs, sockets, device nodes); glibc's mknod() and mkfifo() call mknodat
    Syscall("mknod", 133, A.MKNOD, strs=((0, CWD),), mode_arg=1),
    Syscall("mknodat", 259, A.MKNOD, strs=((1, 0),), mode_arg=2),
)
del A, CWD


def syscall_table(machine: str | None = None) -> tuple[Syscall, ...]:
    """The watched syscalls for this machine's architecture."""
    arch = machine or platform.machine()
    if arch in ("x86_64", "amd64"):
        return _X86_64
    raise SensorError(
        f"no syscall table for architecture {arch!r} (x86_64 only so far); use the audit source"
    )


def by_number(machine: str | None = None) -> dict[int, Syscall]:
    return {s.nr: s for s in syscall_table(machine)}


def by_name(machine: str | None = None) -> dict[str, Syscall]:
    return {s.name: s for s in syscall_table(machine)}
