"""Audit record text → grouped events (sans-I/O).

A kernel audit event is several records sharing one serial number (SYSCALL, EXECVE, CWD, PATH...,
PROCTITLE, then EOE). Values that could contain spaces or quotes are hex-encoded by the kernel unless they
are plain, in which case they are quoted; ``(null)`` means absent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from assay.errors import SensorError

AUDIT_SYSCALL = 1300
AUDIT_PATH = 1302
AUDIT_CONFIG_CHANGE = 1305
AUDIT_SOCKADDR = 1306
AUDIT_CWD = 1307
AUDIT_EXECVE = 1309
AUDIT_EOE = 1320
AUDIT_PROCTITLE = 1327
AUDIT_REPLACE = 1329
AUDIT_BPF = 1334
AUDIT_KERN_MODULE = 1330
AUDIT_FIRST_USER_MSG = 1100
AUDIT_LAST_USER_MSG = 1199

_HEADER = re.compile(rb"audit\((\d+)\.(\d+):(\d+)\):\s?")
_FIELD = re.compile(rb'([A-Za-z_][A-Za-z0-9_]*(?:\[\d+\])?)=("[^"]*"|\'[^\']*\'|\S*)')


@dataclass(slots=True)
class Record:
    type: int
    timestamp: float
    serial: int
    fields: dict[str, str]

    def text(self, name: str) -> str | None:
        """An "untrusted string" field: quoted → literal, hex → decoded, (null) → None."""
        raw = self.fields.get(name)
        return decode_value(raw) if raw is not None else None

    def int(self, name: str, base: int = 10) -> int | None:
        raw = self.fields.get(name)
        if raw is None:
            return None
        try:
            return int(raw, base)
        except ValueError:
            return None


def decode_value(raw: str) -> str | None:
    if raw == "(null)":
        return None
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    if raw and len(raw) % 2 == 0 and all(c in "0123456789ABCDEFabcdef" for c in raw):
        return bytes.fromhex(raw).decode("utf-8", "backslashreplace")
    return raw


def parse(rtype: int, text: bytes) -> Record:
    m = _HEADER.match(text)
    if m is None:
        raise SensorError(f"audit record of type {rtype} without an audit(...) header: {text[:80]!r}")
    ts = int(m.group(1)) + int(m.group(2)) / 1000.0
    fields = {k.decode(): v.decode("utf-8", "backslashreplace") for k, v in _FIELD.findall(text, m.end())}
    return Record(rtype, ts, int(m.group(3)), fields)


@dataclass
class Assembler:
    """Groups records by serial; a group is complete at its EOE (or, for one-record events, at once)."""

    max_age: float = 2.0  # seconds a group may wait for its EOE before it is delivered as it is
    _open: dict[int, list[Record]] = field(default_factory=dict)

    def feed(self, rec: Record) -> list[list[Record]]:
        if rec.type == AUDIT_EOE:
            group = self._open.pop(rec.serial, None)
            return [group] if group else []
        if rec.type != AUDIT_SYSCALL and rec.serial not in self._open and not _joins_syscall(rec.type):
            return [[rec]]  # a standalone event (user messages, config changes, BPF, module)
        self._open.setdefault(rec.serial, []).append(rec)
        return []

    def expire(self, now: float) -> list[list[Record]]:
        """Groups whose EOE never came (a lost record): delivered rather than held forever."""
        out = [g for s, g in self._open.items() if now - g[0].timestamp > self.max_age]
        for g in out:
            del self._open[g[0].serial]
        return out

    def pending(self) -> int:
        return len(self._open)


def _joins_syscall(rtype: int) -> bool:
    aux = (AUDIT_PATH, AUDIT_SOCKADDR, AUDIT_CWD, AUDIT_EXECVE, AUDIT_PROCTITLE)
    return rtype in aux or 1320 <= rtype < 1400


def merge(records: Iterable[Record]) -> Record | None:
    """Records of one type and event as one (the kernel splits a long EXECVE over several)."""
    out: Record | None = None
    for r in records:
        if out is None:
            out = Record(r.type, r.timestamp, r.serial, dict(r.fields))
        else:
            out.fields.update(r.fields)
    return out


def execve_args(rec: Record) -> list[str]:
    """argv from an EXECVE record: aN, or aN[i] pieces (aN_len=...) for long arguments."""
    argc = rec.int("argc") or 0
    out: list[str] = []
    for i in range(argc):
        key = f"a{i}"
        if key in rec.fields:
            out.append(rec.text(key) or "")
            continue
        # a long argument comes in pieces, all quoted or all hex (the kernel decides once per argument)
        pieces = []
        j = 0
        while f"{key}[{j}]" in rec.fields:
            pieces.append(rec.fields[f"{key}[{j}]"])
            j += 1
        if pieces and pieces[0].startswith('"'):
            out.append("".join(p[1:-1] for p in pieces))
        else:
            out.append(decode_value("".join(pieces)) or "")
    return out
