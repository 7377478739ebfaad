"""The process tree: who is whose parent, *as recorded at fork time*, and what each process is running.

Every source feeds it fork, exec and exit, and asks it to enrich each event with the process's executable,
argv, cwd and user, its parent's, and its ancestry (entity ids, nearest first). The parent is the one seen at
fork time, so a daemonised child (re-parented to init or a subreaper) keeps its real lineage, which is what
attribution of a detection to the command that caused it depends on.

Processes older than the sensor come from a ``/proc`` snapshot taken at start; for them the parent is the
current one (the fork is history), which is the best anyone can know.

Exited processes stay for a grace period so that events still queued for them, and their children, are
enriched; then they are forgotten, so the tree's size follows the live process count.
"""

from __future__ import annotations

import os
import pwd
import re
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from assay.events import entity_id

_new = object.__new__
_CONTAINER_ID = re.compile(r"(?:^|[-/:_.])([0-9a-f]{64})(?:\.scope)?(?:$|/)")


def container_id_from_cgroup(text: str) -> str | None:
    """A container id from a cgroup path or name (docker, containerd, CRI-O, podman all use 64 hex digits)."""
    m = _CONTAINER_ID.search(text)
    return m.group(1) if m else None


class ProcessInfo:
    """One process (one entity id). A plain slotted class: the sensor creates one per fork, in storms too."""

    __slots__ = (
        "ancestry",
        "args",
        "args_from_proc",
        "args_truncated",
        "cache",
        "cache_brood",
        "cache_key",
        "cache_origin",
        "cache_parent_version",
        "cache_version",
        "children_ancestry",
        "command_line",
        "container_id",
        "cwd",
        "entity_id",
        "euid",
        "executable",
        "exited",
        "gid",
        "name",
        "parent",
        "parent_entity_id",
        "pid",
        "ppid",
        "start",
        "start_estimated",
        "uid",
        "version",
    )

    def __init__(
        self,
        pid: int,
        start: int,
        entity_id: str,
        ppid: int | None = None,
        parent_entity_id: str | None = None,
        parent: ProcessInfo | None = None,
        name: str | None = None,
    ) -> None:
        self.pid = pid
        self.start = start  # clock ticks since boot, as /proc/PID/stat field 22
        self.start_estimated = False  # a source without start times had to guess it (audit)
        self.entity_id = entity_id
        self.ppid = ppid
        self.parent_entity_id = parent_entity_id
        self.parent = parent  # the node at fork time, when known
        self.ancestry: tuple[str, ...] = ()  # set when the node is created, never changed after
        self.children_ancestry: tuple[str, ...] | None = None  # (entity_id, *ancestry), shared by children
        self.executable: str | None = None
        self.name = name
        self.args: list[str] | None = None
        self.command_line: str | None = None
        self.cwd: str | None = None
        self.uid: int | None = None
        self.euid: int | None = None
        self.gid: int | None = None
        self.args_from_proc = False
        self.args_truncated = False
        self.container_id: str | None = None
        self.exited = False
        self.version = 0  # bumped on exec: whatever was built from this process's fields is stale
        # a source's cached event context (see Decoder._base), and what it was built from
        self.cache: dict[str, Any] | None = None
        self.cache_key: bytes = b""
        self.cache_version = -1
        self.cache_parent_version = -1
        self.cache_brood: Any = None  # what the source derived from `cache` for this process's children
        self.cache_origin: Any = None  # the parent's `cache_brood` that `cache` was derived from

    @classmethod
    def forked(cls, pid: int, start: int, entity_id: str, parent: ProcessInfo) -> ProcessInfo:
        """A child of ``parent``, with its image, argv, cwd, user and container until it execs.

        The same as ``__init__`` followed by copying from the parent, with every slot stored once: process
        storms create one per fork, and the stores are most of the cost (a test checks every slot is set).
        """
        info = _new(cls)
        info.pid = pid
        info.start = start
        info.start_estimated = False
        info.entity_id = entity_id
        info.ppid = parent.pid
        info.parent_entity_id = parent.entity_id
        info.parent = parent
        info.ancestry = parent.child_ancestry()
        info.children_ancestry = None
        info.executable = parent.executable
        info.name = parent.name
        info.args = parent.args
        info.command_line = parent.command_line
        info.cwd = parent.cwd
        info.uid = parent.uid
        info.euid = parent.euid
        info.gid = parent.gid
        info.args_from_proc = parent.args_from_proc
        info.args_truncated = parent.args_truncated
        info.container_id = parent.container_id
        info.exited = False
        info.version = 0
        info.cache = None
        info.cache_key = b""
        info.cache_version = -1
        info.cache_parent_version = -1
        info.cache_brood = None
        info.cache_origin = None
        return info

    def child_ancestry(self) -> tuple[str, ...]:
        """The ancestry of this process's children (one tuple, shared by all of them)."""
        ancestry = self.children_ancestry
        if ancestry is None:
            ancestry = self.children_ancestry = (self.entity_id, *self.ancestry)
        return ancestry

    def __repr__(self) -> str:
        return f"ProcessInfo({self.entity_id}, {self.executable!r}, parent={self.parent_entity_id})"


