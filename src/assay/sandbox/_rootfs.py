"""Build the sandbox's root file system inside a fresh mount namespace, then ``pivot_root`` into it.

Why each piece is the way it is:

- **One overlay over ``/``, plus one per real submount.** ``lowerdir=/`` gives the sandbox the host's file
  tree under the host's own paths (``/etc/passwd``, not ``/some/prefix/etc/passwd``), so Sigma rules match
  what runs inside exactly as they would on the host. Overlayfs reads the lower *file system*, not the
  mounts on top of it, so every other host mount with files in it (``/home`` on its own disk, a tmpfs
  ``/tmp``) gets an overlay of its own. Pseudo file systems (``/proc``, ``/sys``, ``/dev``, cgroups, ...)
  are not overlaid: the sandbox mounts fresh, restricted ones. This also works when ``/`` is itself an
  overlay (a container's root): overlayfs accepts an overlay as a *lower* layer; only the upper layer must
  not be overlayfs, and it never is (see next point). Measured on this project's VM (``/`` is ext4 on
  ``/dev/vda``): works.
- **Every upper layer lives in one tmpfs** mounted inside the sandbox's mount namespace on a directory the
  launcher created (``<state>/fs``). The host never sees that tmpfs: every write made inside (``rm -rf
  /etc``, new users, crontabs) exists only in kernel memory of this namespace and is gone when its last
  process exits. No host directory is bound writable.
- **``/dev`` is a new tmpfs** with the character devices a shell needs (null, zero, full, random, urandom,
  tty), a private devpts instance and a ``/dev/shm`` tmpfs: no disk, no ``/dev/mem``, no ``/dev/kmsg``.
- **``/proc``** is a new proc of the sandbox's pid namespace (only its own processes), with ``/proc/sys``
  bound read-only and ``/proc/sysrq-trigger`` hidden under ``/dev/null``. **``/sys``** is a new read-only
  sysfs (of the new network namespace). **``/run``** is an empty tmpfs: no host systemd, D-Bus or sockets,
  except the one read-only-bound unix socket that leads to the server.
- **pivot_root, then detach the old root**: nothing of the host's mount tree stays reachable (a ``chroot``
  would leave it one ``..`` escape away for a process with CAP_SYS_CHROOT).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from assay.sandbox import _syscalls as sc

# Pseudo and virtual file systems: never overlaid (the sandbox mounts its own proc/sys/dev/run, and the
# rest — cgroups, tracefs, bpffs, debugfs — stay out of reach on purpose).
PSEUDO_FS = frozenset(
    {
        "proc",
        "sysfs",
        "devtmpfs",
        "devpts",
        "cgroup",
        "cgroup2",
        "mqueue",
        "securityfs",
        "debugfs",
        "tracefs",
        "bpf",
        "pstore",
        "configfs",
        "fusectl",
        "hugetlbfs",
        "binfmt_misc",
        "autofs",
        "efivarfs",
        "nsfs",
        "rpc_pipefs",
        "nfsd",
        "ramfs",
        "squashfs",  # snaps: read-only already, and usually under /snap, which the root overlay shows empty
    }
)
# Host trees the sandbox replaces with its own; mounts below them are never overlaid.
REPLACED = ("/proc", "/sys", "/dev", "/run")
# tmpfs mounts worth overlaying (they hold files a procedure may read); any other tmpfs (a host tool's
# private mount, systemd credentials) stays out.
TMPFS_OVERLAID = ("/tmp", "/var/tmp")

SERVER_SOCKET = "/run/assay/server.sock"  # where the server's unix socket appears inside

CHAR_DEVICES = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
)


@dataclass(frozen=True)
class HostMount:
    target: str
    fstype: str


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 1 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[HostMount]:
    """The mount points and file system types of ``/proc/self/mountinfo``, in mount order."""
    mounts: list[HostMount] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        if len(fields) < 5:
            continue
        mounts.append(HostMount(_unescape(fields[4]), right.split()[0]))
    return mounts


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def overlaid_submounts(mounts: list[HostMount], state_dir: str) -> list[str]:
    """The host mount points (other than ``/``) that get an overlay of their own, parents before children."""
    chosen: list[str] = []
    for m in mounts:
        t = m.target
        if t == "/" or any(_under(t, p) for p in REPLACED) or _under(t, state_dir):
            continue
        if m.fstype in PSEUDO_FS or m.fstype.startswith("fuse"):
            continue
        if m.fstype == "tmpfs" and t not in TMPFS_OVERLAID:
            continue
        if t not in chosen:
            chosen.append(t)
    return sorted(chosen, key=lambda p: p.count("/"))


def _overlay(lower: str, target: Path, scratch: Path, n: int) -> None:
    upper, work = scratch / f"upper{n}", scratch / f"work{n}"
    upper.mkdir()
    work.mkdir()
    sc.mount("overlay", str(target), "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work}")


def _make_dev(root: Path) -> None:
    dev = root / "dev"
    sc.mount("tmpfs", str(dev), "tmpfs", sc.MS_NOSUID | sc.MS_NOEXEC, "mode=0755,size=64k")
    for name, major, minor in CHAR_DEVICES:
        path = dev / name
        os.mknod(path, 0o020666, os.makedev(major, minor))
        path.chmod(0o666)  # mknod's mode passes through the umask
    (dev / "pts").mkdir()
    sc.mount(
        "devpts",
        str(dev / "pts"),
        "devpts",
        sc.MS_NOSUID | sc.MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=620",
    )
    (dev / "ptmx").symlink_to("pts/ptmx")
    (dev / "shm").mkdir()
    sc.mount("tmpfs", str(dev / "shm"), "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=1777")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):  # fmt: skip
        (dev / name).symlink_to(target)


def _bind_readonly(source: str, target: Path) -> None:
    # A read-only bind takes two calls: the bind, then a remount of that bind with MS_RDONLY.
    sc.mount(source, str(target), None, sc.MS_BIND)
    sc.mount(None, str(target), None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV)


def _make_proc_sys_run(root: Path, server_socket: str | None) -> None:
    proc = root / "proc"
    sc.mount("proc", str(proc), "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    _bind_readonly(str(proc / "sys"), proc / "sys")
    for hidden in (
        "sysrq-trigger",
        "kcore",
        "kmsg",
    ):  # where the kernel has them (no CONFIG_MAGIC_SYSRQ here)
        if (proc / hidden).exists():
            _bind_readonly(str(root / "dev/null"), proc / hidden)
    ro = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
    sc.mount("sysfs", str(root / "sys"), "sysfs", ro)
    run = root / "run"
    sc.mount("tmpfs", str(run), "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "mode=0755")
    (run / "lock").mkdir(mode=0o1777)
    if server_socket:
        inside = root / SERVER_SOCKET.lstrip("/")
        inside.parent.mkdir(mode=0o700)
        inside.touch(mode=0o600)
        _bind_readonly(server_socket, inside)


def build_and_enter(state_dir: Path, server_socket: str | None) -> None:
    """Mount the sandbox's root under ``<state_dir>/fs`` and make it this process's ``/``.

    Must run in a new mount namespace *and* as the init of the new pid namespace (the proc it mounts shows
    the caller's pid namespace).
    """
    # Private first: no mount made below may propagate back to the host's namespace.
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    mounts = parse_mountinfo(Path("/proc/self/mountinfo").read_text(encoding="utf-8"))
    base = state_dir / "fs"
    sc.mount("tmpfs", str(base), "tmpfs", 0, "mode=0700,size=25%")
    root, scratch = base / "root", base / "layers"
    root.mkdir()
    scratch.mkdir()
    _overlay("/", root, scratch, 0)
    for n, target in enumerate(overlaid_submounts(mounts, str(state_dir)), start=1):
        inside = root / target.lstrip("/")
        if inside.is_dir():
            _overlay(target, inside, scratch, n)
    _make_dev(root)
    _make_proc_sys_run(root, server_socket)
    # pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves only the new root
    # (the man page's recipe: no put_old directory needed inside the new root).
    os.chdir(root)
    sc.pivot_root(".", ".")
    sc.umount2(".", sc.MNT_DETACH)
    os.chdir("/")
