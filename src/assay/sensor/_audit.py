"""The audit source: the kernel's audit subsystem, with the sensor as the audit daemon.

It is the fallback where the eBPF object cannot load. It gives complete argv (EXECVE records) and the same
syscalls as the eBPF table, and kauditd counts what it could not deliver (``lost``). Costs: ~7 records per
exec, millisecond timestamps, and no exit for a process killed by a signal.

Start: refuse if another live process is the audit daemon (never touch someone else's audit); clean up after
a SIGKILLed predecessor (its state file names a dead pid); write the state file; become the daemon; add the
rules. Stop: remove the rules, put status back, delete the state file. A start after a SIGKILL finds the
state file and does the same.

Entity ids need each process's start time, which audit does not record: it is read from ``/proc`` while the
process lives, else estimated from the fork record's time (flagged ``process.start_estimated``).
"""

from __future__ import annotations

import os
import select
import time
from pathlib import Path
from typing import Any

from assay.errors import SensorError
from assay.events import Action, Event
from assay.sensor import _audit_netlink as N
from assay.sensor import _audit_parse as P
from assay.sensor._actions import join_path, kill_worth_reporting, syscall_fields, target_fields
from assay.sensor._noise import SelfNoise
from assay.sensor._sensitive import DEFAULT_SENSITIVE_PATHS, compile_paths
from assay.sensor._source import Source
from assay.sensor._syscalls import by_number, syscall_table
from assay.sensor._tree import ProcessInfo, ProcessTree, parse_stat

SENSITIVE_KEY = N.RULE_KEY + "-sensitive"
_FORKS = {56: "clone", 57: "fork", 58: "vfork", 435: "clone3"}
_EXECS = (59, 322)
_EXIT_GROUP = 231
_CLONE_THREAD = 0x10000
_INVALID = 4294967295


def build_rules(sensitive_paths: list[str]) -> list[N.AuditRule]:
    """The syscall table as audit rules (open-family calls filtered to write intent in the kernel)."""
    rules = [
        N.AuditRule(syscalls=_EXECS),
        N.AuditRule(syscalls=tuple(_FORKS)),
        N.AuditRule(syscalls=(_EXIT_GROUP,)),
    ]
    plain: list[int] = []
    for sc in syscall_table():
        if sc.nr in _EXECS:
            continue
        if sc.name in ("open", "openat"):
            rules.append(N.AuditRule(syscalls=(sc.nr,), arg_mask=(sc.open_flags, 0o1000 | 0o100 | 0o3)))
        elif sc.match is not None:
            idx, value = sc.match
            rules.append(N.AuditRule(syscalls=(sc.nr,), fields=[(N.AUDIT_A0 + idx, N.AUDIT_EQUAL, value)]))
        else:
            plain.append(sc.nr)
    rules.append(N.AuditRule(syscalls=tuple(plain)))
    for path in sensitive_paths:
        is_dir = path.endswith("/")
        rules.append(
            N.AuditRule(
                watch=path.rstrip("/") or "/", directory=is_dir, perm=N.AUDIT_PERM_READ, key=SENSITIVE_KEY
            )
        )
    return rules