class ProcessTree:
    """Process identity and lineage for one host. Not thread-safe: one source thread owns it."""

    def __init__(self, keep_exited: int = 8192) -> None:
        self._by_entity: dict[str, ProcessInfo] = {}
        self._by_pid: dict[int, ProcessInfo] = {}
        self._exited: deque[str] = deque()
        self._keep_exited = keep_exited
        self._users: dict[int, str | None] = {}

    def __len__(self) -> int:
        return len(self._by_entity)

    def get(self, eid: str) -> ProcessInfo | None:
        return self._by_entity.get(eid)

    def by_pid(self, pid: int) -> ProcessInfo | None:
        return self._by_pid.get(pid)

    def pid_lookup(self) -> Callable[[int], ProcessInfo | None]:
        """``by_pid`` without the method call, for a decoder's hot path (the index is never replaced)."""
        return self._by_pid.get

    # --- feeding ----------------------------------------------------------------------------------------
    def add(self, info: ProcessInfo) -> ProcessInfo:
        old = self._by_entity.get(info.entity_id)
        if old is not None:
            return old
        self._by_entity[info.entity_id] = info
        self._by_pid[info.pid] = info
        return info

    def fork(
        self, pid: int, start: int, ppid: int, pstart: int, parent: ProcessInfo | None = None
    ) -> ProcessInfo:
        """A new process: it inherits its parent's image, argv, cwd and user until it execs.

        ``parent``: the node of ``ppid:pstart`` when the caller already has it (the forking process, in the
        common case), which saves building and looking up its entity id.
        """
        eid = f"{pid}:{start}"
        known = self._by_entity.get(eid)
        if known is not None:
            return known  # the /proc snapshot got there first
        if parent is None:
            peid = f"{ppid}:{pstart}"
            parent = self._by_entity.get(peid)
            if parent is None:
                info = ProcessInfo(pid, start, eid, ppid, peid)
                info.ancestry = (peid,)
                self._by_entity[eid] = info
                self._by_pid[pid] = info
                return info
        info = ProcessInfo.forked(pid, start, eid, parent)
        self._by_entity[eid] = info
        self._by_pid[pid] = info
        return info

    def exec(
        self,
        info: ProcessInfo,
        executable: str | None,
        args: list[str],
        cwd: str | None,
        *,
        truncated: bool = False,
        from_proc: bool = False,
        command_line: str | None = None,
    ) -> None:
        """``command_line``: ``" ".join(args)`` when the caller already has it."""
        info.executable = executable
        info.name = executable.rpartition("/")[2] if executable else info.name
        info.args = args
        info.command_line = " ".join(args) if command_line is None else command_line
        if cwd:
            info.cwd = cwd
        info.args_truncated = truncated
        info.args_from_proc = from_proc
        info.version += 1

    def exit(self, info: ProcessInfo) -> None:
        if info.exited:
            return
        info.exited = True
        exited = self._exited
        exited.append(info.entity_id)
        if len(exited) > self._keep_exited:
            self._forget()

    def _forget(self) -> None:
        """Drop the oldest exited processes past ``keep_exited``."""
        exited = self._exited
        while len(exited) > self._keep_exited:
            gone = self._by_entity.pop(exited.popleft(), None)
            if gone is not None and self._by_pid.get(gone.pid) is gone:
                del self._by_pid[gone.pid]

    def ensure(
        self,
        pid: int,
        start: int,
        ppid: int | None,
        pstart: int | None,
        comm: str | None = None,
        proc: Path | None = Path("/proc"),
    ) -> ProcessInfo:
        """The process with this identity; a process first seen mid-life is read from /proc if still there."""
        eid = entity_id(pid, start)
        info = self._by_entity.get(eid)
        if info is not None:
            return info
        info = None
        if proc is not None:
            info = read_proc_process(proc, pid)
            if info is not None and info.start != start:
                info = None  # the pid was reused: /proc shows somebody else
        if info is None:
            info = ProcessInfo(pid, start, eid, name=comm)
        if ppid is not None and pstart is not None:
            info.ppid = ppid
            info.parent_entity_id = entity_id(ppid, pstart)
        parent = self._by_entity.get(info.parent_entity_id) if info.parent_entity_id else None
        info.parent = parent
        if parent is not None:
            info.ancestry = (parent.entity_id, *parent.ancestry)
        elif info.parent_entity_id:
            info.ancestry = (info.parent_entity_id,)
        return self.add(info)

    def snapshot(self, proc: Path = Path("/proc"), skip: Iterable[int] = ()) -> int:
        """Seed the tree with every live process; ancestry follows the current parents. Returns the count."""
        skipped = set(skip)
        found: list[ProcessInfo] = []
        for entry in os.scandir(proc):
            if not entry.name.isdigit() or int(entry.name) in skipped:
                continue
            info = read_proc_process(proc, int(entry.name))
            if info is not None:
                found.append(info)
        by_pid = {i.pid: i for i in found}
        for info in found:
            parent = by_pid.get(info.ppid) if info.ppid else None
            if parent is not None:
                info.parent_entity_id = parent.entity_id
                info.parent = parent
        for info in found:
            chain: list[str] = []
            seen = {info.pid}
            cur = by_pid.get(info.ppid) if info.ppid else None
            while cur is not None and cur.pid not in seen and len(chain) < 256:
                chain.append(cur.entity_id)
                seen.add(cur.pid)
                cur = by_pid.get(cur.ppid) if cur.ppid else None
            info.ancestry = tuple(chain)
            self.add(info)
        return len(found)

    # --- enrichment -------------------------------------------------------------------------------------
    def user_name(self, uid: int) -> str | None:
        if uid not in self._users:
            try:
                self._users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self._users[uid] = None
        return self._users[uid]

    def fields(self, info: ProcessInfo) -> dict[str, Any]:
        """A new dict of the ``process.*`` and ``process.parent.*`` fields of this process's events."""
        parent = info.parent
        f: dict[str, Any] = {
            "process.pid": info.pid,
            "process.entity_id": info.entity_id,
            "process.start": info.start,
            "process.ancestry": list(info.ancestry),
        }
        if info.executable:
            f["process.executable"] = info.executable
        if info.name:
            f["process.name"] = info.name
        if info.args is not None:
            f["process.args"] = info.args
            f["process.args_count"] = len(info.args)
            f["process.command_line"] = info.command_line
            if info.args_truncated:
                f["process.args_truncated"] = True
        if info.args_from_proc:
            f["process.args_from_proc"] = True
        if info.cwd:
            f["process.working_directory"] = info.cwd
        if info.container_id:
            f["container.id"] = info.container_id
        if info.ppid is not None:
            f["process.parent.pid"] = info.ppid
        if info.parent_entity_id:
            f["process.parent.entity_id"] = info.parent_entity_id
        if parent is not None:
            if parent.executable:
                f["process.parent.executable"] = parent.executable
            if parent.name:
                f["process.parent.name"] = parent.name
            if parent.args is not None:
                f["process.parent.args"] = parent.args
                f["process.parent.command_line"] = parent.command_line
        return f


