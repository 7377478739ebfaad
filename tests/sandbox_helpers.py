"""Sandbox test helpers: a manifest of host trees, and the guard every dangerous script starts with."""

from __future__ import annotations

import glob
import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

# The host trees the done-when test proves unchanged (issue 10).
HOST_TREES = ("/etc", "/root", "/home", "/var/spool", "/usr/local", "/tmp")
# Files up to this size are compared by content (sha256); larger ones by size, mtime, ctime and inode: any
# write changes ctime, which user space cannot set back. Hashing every byte of a toolchain-laden /root
# (≈ 6 GB on the project VM) would cost a minute per pass.
CONTENT_LIMIT = 256 * 1024


def extra_excludes() -> list[str]:
    """``ASSAY_TEST_HASH_EXCLUDE``: colon-separated globs of host paths other tenants of a shared machine
    change while the test runs (a job runner's spool in /tmp). Unset on CI: every path is compared."""
    out: list[str] = []
    for pattern in filter(None, os.environ.get("ASSAY_TEST_HASH_EXCLUDE", "").split(":")):
        out += glob.glob(pattern)
    return out


def manifest(roots: Iterable[str], exclude: Iterable[str] = ()) -> dict[str, tuple[object, ...]]:
    """Path → (type and mode, owner, size, mtime, ctime, inode[, sha256 | link target]) of every entry."""
    skip = {os.path.normpath(p) for p in [*exclude, *extra_excludes()]}
    out: dict[str, tuple[object, ...]] = {}
    for root in roots:
        if not os.path.lexists(root):
            out[root] = ("absent",)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
            for name in ["", *dirnames, *filenames]:
                path = os.path.join(dirpath, name) if name else dirpath
                if path in skip:
                    continue
                try:
                    st = os.lstat(path)
                    rec: tuple[object, ...] = (
                        st.st_mode,
                        st.st_uid,
                        st.st_gid,
                        st.st_size,
                        st.st_mtime_ns,
                        st.st_ctime_ns,
                        st.st_ino,
                    )
                    if stat.S_ISREG(st.st_mode) and st.st_size <= CONTENT_LIMIT:
                        rec += (hashlib.sha256(Path(path).read_bytes()).hexdigest(),)
                    elif stat.S_ISLNK(st.st_mode):
                        rec += (os.readlink(path),)
                except FileNotFoundError:
                    rec = ("vanished while read",)
                except PermissionError as exc:
                    rec = (f"unreadable: {exc.strerror}",)
                out[path] = rec
    return out


def differences(before: dict[str, tuple[object, ...]], after: dict[str, tuple[object, ...]]) -> list[str]:
    lines = [f"gone: {p}" for p in sorted(before.keys() - after.keys())]
    lines += [f"new: {p}" for p in sorted(after.keys() - before.keys())]
    lines += [f"changed: {p}" for p in sorted(before.keys() & after.keys()) if before[p] != after[p]]
    return lines


def host_namespaces() -> dict[str, str]:
    return {kind: os.readlink(f"/proc/self/ns/{kind}") for kind in ("mnt", "pid", "net", "uts", "ipc")}


# Every script that does something dangerous starts with this guard: it proves, from inside, that it runs in
# an Assay sandbox (pid 1 is the sandbox's init; each namespace differs from the host's, whose ids the test
# passes in; CAP_SYS_BOOT and CAP_SYS_ADMIN are out of the bounding set) and exits 99 *before doing
# anything* otherwise. A launcher bug must never let `kill -9 -1` or `rm -rf /etc` reach this machine.
GUARD = r"""
set -u
guard_fail() { echo "GUARD: $1: refusing to run the dangerous part"; exit 99; }
[ "$$" -ne 1 ] || guard_fail "this shell is pid 1"
tr '\0' ' ' < /proc/1/cmdline | grep -q -- '-m assay.sandbox --config-fd' \
  || guard_fail "pid 1 is not the sandbox init"
for kind in mnt pid net uts ipc; do
  eval host=\$HOST_NS_$kind
  [ "$(readlink /proc/self/ns/$kind)" != "$host" ] || guard_fail "$kind namespace is the host's"
done
bnd=$(awk '/^CapBnd/ {print $2}' /proc/self/status)
[ $(( 0x$bnd & (1 << 22) )) -eq 0 ] || guard_fail "CAP_SYS_BOOT is in the bounding set"
[ $(( 0x$bnd & (1 << 21) )) -eq 0 ] || guard_fail "CAP_SYS_ADMIN is in the bounding set"
[ -n "${ASSAY_SANDBOX:-}" ] || guard_fail "ASSAY_SANDBOX is not set"
echo "GUARD: ok"
"""


def guard_env() -> dict[str, str]:
    return {f"HOST_NS_{kind}": link for kind, link in host_namespaces().items()}