class AuditSource(Source):
    name = "audit"

    def __init__(
        self,
        host: str,
        self_noise: SelfNoise | None = None,
        reason: str = "",
        *,
        sensitive_paths: list[str] | tuple[str, ...] = DEFAULT_SENSITIVE_PATHS,
        backlog_limit: int = 8192,
        rcvbuf: int = 64 << 20,
        wait_for_owner: float = 0.0,
        snapshot: bool = True,
        proc: Path = Path("/proc"),
    ) -> None:
        super().__init__(host, self_noise, reason)
        self.sensitive = compile_paths(sensitive_paths)
        self.backlog_limit = backlog_limit
        self.rcvbuf = rcvbuf
        self.wait_for_owner = wait_for_owner
        self._snapshot = snapshot
        self._proc = proc
        self.tree = ProcessTree()
        self._syscalls = by_number()
        self._sock: N.AuditSocket | None = None
        self._audit_state: N.AuditState | None = None
        self._owner_lock = N.OwnerLock()
        self._asm = P.Assembler()
        self._lost = 0
        self._last_status = 0.0
        self._last_loss_wall = time.time()
        self._boot_wall = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
        self.cleaned_up_after: int | None = None  # pid of a dead predecessor whose rules were removed

    # --- lifecycle --------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Check the audit subsystem can be ours; clean up after a dead predecessor. Takes nothing yet."""
        with self._lock:
            if self._sock is not None:
                return
            if os.geteuid() != 0:
                raise SensorError("the audit source needs root (CAP_AUDIT_CONTROL)")
            sock = N.AuditSocket(self.rcvbuf)
            try:
                self._claimable(sock)
            except BaseException:
                sock.close()
                raise
            self._sock = sock

    def _claimable(self, sock: N.AuditSocket) -> None:
        """Take the Assay-wide audit lock (waiting up to wait_for_owner), clean up after a dead holder, and
        refuse when a foreign audit daemon (auditd) is registered with the kernel."""
        deadline = time.monotonic() + self.wait_for_owner
        while not self._owner_lock.acquire():
            if time.monotonic() >= deadline:
                prior = N.AuditState.load()
                who = f"pid {prior.pid} ({N.process_name(prior.pid)})" if prior else "another Assay process"
                raise SensorError(
                    f"the audit subsystem is in use by {who}: only one audit daemon can exist per host"
                )
            time.sleep(0.2)
        try:
            prior = N.AuditState.load()
            if prior is not None and prior.pid != os.getpid():
                N.restore(sock, prior)  # its holder is gone (we have the lock): undo what it changed
                self.cleaned_up_after = prior.pid
            owner = sock.status()["pid"]
            if owner not in (0, os.getpid()) and N.pid_alive(owner):
                raise SensorError(
                    f"the audit subsystem belongs to pid {owner} ({N.process_name(owner)}): only one audit "
                    "daemon can exist per host, and Assay does not touch another's rules"
                )
        except BaseException:
            self._owner_lock.release()
            raise

    def _start(self) -> None:
        self.prepare()
        sock = self._sock
        assert sock is not None
        st = sock.status()
        prior = N.AuditState.load()
        if prior is not None and prior.pid == os.getpid():
            # an earlier source of this process did not finish its stop: its "before" is the real one
            self._audit_state = prior
        else:
            self._audit_state = N.AuditState(
                pid=os.getpid(),
                enabled=st["enabled"],
                backlog_limit=st["backlog_limit"],
                backlog_wait_time=st["backlog_wait_time"],
                previous_pid=st["pid"],
                started=time.time(),
            )
        # saved before anything changes: from here on, a SIGKILLed run is cleaned up by the next start
        self._audit_state.save()
        sock.delete_rules(N.RULE_KEY)
        # backlog_wait_time=0: a full backlog drops (and counts) instead of blocking the audited processes
        sock.set_status(enabled=1, pid=os.getpid(), backlog_limit=self.backlog_limit, backlog_wait_time=0)
        N.add_rules(sock, build_rules(self.sensitive.paths))
        self._lost = sock.status()["lost"]
        self._last_status = time.monotonic()
        if self._snapshot:
            self.tree.snapshot(self._proc, skip={os.getpid()})

    def _stop(self) -> list[Event]:
        tail: list[Event] = []
        sock, state = self._sock, self._audit_state
        self._sock = None
        self._audit_state = None
        if sock is None:
            return tail
        try:
            if state is not None:
                N.restore(sock, state)
                # what arrived before the rules went, and the lost count up to the moment we let go
                tail = self._drain(sock, time.time(), final=True)
        finally:
            sock.close()
            self._owner_lock.release()
        return tail

    # --- poll -------------------------------------------------------------------------------------------
    def _poll(self, timeout: float) -> list[Event]:
        sock = self._sock
        if sock is None:
            return []
        select.select([sock.fileno()], [], [], timeout)
        return self._drain(sock, time.time())

    def _drain(self, sock: N.AuditSocket, now: float, final: bool = False) -> list[Event]:
        out: list[Event] = []
        bad = 0
        for rtype, text in sock.records():
            if rtype < P.AUDIT_FIRST_USER_MSG or rtype in (P.AUDIT_CONFIG_CHANGE, P.AUDIT_REPLACE):
                continue  # control messages (AUDIT_REPLACE is a binary ping to the daemon), not telemetry
            try:
                rec = P.parse(rtype, text)
            except SensorError:
                bad += 1
                continue
            for group in self._asm.feed(rec):
                out.extend(self._events(group))
        for group in self._asm.expire(float("inf") if final else now):
            out.extend(self._events(group))
        if bad:
            self.counts["decode_errors"] = self.counts.get("decode_errors", 0) + bad
            extra = {"loss.reason": "undecodable audit records", "loss.unit": "records"}
            out.append(self._loss(bad, self._last_loss_wall, now, **extra))
        if final or time.monotonic() - self._last_status > 0.25:
            self._last_status = time.monotonic()
            lost = sock.status()["lost"]
            if lost > self._lost:
                # kauditd counts records, not events (an exec is ~7 records): the unit says so
                extra = {"loss.reason": "kauditd lost records", "loss.unit": "records"}
                out.append(self._loss(lost - self._lost, self._last_loss_wall, now, **extra))
            self._last_loss_wall = now
            self._lost = lost
        return out

    # --- records → events -------------------------------------------------------------------------------
    def _events(self, group: list[P.Record]) -> list[Event]:
        sysrec = next((r for r in group if r.type == P.AUDIT_SYSCALL), None)
        if sysrec is None:
            return []
        nr = sysrec.int("syscall")
        pid = sysrec.int("pid")
        if nr is None or pid is None:
            return []
        info = self._process(pid, sysrec.int("ppid"), sysrec.timestamp)
        info.uid, info.euid, info.gid = sysrec.int("uid"), sysrec.int("euid"), sysrec.int("gid")
        cwd = next((r.text("cwd") for r in group if r.type == P.AUDIT_CWD), None)
        success = sysrec.fields.get("success") != "no"
        ret = sysrec.int("exit") or 0
        if nr in _EXECS:
            return [self._exec(group, sysrec, info, cwd, success, ret)]
        if nr in _FORKS:
            child = self._fork(sysrec, nr, info, success, ret)
            return [self._event(sysrec, Action.FORK, child)] if child is not None else []
        if nr == _EXIT_GROUP:
            ev = self._event(sysrec, Action.EXIT, info)
            ev.fields["process.exit_code"] = (sysrec.int("a0", 16) or 0) & 0xFF
            self.tree.exit(info)
            return [ev]
        return self._syscall(group, sysrec, nr, info, cwd, success, ret)

    def _process(self, pid: int, ppid: int | None, ts: float) -> ProcessInfo:
        info = self.tree.by_pid(pid)
        if info is not None and not info.exited:
            return info
        start, real_ppid = self._start_of(pid)
        parent = self.tree.by_pid(ppid) if ppid else None
        estimated = start is None
        if start is None:
            # Gone before we looked (or seen before its parent's fork record, which audit writes when the
            # parent's clone returns, possibly after the child already ran): estimate from this record.
            start = self._ticks(ts)
        info = self.tree.ensure(
            pid, start, real_ppid or ppid, parent.start if parent else None, proc=self._proc
        )
        info.start_estimated = estimated
        return info

    def _start_of(self, pid: int) -> tuple[int | None, int | None]:
        """(start ticks, ppid) from /proc, or (None, None) when the process is gone."""
        try:
            _, ppid, start = parse_stat((self._proc / str(pid) / "stat").read_text())
        except (OSError, ValueError, IndexError):
            return None, None
        return start, ppid

    def _ticks(self, wall: float) -> int:
        return int((wall - self._boot_wall) * 100)

    def _event(self, sysrec: P.Record, action: str, info: ProcessInfo) -> Event:
        f = self.tree.fields(info)
        f["@timestamp"] = sysrec.timestamp
        f["event.action"] = str(action)
        f["event.source"] = self.name
        f["host.name"] = self.host
        uid = sysrec.int("uid")
        if uid is not None:
            f["user.id"] = uid
            name = self.tree.user_name(uid)
            if name is not None:
                f["user.name"] = name
        for key, field in (("euid", "user.effective.id"), ("gid", "group.id"), ("auid", "user.audit.id")):
            v = sysrec.int(key)
            if v is not None and v != _INVALID:
                f[field] = v
        f["audit.serial"] = sysrec.serial
        if info.start_estimated:
            f["process.start_estimated"] = True
        return Event(f)

    def _exec(
        self,
        group: list[P.Record],
        sysrec: P.Record,
        info: ProcessInfo,
        cwd: str | None,
        success: bool,
        ret: int,
    ) -> Event:
        execve = P.merge(r for r in group if r.type == P.AUDIT_EXECVE)  # long argv spans several records
        args = P.execve_args(execve) if execve is not None else []
        paths = _paths(group)
        if success:
            self.tree.exec(info, sysrec.text("exe"), args, cwd)
            ev = self._event(sysrec, Action.EXEC, info)
            filename = paths[0][0] if paths else None
            if filename and filename != info.executable:
                ev.fields["process.exec_filename"] = filename
            return ev
        ev = self._event(sysrec, Action.EXEC_FAILED, info)
        ev.fields["event.outcome"] = "failure"
        ev.fields["event.code"] = -ret
        if paths:
            ev.fields["file.path"] = join_path(cwd, paths[0][0])
        if execve is not None:
            ev.fields["exec.args"] = args
        return ev

    def _fork(
        self, sysrec: P.Record, nr: int, parent: ProcessInfo, success: bool, ret: int
    ) -> ProcessInfo | None:
        if not success or ret <= 0:
            return None
        if nr == 56 and (sysrec.int("a0", 16) or 0) & _CLONE_THREAD:
            return None  # a thread of the same process
        if nr == 435 and _is_thread(self._proc, ret):
            return None
        early = self.tree.by_pid(ret)
        if (
            early is not None
            and early.ppid == parent.pid
            and abs(early.start - self._ticks(sysrec.timestamp)) <= 100
        ):
            return early  # the child's own records came first and named it: keep that identity
        start, _ = self._start_of(ret)
        estimated = start is None
        if start is None:
            start = self._ticks(sysrec.timestamp)  # the child is gone already: its fork time, to 10 ms
        child = self.tree.fork(ret, start, parent.pid, parent.start)
        child.start_estimated = estimated
        return child

    def _syscall(
        self,
        group: list[P.Record],
        sysrec: P.Record,
        nr: int,
        info: ProcessInfo,
        cwd: str | None,
        success: bool,
        ret: int,
    ) -> list[Event]:
        sc = self._syscalls.get(nr)
        if sc is None:
            return []
        args = (*(sysrec.int(f"a{i}", 16) or 0 for i in range(4)), 0, 0)  # audit logs a0..a3 only
        action: str = sc.action.value
        if sysrec.text("key") == SENSITIVE_KEY:
            if sc.name not in ("open", "openat", "openat2"):
                return []
            action = Action.FILE_READ_SENSITIVE.value
        if action == Action.KILL and not kill_worth_reporting(sc, args, info.pid, info.pid):
            return []
        paths = _paths(group)
        strs: list[str | None] = [None] * 6
        if action == Action.FILE_RENAME:
            old = next((n for n, t in paths if t == "DELETE"), None)
            new = next((n for n, t in paths if t == "CREATE"), None)
            strs[0] = join_path(cwd, old) if old else None
            strs[1] = join_path(cwd, new) if new else None
        elif paths:
            strs[0] = join_path(cwd, paths[0][0])
            if len(paths) > 1:
                strs[1] = join_path(cwd, paths[1][0])
        blob = b""
        sa = next((r for r in group if r.type == P.AUDIT_SOCKADDR), None)
        if sa is not None and sa.fields.get("saddr"):
            try:
                blob = bytes.fromhex(sa.fields["saddr"])
            except ValueError:
                blob = b""
        ev = self._event(sysrec, action, info)
        f = ev.fields
        f["event.outcome"] = "success" if success else "failure"
        if not success:
            f["event.code"] = -ret
        f["syscall.name"] = sc.name
        if sc.fd_path < 6:
            strs[5] = strs[0]  # audit names the file itself where eBPF resolves the fd
        syscall_fields(sc, action, f, args, strs, blob, ret, 0)
        target_fields(action, f, self.tree.by_pid)
        if action == Action.ACCEPT and blob:
            # the SOCKADDR of accept is the peer, which connected in: the source
            from assay.sensor._net import parse_sockaddr

            _, ip, port = parse_sockaddr(blob)
            f.pop("destination.ip", None)
            f.pop("destination.port", None)
            if ip is not None:
                f["source.ip"] = ip
            if port is not None:
                f["source.port"] = port
        return [ev]

    def _extra_stats(self) -> dict[str, Any]:
        return {
            "tree_size": len(self.tree),
            "pending_groups": self._asm.pending(),
            "audit_lost": self._lost,
            "overruns": self._sock.overruns if self._sock is not None else 0,
        }


def _paths(group: list[P.Record]) -> list[tuple[str, str]]:
    """(name, nametype) of the PATH records that name the object itself (not its parent directory)."""
    out = []
    for r in group:
        if r.type == P.AUDIT_PATH and r.fields.get("nametype") != "PARENT":
            name = r.text("name")
            if name:
                out.append((name, r.fields.get("nametype", "")))
    return out


def _is_thread(proc: Path, tid: int) -> bool:
    try:
        for line in (proc / str(tid) / "status").read_text().splitlines():
            if line.startswith("Tgid:"):
                return int(line.split()[1]) != tid
    except (OSError, ValueError, IndexError):
        return False  # gone: a process that lived briefly (threads rarely do)
    return False