# (the child's parent field, the parent's own field) for the image a forked child's parent runs
_PARENT_IMAGE = tuple(
    (f"process.parent.{k}", f"process.{k}") for k in ("executable", "name", "args", "command_line")
)


def fork_template(parent_ctx: dict[str, Any], parent: ProcessInfo, ancestry: list[str]) -> dict[str, Any]:
    """The event context of ``parent``'s children (same image, same user), still with the parent's own pid,
    entity id and start: :func:`fork_fields` sets those per child. ``ancestry``: the children's, as a list."""
    f = parent_ctx.copy()
    f["process.ancestry"] = ancestry
    f["process.parent.pid"] = parent.pid
    f["process.parent.entity_id"] = parent.entity_id
    get = parent_ctx.get
    for child_key, parent_key in _PARENT_IMAGE:
        v = get(parent_key)
        if v is None:
            f.pop(child_key, None)
        else:
            f[child_key] = v
    return f


def fork_fields(parent_ctx: dict[str, Any], child: ProcessInfo, parent: ProcessInfo) -> dict[str, Any]:
    """A forked child's event context from its parent's (same image, same user): identity and parent swapped.

    Equal to what a full build gives (a test checks it); it exists because a copy and ten stores cost a third
    of a rebuild, and process storms are mostly forks and execs.
    """
    f = fork_template(parent_ctx, parent, list(child.ancestry))
    f["process.pid"] = child.pid
    f["process.entity_id"] = child.entity_id
    f["process.start"] = child.start
    return f


