"""The binary records of the eBPF sensor (``bpf/records.h``), as Python struct formats.

Sizes are pinned on both sides: ``_Static_assert`` in C, :func:`layout_sizes` here, and a test that reads the
asserts out of ``records.h`` and compares. Changing a record means changing all three.
"""

from __future__ import annotations

import os
import struct

# struct hdr: ts, start, pstart, type, flags, pid, tid, ppid, ns_pid, then the context block (cgroup_id, uid,
# euid, gid, egid, loginuid, sessionid, mntns, netns, pidns, pad), then comm[16]
HDR = "QQQ6IQ10I16s"
HDR_SIZE = 112
CTX_START, CTX_END = 48, 96  # the context block: one bytes key for the decoder's per-process cache
HDR_STRUCT = struct.Struct("<" + HDR)

EXEC = struct.Struct("<" + HDR + "IIHHHHH6x")  # argv_len, argv_total, filename, exe, cwd, cg, cg1 lengths
FORK = struct.Struct("<" + HDR + "QQIII4x")  # child_start, child_pstart, child_pid, child_ppid, child_ns_pid
EXIT = struct.Struct("<" + HDR + "iI")  # exit_code, pad
# ret, args[6], nr, slen[6], blob_len, argv_len, used, then struct sockinfo
SYS = struct.Struct("<" + HDR + "q6QI6HHH4x" + "HHHHHBB16s16s4x")
CTX = struct.Struct("<Q10I")
TYPE_OFFSET = 24

# Indexes into an unpacked header.
H_TS, H_START, H_PSTART, H_TYPE, H_FLAGS, H_PID, H_TID, H_PPID, H_NSPID = range(9)
H_CGROUP, H_UID, H_EUID, H_GID, H_EGID, H_LOGINUID, H_SESSIONID, H_MNTNS, H_NETNS, H_PIDNS = range(9, 19)
H_COMM = 20
H_LEN = 21

EV_EXEC, EV_FORK, EV_EXIT, EV_SYSCALL = 1, 2, 3, 4
RECORD_TYPES = {EV_EXEC: "exec", EV_FORK: "fork", EV_EXIT: "exit", EV_SYSCALL: "syscall"}

F_ARGV_TRUNC = 1 << 0
F_ARGV_FAULT = 1 << 1
F_PATH_TRUNC = 1 << 2
F_STR_FAULT = 1 << 3
F_SENSITIVE = 1 << 4
F_SENSITIVE_DIR = 1 << 5
F_SOCK = 1 << 6

# Slots of a syscall record's strings.
S_ARG0, S_ARG1, S_ARG2, S_BASE0, S_BASE1, S_FDPATH = range(6)

# struct stats (per CPU): events, dropped, last_drop_ts, dropped_by_type[5], pending_full
STATS = struct.Struct("<QQQ5QQ")
INODE_KEY = struct.Struct("<QII")  # ino, dev, pad

# Caps of records.h (a test reads them back from the header).
ARGV_CAP = 16384
STR_CAP = 4096
CG_CAP = 128
SYS_DATA = 24576
# The largest record the kernel can ask the ring buffer for: a full exec or syscall record, its 8-byte ring
# header, rounded up to 8. The ring cannot have refused a record unless it came within this of full.
MAX_RECORD = (8 + max(EXEC.size + ARGV_CAP + 3 * STR_CAP + 2 * CG_CAP, SYS.size + SYS_DATA) + 7) & ~7
INVALID_UID = 0xFFFFFFFF


def layout_sizes() -> dict[str, int]:
    """The sizes records.h asserts, computed from the formats above."""
    return {
        "hdr": HDR_SIZE,
        "hdr.cgroup_id": CTX_START,
        "hdr.comm": CTX_END,
        "exec_rec.data": EXEC.size,
        "fork_rec": FORK.size,
        "exit_rec": EXIT.size,
        "sys_rec.sk": SYS.size - 48,
        "sys_rec.data": SYS.size,
    }


def kernel_dev(st_dev: int) -> int:
    """A userspace st_dev as the kernel's internal dev_t (MKDEV: major << 20 | minor) stored in s_dev."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)
