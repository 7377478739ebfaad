"""The authlog source: ssh, sudo and su successes and failures from ``/var/log/auth.log`` or journald.

No kernel hook sees *why* a login happened; the daemons' own log lines do. Lines are parsed by a sans-I/O
function (:func:`parse_line`); the source follows the file like ``tail -F`` (from its end, across rotation),
or reads ``journalctl -f -o json`` where the file does not exist.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from assay.errors import SensorError
from assay.events import Action, Event
from assay.sensor._noise import SelfNoise
from assay.sensor._source import Source

_PREFIX_RFC = re.compile(
    r"^(\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-]\d\d:?\d\d))\s+(\S+)\s+([\w.\-/]+)(?:\[(\d+)\])?:\s?(.*)$"
)
_PREFIX_BSD = re.compile(r"^([A-Z][a-z]{2}\s+\d+\s[\d:]{8})\s+(\S+)\s+([\w.\-/]+)(?:\[(\d+)\])?:\s?(.*)$")
_SSH_OK = re.compile(r"^Accepted (\S+) for (\S+) from (\S+) port (\d+)")
_SSH_FAIL = re.compile(r"^Failed (\S+) for (?:invalid user )?(\S+) from (\S+) port (\d+)")
_SSH_INVALID = re.compile(r"^Invalid user (\S*) from (\S+) port (\d+)")
_SUDO_CMD = re.compile(
    r"^\s*(\S+) : (?:(\d+) incorrect password attempts? ; )?(?:.*?; )?USER=(\S+) ; COMMAND=(.*)$"
)
_PAM_FAIL = re.compile(r"pam_unix\((\w+)(?:-\w+)?:auth\): authentication failure;.*?(?:\buser=(\S+))?$")
_SU_OPEN = re.compile(
    r"pam_unix\(su(?:-l)?:session\): session opened for user (\S+?)(?:\(uid=\d+\))?"
    r" by (\S*?)(?:\(uid=\d+\))?$"
)
_SU_FAIL = re.compile(r"^FAILED SU \(to (\S+)\) (\S+) on")


def parse_line(line: str, year: int | None = None) -> dict[str, Any] | None:
    """Event fields for one auth log line, or None when the line is not a login, sudo or su outcome."""
    line = line.rstrip("\n")
    m = _PREFIX_RFC.match(line) or _PREFIX_BSD.match(line)
    if m is None:
        return None
    stamp, host, prog, pid, msg = m.groups()
    return parse_message(
        prog.rsplit("/", 1)[-1], msg, _timestamp(stamp, year), host, int(pid) if pid else None, line
    )


def parse_message(
    prog: str, msg: str, ts: float, host: str | None, pid: int | None, raw: str
) -> dict[str, Any] | None:
    f: dict[str, Any] = {"@timestamp": ts, "message": raw, "process.name": prog}
    if host:
        f["host.name"] = host
    if pid is not None:
        f["process.pid"] = pid
    if prog == "sshd":
        if m := _SSH_OK.match(msg):
            return _login(
                f, Action.LOGIN_SUCCESS, "sshd", m.group(1), m.group(2), m.group(3), int(m.group(4))
            )
        if m := _SSH_FAIL.match(msg):
            return _login(
                f, Action.LOGIN_FAILURE, "sshd", m.group(1), m.group(2), m.group(3), int(m.group(4))
            )
        if m := _SSH_INVALID.match(msg):
            return _login(f, Action.LOGIN_FAILURE, "sshd", "none", m.group(1), m.group(2), int(m.group(3)))
        return None
    if prog == "sudo":
        if m := _SUDO_CMD.match(msg):
            user, failures, target, command = m.groups()
            f.update(
                {
                    "event.action": Action.SUDO.value,
                    "auth.service": "sudo",
                    "user.name": user,
                    "user.target.name": target,
                    "process.command_line": command,
                    "event.outcome": "failure" if failures else "success",
                }
            )
            return f
        if m := _PAM_FAIL.search(msg):
            return _login(f, Action.LOGIN_FAILURE, m.group(1), "password", m.group(2), None, None)
        return None
    if prog in ("su", "su-l"):
        if m := _SU_OPEN.search(msg):
            f.update({"user.target.name": m.group(1)})
            return _login(f, Action.LOGIN_SUCCESS, "su", "password", m.group(2) or None, None, None)
        if m := _SU_FAIL.match(msg):
            f.update({"user.target.name": m.group(1)})
            return _login(f, Action.LOGIN_FAILURE, "su", "password", m.group(2), None, None)
    return None


def _login(
    f: dict[str, Any],
    action: Action,
    service: str,
    method: str,
    user: str | None,
    ip: str | None,
    port: int | None,
) -> dict[str, Any]:
    f["event.action"] = action.value
    f["event.outcome"] = "success" if action == Action.LOGIN_SUCCESS else "failure"
    f["auth.service"] = service
    f["auth.method"] = method
    if user:
        f["user.name"] = user
    if ip:
        f["source.ip"] = ip
    if port is not None:
        f["source.port"] = port
    return f


def _timestamp(stamp: str, year: int | None) -> float:
    if stamp[:4].isdigit():
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    # traditional syslog: no year, local time
    y = year or datetime.now().year
    return datetime.strptime(f"{y} {stamp}", "%Y %b %d %H:%M:%S").timestamp()


class AuthlogSource(Source):
    name = "authlog"

    def __init__(
        self,
        host: str,
        self_noise: SelfNoise | None = None,
        reason: str = "",
        *,
        path: str | Path = "/var/log/auth.log",
        from_start: bool = False,
        journal: bool | None = None,
    ) -> None:
        super().__init__(host, self_noise, reason)
        self.path = Path(path)
        self.from_start = from_start
        self.use_journal = journal if journal is not None else not self.path.exists()
        self._fh: IO[str] | None = None
        self._ino = 0
        self._journal: subprocess.Popen[bytes] | None = None
        self._partial = ""

    def prepare(self) -> None:
        if self.use_journal:
            if shutil.which("journalctl") is None:
                raise SensorError(f"no {self.path} and no journalctl: nowhere to read logins from")
        elif not self.path.is_file():
            raise SensorError(f"auth log {self.path} does not exist")

    def _start(self) -> None:
        self.prepare()
        if self.use_journal:
            self._journal = subprocess.Popen(
                ["journalctl", "-f", "-n", "0", "-o", "json", "SYSLOG_FACILITY=4", "+", "SYSLOG_FACILITY=10"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
            )
            return
        self._open(at_end=not self.from_start)

    def _open(self, at_end: bool) -> None:
        fh = open(self.path, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115 (kept open)
        if at_end:
            fh.seek(0, os.SEEK_END)
        self._fh = fh
        self._ino = os.fstat(fh.fileno()).st_ino

    def _poll(self, timeout: float) -> list[Event]:
        if self._journal is not None and self._journal.stdout is not None:
            fd = self._journal.stdout.fileno()
            ready, _, _ = select.select([fd], [], [], timeout)
            chunk = os.read(fd, 1 << 16).decode("utf-8", "backslashreplace") if ready else ""
            *complete, self._partial = (self._partial + chunk).split("\n")
            return [e for e in (self._journal_event(line) for line in complete) if e is not None]
        if self._fh is None:
            return []
        chunk = self._fh.read()
        if not chunk:
            try:
                rotated = self.path.stat().st_ino != self._ino
            except FileNotFoundError:
                rotated = False
            if rotated:  # logrotate moved it: read the new file from its start
                self._fh.close()
                self._open(at_end=False)
                chunk = self._fh.read()
            else:
                time.sleep(min(timeout, 0.05))
        text = self._partial + chunk
        *complete, self._partial = text.split("\n")
        out = []
        for line in complete:
            fields = parse_line(line)
            if fields is not None:
                out.append(self._event(fields))
        return out

    def _journal_event(self, line: str) -> Event | None:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            return None
        prog = str(entry.get("SYSLOG_IDENTIFIER", ""))
        msg = entry.get("MESSAGE")
        if not isinstance(msg, str):
            return None
        ts = int(entry.get("__REALTIME_TIMESTAMP", 0)) / 1e6 or time.time()
        pid = entry.get("_PID")
        fields = parse_message(prog, msg, ts, None, int(pid) if pid else None, msg)
        return self._event(fields) if fields is not None else None

    def _event(self, fields: dict[str, Any]) -> Event:
        fields.setdefault("host.name", self.host)
        fields["event.source"] = self.name
        return Event(fields)

    def _stop(self) -> list[Event]:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._journal is not None:
            self._journal.terminate()
            self._journal.wait(timeout=5)
            if self._journal.stdout is not None:
                self._journal.stdout.close()
            self._journal = None
        return []