def exec_fields(ctx: dict[str, Any], info: ProcessInfo) -> dict[str, Any]:
    """A process's event context after exec, from the one before: only its own image fields change."""
    f = ctx.copy()
    for key, value in (("process.executable", info.executable), ("process.name", info.name)):
        if value:
            f[key] = value
        else:
            f.pop(key, None)
    args = info.args or []
    f["process.args"] = args
    f["process.args_count"] = len(args)
    f["process.command_line"] = info.command_line
    if info.cwd:
        f["process.working_directory"] = info.cwd
    for key, on in (
        ("process.args_truncated", info.args_truncated),
        ("process.args_from_proc", info.args_from_proc),
    ):
        if on:
            f[key] = True
        else:
            f.pop(key, None)
    if info.container_id:
        f["container.id"] = info.container_id
    return f


def _read(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _readlink(path: Path) -> str | None:
    try:
        return str(path.readlink())
    except OSError:
        return None


def parse_stat(text: str) -> tuple[str, int, int]:
    """(comm, ppid, start ticks) from /proc/PID/stat; comm may contain spaces and parentheses."""
    head, _, rest = text.rpartition(")")
    comm = head.partition("(")[2]
    fields = rest.split()
    # rest starts at field 3 (state): ppid is field 4, starttime field 22
    return comm, int(fields[1]), int(fields[19])


def read_proc_process(proc: Path, pid: int) -> ProcessInfo | None:
    """One process from /proc, or None when it is gone (or is a kernel thread without a command line)."""
    base = proc / str(pid)
    stat = _read(base / "stat")
    if stat is None:
        return None
    try:
        comm, ppid, start = parse_stat(stat.decode("utf-8", "replace"))
    except (IndexError, ValueError):
        return None
    info = ProcessInfo(pid=pid, start=start, entity_id=entity_id(pid, start), ppid=ppid or None, name=comm)
    cmdline = _read(base / "cmdline")
    if cmdline:
        parts = cmdline.split(b"\0")
        if parts and parts[-1] == b"":
            parts.pop()
        info.args = [p.decode("utf-8", "backslashreplace") for p in parts]
        info.command_line = " ".join(info.args)
        info.args_from_proc = True
    exe = _readlink(base / "exe")
    if exe:
        info.executable = exe.removesuffix(" (deleted)")
        info.name = info.executable.rpartition("/")[2]
    info.cwd = _readlink(base / "cwd")
    status = _read(base / "status")
    if status:
        for line in status.decode("utf-8", "replace").splitlines():
            if line.startswith("Uid:"):
                ids = line.split()
                info.uid, info.euid = int(ids[1]), int(ids[2])
            elif line.startswith("Gid:"):
                info.gid = int(line.split()[1])
    cg = _read(base / "cgroup")
    if cg:
        info.container_id = container_id_from_cgroup(cg.decode("utf-8", "replace"))
    return info
