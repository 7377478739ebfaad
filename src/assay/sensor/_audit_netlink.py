"""The kernel audit interface over NETLINK_AUDIT: status, rules, and taking the daemon's place.

Python is the audit daemon here (there is none on the target hosts, and no ``auditctl``). Rules are encoded as
``struct audit_rule_data`` exactly as auditctl would, tagged with one filter key so that they (and only they)
can be found and removed again, including by the next start after a SIGKILLed run: the state the sensor
changed is written to a state file *before* it is changed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import struct
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from assay.errors import SensorError, Source

NETLINK_AUDIT = 9
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
AUDIT_GET = 1000
AUDIT_SET = 1001
AUDIT_LIST_RULES = 1013
AUDIT_ADD_RULE = 1011
AUDIT_DEL_RULE = 1012
AUDIT_STATUS_ENABLED = 0x1
AUDIT_STATUS_PID = 0x4
AUDIT_STATUS_BACKLOG_LIMIT = 0x10
AUDIT_STATUS_BACKLOG_WAIT_TIME = 0x20
AUDIT_FILTER_EXIT = 0x04
AUDIT_ALWAYS = 2
AUDIT_BITMASK_SIZE = 64
AUDIT_ARCH = 11
AUDIT_WATCH = 105
AUDIT_PERM = 106
AUDIT_DIR = 107
AUDIT_FILTERKEY = 210
AUDIT_A0 = 200
AUDIT_EQUAL = 0x40000000
AUDIT_BIT_MASK = 0x08000000
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_PERM_READ = 4

_NLMSG = struct.Struct("=IHHII")
_STATUS = struct.Struct("=11I")
_STATUS_FIELDS = (
    "mask",
    "enabled",
    "failure",
    "pid",
    "rate_limit",
    "backlog_limit",
    "lost",
    "backlog",
    "feature_bitmap",
    "backlog_wait_time",
    "backlog_wait_time_actual",
)
_RULE_HEAD = struct.Struct("=III")  # flags, action, field_count
_RULE_SIZE = _RULE_HEAD.size + 4 * AUDIT_BITMASK_SIZE * 4 + 4  # + mask, fields, values, fieldflags, buflen

RULE_KEY = "assay-sensor"
_HELD_MAX = 100_000
# rule fields whose value is a length into the rule's string buffer (kernel/auditfilter.c)
_STRING_FIELDS = frozenset(
    {13, 14, 15, 16, 17, 19, 20, 21, 22, 23, AUDIT_WATCH, AUDIT_DIR, 112, AUDIT_FILTERKEY}
)
STATE_DIR = Path(os.environ.get("ASSAY_RUN_DIR", "/run/assay"))


@dataclass
class AuditRule:
    """One syscall (or watch) rule, auditctl-style: ``-a always,exit -F arch=b64 -S ... -F ... -k key``."""

    syscalls: tuple[int, ...] = ()
    key: str = RULE_KEY
    arg_mask: tuple[int, int] | None = None  # (argument index, bits): the call matches when arg & bits != 0
    watch: str | None = None  # a path: file watch (or directory watch when `directory`)
    directory: bool = False
    perm: int = 0
    fields: list[tuple[int, int, int]] = field(default_factory=list)  # (field, op, value) extra

    def encode(self) -> bytes:
        mask = [0] * AUDIT_BITMASK_SIZE
        if self.watch is not None:
            mask = [0xFFFFFFFF] * AUDIT_BITMASK_SIZE  # watches apply to every syscall that touches the path
        for nr in self.syscalls:
            mask[nr // 32] |= 1 << (nr % 32)
        fields: list[tuple[int, int, int]] = [(AUDIT_ARCH, AUDIT_EQUAL, AUDIT_ARCH_X86_64)]
        buf = b""
        if self.watch is not None:
            path = self.watch.encode()
            fields.append((AUDIT_DIR if self.directory else AUDIT_WATCH, AUDIT_EQUAL, len(path)))
            buf += path
            if self.perm:
                fields.append((AUDIT_PERM, AUDIT_EQUAL, self.perm))
        if self.arg_mask is not None:
            idx, bits = self.arg_mask
            fields.append((AUDIT_A0 + idx, AUDIT_BIT_MASK, bits))
        fields.extend(self.fields)
        key = self.key.encode()
        fields.append((AUDIT_FILTERKEY, AUDIT_EQUAL, len(key)))
        buf += key
        if len(fields) > AUDIT_BITMASK_SIZE:
            raise SensorError(f"audit rule has {len(fields)} fields, the kernel takes {AUDIT_BITMASK_SIZE}")
        f = [0] * AUDIT_BITMASK_SIZE
        v = [0] * AUDIT_BITMASK_SIZE
        ff = [0] * AUDIT_BITMASK_SIZE
        for i, (fid, op, val) in enumerate(fields):
            f[i], ff[i], v[i] = fid, op, val & 0xFFFFFFFF
        return (
            _RULE_HEAD.pack(AUDIT_FILTER_EXIT, AUDIT_ALWAYS, len(fields))
            + struct.pack(f"={AUDIT_BITMASK_SIZE}I", *mask)
            + struct.pack(f"={AUDIT_BITMASK_SIZE}I", *f)
            + struct.pack(f"={AUDIT_BITMASK_SIZE}I", *v)
            + struct.pack(f"={AUDIT_BITMASK_SIZE}I", *ff)
            + struct.pack("=I", len(buf))
            + buf
        )


def rule_key(data: bytes) -> str | None:
    """The filter key of a rule as the kernel lists it (struct audit_rule_data), or None."""
    if len(data) < _RULE_SIZE:
        return None
    count = _RULE_HEAD.unpack_from(data)[2]
    base = _RULE_HEAD.size + 4 * AUDIT_BITMASK_SIZE
    fields = struct.unpack_from(f"={AUDIT_BITMASK_SIZE}I", data, base)
    values = struct.unpack_from(f"={AUDIT_BITMASK_SIZE}I", data, base + 4 * AUDIT_BITMASK_SIZE)
    buf = data[_RULE_SIZE:]
    off = 0
    for i in range(min(count, AUDIT_BITMASK_SIZE)):
        if fields[i] in _STRING_FIELDS:
            text = buf[off : off + values[i]]
            off += values[i]
            if fields[i] == AUDIT_FILTERKEY:
                return text.decode("utf-8", "replace")
    return None


class AuditSocket:
    """A NETLINK_AUDIT socket with request/acknowledge and record reading."""

    def __init__(self, rcvbuf: int = 64 << 20) -> None:
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
            self.sock.bind((0, 0))
        except OSError as exc:
            raise SensorError(f"cannot open the audit netlink socket: {exc.strerror}") from exc
        for opt in (33, socket.SO_RCVBUF):  # SO_RCVBUFFORCE needs CAP_NET_ADMIN; SO_RCVBUF is capped
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, opt, rcvbuf)
                break
            except OSError:
                continue
        self._seq = int(time.time()) & 0xFFFF
        self.overruns = 0  # ENOBUFS seen on reads
        # audit records that arrived while waiting for a request's answer: delivered by records() first
        self._held: deque[tuple[int, bytes]] = deque()

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def request(
        self, mtype: int, payload: bytes = b"", what: str = "", ok_errors: tuple[int, ...] = ()
    ) -> list[tuple[int, bytes]]:
        """Send one request, return the replies (type, payload) up to the ack; an error ack raises.

        Under a flood of records the socket can overflow and the kernel then drops our ack with them, so a
        request that gets no answer is sent again (every request here is idempotent, or lists its errors
        that mean "already done" in ok_errors).
        """
        for _attempt in range(5):
            self._seq += 1
            seq = self._seq
            msg = _NLMSG.pack(_NLMSG.size + len(payload), mtype, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + payload
            self.sock.send(msg)
            replies: list[tuple[int, bytes]] = []
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                try:
                    data = self.sock.recv(1 << 16)
                except TimeoutError:
                    continue
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        raise SensorError(f"audit {what or mtype}: read failed: {exc.strerror}") from exc
                    self.overruns += 1  # records overflowed our buffer (perhaps with our answer)
                    continue
                for rtype, rseq, body in _messages(data):
                    if rseq != seq:
                        if rtype >= 1100 and len(self._held) < _HELD_MAX:  # a record: keep it for records()
                            self._held.append((rtype, body.rstrip(b"\0")))
                        continue
                    if rtype == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", body)[0]
                        if code and code not in ok_errors:
                            name = errno.errorcode.get(code, str(code))
                            raise SensorError(f"audit {what or mtype}: {name} ({os.strerror(code)})")
                        if code or mtype not in (AUDIT_LIST_RULES, AUDIT_GET):  # those answer after the ack
                            return replies
                        continue
                    if rtype == NLMSG_DONE:
                        return replies
                    replies.append((rtype, body))
                    if mtype == AUDIT_GET and rtype == AUDIT_GET:
                        return replies
        raise SensorError(f"audit {what or mtype}: no answer from the kernel after 5 tries")

    def status(self) -> dict[str, int]:
        for rtype, body in self.request(AUDIT_GET, what="get status"):
            if rtype == AUDIT_GET:
                padded = body[: _STATUS.size].ljust(_STATUS.size, b"\0")
                return dict(zip(_STATUS_FIELDS, _STATUS.unpack(padded), strict=True))
        raise SensorError("audit get status: no status in the answer")

    def set_status(self, **values: int) -> None:
        masks = {
            "enabled": AUDIT_STATUS_ENABLED,
            "pid": AUDIT_STATUS_PID,
            "backlog_limit": AUDIT_STATUS_BACKLOG_LIMIT,
            "backlog_wait_time": AUDIT_STATUS_BACKLOG_WAIT_TIME,
        }
        st = dict.fromkeys(_STATUS_FIELDS, 0)
        for k, v in values.items():
            st["mask"] |= masks[k]
            st[k] = v
        self.request(AUDIT_SET, _STATUS.pack(*(st[k] for k in _STATUS_FIELDS)), what=f"set {sorted(values)}")

    def rules(self) -> list[bytes]:
        return [
            body
            for rtype, body in self.request(AUDIT_LIST_RULES, what="list rules")
            if rtype == AUDIT_LIST_RULES
        ]

    def add_rule(self, rule: AuditRule) -> None:
        # EEXIST: a retried add whose first attempt worked
        self.request(AUDIT_ADD_RULE, rule.encode(), what="add rule", ok_errors=(errno.EEXIST,))

    def delete_rules(self, key_prefix: str) -> int:
        """Delete every rule whose filter key starts with key_prefix; returns how many."""
        n = 0
        for data in self.rules():
            key = rule_key(data)
            if key is not None and key.startswith(key_prefix):
                # ENOENT: a retried delete whose first attempt worked (its ack was lost)
                self.request(AUDIT_DEL_RULE, data, what="delete rule", ok_errors=(errno.ENOENT,))
                n += 1
        return n

    def records(self) -> Iterator[tuple[int, bytes]]:
        """Audit records waiting on the socket (non-blocking): (type, text)."""
        while self._held:
            yield self._held.popleft()
        while True:
            try:
                data = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise SensorError(f"audit socket read failed: {exc.strerror}") from exc
                # our receive buffer overflowed; kauditd keeps what it could not send and counts what it
                # finally drops in its `lost` counter, which the source reports
                self.overruns += 1
                continue
            # Records to the audit daemon carry nlmsg_len = payload length (a kernel quirk): one per datagram.
            if len(data) < _NLMSG.size:
                continue
            rtype = _NLMSG.unpack_from(data)[1]
            yield rtype, data[_NLMSG.size :].rstrip(b"\0")


def _messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    off = 0
    while off + _NLMSG.size <= len(data):
        ln, rtype, _flags, seq, _pid = _NLMSG.unpack_from(data, off)
        if rtype >= 1100 or ln < _NLMSG.size:
            # an audit record (its length excludes the header): the rest of the datagram is its payload
            yield rtype, seq, data[off + _NLMSG.size :]
            return
        yield rtype, seq, data[off + _NLMSG.size : off + ln]
        off += (ln + 3) & ~3


# --- who holds the audit subsystem, and the state file ------------------------------------------------
@dataclass
class AuditState:
    """What the sensor changed, so that it (or the next start, after a SIGKILL) can put it back."""

    pid: int
    enabled: int
    backlog_limit: int
    backlog_wait_time: int
    previous_pid: int
    started: float

    @property
    def path(self) -> Path:
        return state_path()

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.__dict__))
        tmp.replace(self.path)

    @classmethod
    def load(cls) -> AuditState | None:
        try:
            data = json.loads(state_path().read_text())
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SensorError(f"unreadable audit state file: {exc}", Source(file=str(state_path()))) from exc

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def state_path() -> Path:
    return STATE_DIR / "audit-state.json"


class OwnerLock:
    """An exclusive lock on the audit subsystem among Assay processes (flock: the kernel drops it when its
    holder dies, even by SIGKILL, so a crashed owner never blocks the next one)."""

    def __init__(self) -> None:
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(STATE_DIR / "audit.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def restore(sock: AuditSocket, state: AuditState) -> None:
    """Remove the sensor's rules and put the audit status back as it was before the sensor took it.

    Order matters under load: first stop being the daemon and put `enabled` back (which stops the flood
    of records into our socket), then delete the rules, then the limits.
    """
    current = sock.status()
    first: dict[str, int] = {"enabled": state.enabled}
    if current["pid"] in (state.pid, 0) or not pid_alive(current["pid"]):
        first["pid"] = 0
    sock.set_status(**first)
    sock.delete_rules(RULE_KEY)
    sock.set_status(backlog_limit=state.backlog_limit, backlog_wait_time=state.backlog_wait_time)
    state.remove()


def add_rules(sock: AuditSocket, rules: Iterable[AuditRule]) -> int:
    n = 0
    for rule in rules:
        sock.add_rule(rule)
        n += 1
    return n
