"""The few Linux system calls the sandbox needs that Python 3.11's ``os`` module lacks, through ctypes.

``unshare(2)``, ``mount(2)``, ``umount2(2)``, ``pivot_root(2)`` and ``prctl(2)`` / ``capset(2)`` for
capabilities. Each wrapper raises :class:`SandboxError` naming the call and its arguments, so a failed step
of the launcher says exactly which step failed and why (errno text), never a bare ``OSError``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from assay.sandbox._errors import SandboxError

# <linux/sched.h>
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# <linux/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

# <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

SYS_PIVOT_ROOT = 155  # x86_64; aarch64 is 41
SYS_CAPSET = 126  # x86_64; aarch64 is 91

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _syscall_numbers() -> tuple[int, int]:
    machine = os.uname().machine
    if machine == "x86_64":
        return SYS_PIVOT_ROOT, SYS_CAPSET
    if machine == "aarch64":
        return 41, 91
    raise SandboxError(f"the sandbox knows the syscall numbers of x86_64 and aarch64 only, not {machine}")


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise SandboxError(f"{what}: {os.strerror(err)} (errno {err})")


def _b(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare(0x{flags:x})")


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    _check(
        _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)),
        f"mount({source!r}, {target!r}, {fstype!r}, 0x{flags:x}, {data!r})",
    )


def umount2(target: str, flags: int) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount2({target!r}, {flags})")


def pivot_root(new_root: str, put_old: str) -> None:
    number, _ = _syscall_numbers()
    _check(_libc.syscall(number, _b(new_root), _b(put_old)), f"pivot_root({new_root!r}, {put_old!r})")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    ret = int(_libc.prctl(option, arg2, arg3, arg4, arg5))
    if ret < 0:
        err = ctypes.get_errno()
        raise SandboxError(f"prctl({option}, {arg2}): {os.strerror(err)} (errno {err})")
    return ret


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def clear_own_capabilities() -> None:
    """Empty this process's effective, permitted and inheritable sets (``capset`` v3, both 32-bit words)."""
    _, number = _syscall_numbers()
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    _check(_libc.syscall(number, ctypes.byref(header), ctypes.byref(data)), "capset(all empty)")
