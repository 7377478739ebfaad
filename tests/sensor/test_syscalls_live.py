"""personality, sysinfo, syslog and mknod, triggered by a small harmless program and seen by eBPF and audit.

The program only queries: personality(0xffffffff) reads the persona without changing it, sysinfo reads
uptime and memory, syslog(SYSLOG_ACTION_SIZE_BUFFER) reads the size of the kernel log buffer; the two
mknod calls make FIFOs in a temporary directory of the test's own. Both sources must give the same action
and fields, and the SigmaHQ auditd rules written for these syscalls must fire on what the sensor saw (and
stay quiet where the arguments say the call was harmless).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from assay.detection import Engine
from assay.errors import SensorError
from assay.events import Event
from assay.sensor import AuditSource, EbpfSource

from .conftest import Watch

pytestmark = [pytest.mark.root, pytest.mark.kernel]

_PROGRAM = textwrap.dedent(
    """
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    here = sys.argv[1]
    libc.personality(ctypes.c_ulong(0xFFFFFFFF))  # query only
    info = ctypes.create_string_buffer(256)  # struct sysinfo is 112 bytes on x86-64
    assert libc.sysinfo(info) == 0
    assert libc.klogctl(10, None, 0) > 0  # SYSLOG_ACTION_SIZE_BUFFER: read-only
    os.umask(0o022)
    os.mkfifo(os.path.join(here, "fifo-at"), 0o600)  # glibc: mknodat(AT_FDCWD, ...)
    os.chdir(here)
    SYS_mknod = 133
    assert libc.syscall(SYS_mknod, b"fifo-plain", 0o010640, 0) == 0  # relative to the cwd
    """
)


@pytest.fixture(scope="module")
def audit_watch() -> Iterator[Watch]:
    # Only one audit daemon per host: wait a while for another run of these tests to finish with it.
    src = AuditSource(os.uname().nodename, wait_for_owner=60)
    try:
        src.start()
    except SensorError as exc:
        pytest.skip(f"audit source unavailable: {exc}")
    yield Watch(src)
    src.stop()


def _run(watches: dict[str, Watch], tmp_path: Path) -> tuple[int, dict[str, list[Event]]]:
    for w in watches.values():
        w.pump(0)
        w.events.clear()
    p = subprocess.Popen([sys.executable, "-c", _PROGRAM, str(tmp_path)], stdin=subprocess.DEVNULL)
    while p.poll() is None:
        for w in watches.values():
            w.pump(0.01)
    assert p.returncode == 0
    return p.pid, {name: w.of(p.pid, timeout=15) for name, w in watches.items()}


def _one(events: list[Event], action: str, **fields: object) -> Event:
    found = [e for e in events if e.action == action and all(e.get(k) == v for k, v in fields.items())]
    assert found, f"no {action} event with {fields}; got {sorted({e.action for e in events})}"
    return found[0]


def test_both_sources_report_the_new_syscalls_alike(
    ebpf_source: EbpfSource, audit_watch: Watch, tmp_path: Path, sigma_corpus: Path
) -> None:
    watches = {"ebpf": Watch(ebpf_source), "audit": audit_watch}
    pid, seen = _run(watches, tmp_path)
    expected = [
        ("personality", {"syscall.name": "personality", "personality.persona": 0xFFFFFFFF}),
        ("sysinfo", {"syscall.name": "sysinfo"}),
        ("syslog", {"syscall.name": "syslog", "syslog.action": 10}),
        (
            "mknod",
            {
                "syscall.name": "mknodat",
                "file.path": str(tmp_path / "fifo-at"),
                "file.type": "fifo",
                "file.mode": 0o600,
            },
        ),
        (
            "mknod",
            {
                "syscall.name": "mknod",
                "file.path": str(tmp_path / "fifo-plain"),
                "file.type": "fifo",
                "file.mode": 0o640,
            },
        ),
    ]
    for name, events in seen.items():
        for action, fields in expected:
            ev = _one(events, action, **fields)
            assert ev.pid == pid and ev["event.source"] == name
            assert ev["event.outcome"] == "success"
            assert "file.device" not in ev  # a FIFO has no device number
    assert (tmp_path / "fifo-at").exists() and (tmp_path / "fifo-plain").exists()

    # The SigmaHQ rules for these syscalls, on what the eBPF sensor saw.
    engine = Engine.load(rule_paths=[sigma_corpus], include_builtin=False)
    fired = {a.rule_id for e in seen["ebpf"] for a in engine.process(e)}
    assert SYSINFO_DISCOVERY in fired and MKNOD_SPECIAL_FILE in fired
    # querying the persona is not disabling ASLR; reading the buffer size is not clearing the log
    assert ASLR_DISABLED not in fired and KERNEL_LOG_CLEARED not in fired


# SigmaHQ rule ids (read from ../shared/corpora/sigma, never copied)
ASLR_DISABLED = "e497a24e-9345-4a62-9803-b06d7d7cb132"
KERNEL_LOG_CLEARED = "eca5e022-d368-4043-98e5-9736fb01f72f"
SYSINFO_DISCOVERY = "b207d563-a1d9-4275-b349-77d1eb55aa6d"
MKNOD_SPECIAL_FILE = "710bdbce-495d-491d-9a8f-7d0d88d2b41e"
