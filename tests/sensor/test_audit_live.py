"""The audit source on the real kernel: forced loss is reported, and a SIGKILLed run is cleaned up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from assay.errors import SensorError
from assay.sensor import AuditSource
from assay.sensor import _audit_netlink as N

pytestmark = pytest.mark.root

ASSAY = str(Path(sys.executable).parent / "assay")


def _our_rules() -> int:
    sock = N.AuditSocket()
    try:
        return sum(1 for r in sock.rules() if (N.rule_key(r) or "").startswith(N.RULE_KEY))
    finally:
        sock.close()


def _status() -> dict[str, int]:
    sock = N.AuditSocket()
    try:
        return sock.status()
    finally:
        sock.close()


def _start(src: AuditSource) -> None:
    try:
        src.start()
    except SensorError as exc:
        pytest.skip(f"audit source unavailable: {exc}")


def test_forced_audit_loss_is_reported() -> None:
    # a tiny receive buffer and backlog, and no reading during a burst: kauditd must drop and count
    src = AuditSource(
        os.uname().nodename, backlog_limit=16, rcvbuf=4096, sensitive_paths=(), wait_for_owner=60
    )
    _start(src)
    before = src._audit_state
    assert before is not None
    lost_before = src.stats()["audit_lost"]  # the kernel's counter when the source took over
    try:
        burst = "import subprocess\nfor _ in range(150):\n    subprocess.run(['/bin/true', 'audit-loss'])\n"
        for _ in range(5):  # kauditd retries before it drops: burst until it has dropped something
            subprocess.run([sys.executable, "-c", burst], check=True)
            if _status()["lost"] > lost_before:
                break
        events = []
        for _ in range(10):
            events += src.poll(0.05)
    finally:
        src.stop()
    events += src.poll(0)
    lost = _status()["lost"] - lost_before
    assert lost > 0, "kauditd dropped nothing: the test did not force loss"
    loss = [e for e in events if e.action == "loss"]
    assert loss, "kauditd dropped records but no loss event was emitted"
    assert sum(e["loss.count"] for e in loss) == lost  # exactly what the kernel counted while we held it
    assert all(e["loss.unit"] == "records" and e["loss.count"] > 0 for e in loss)
    assert src.stats()["dropped"] == sum(e["loss.count"] for e in loss)
    # even after a flood that overflowed the socket (and could swallow acks), the status is put back
    after = _status()
    assert (after["enabled"], after["backlog_limit"], after["backlog_wait_time"]) == (
        before.enabled,
        before.backlog_limit,
        before.backlog_wait_time,
    )
    assert after["pid"] == 0 and _our_rules() == 0 and not N.state_path().exists()


def test_a_sigkilled_audit_sensor_is_cleaned_up_at_the_next_start(tmp_path: Path) -> None:
    before = _status()
    p = subprocess.Popen(
        [ASSAY, "sense", "-s", "audit", "-o", str(tmp_path / "e.jsonl"), "--audit-wait", "60"],
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert p.stderr is not None
    attached = False
    said = []
    for line in p.stderr:
        said.append(line)
        if "attached (" in line:
            attached = True
            break
    if not attached:
        _, err = p.communicate(timeout=10)
        reason = ("".join(said) + err).strip()[-300:]
        pytest.skip(f"assay sense -s audit could not take the audit subsystem: {reason}")
    assert _status()["pid"] == p.pid and _our_rules() > 0
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=10)
    assert _our_rules() > 0, "no leftovers: the test did not exercise the cleanup"
    state = json.loads(N.state_path().read_text())
    assert state["pid"] == p.pid

    src = AuditSource(os.uname().nodename, sensitive_paths=(), wait_for_owner=60)
    _start(src)
    try:
        assert src.cleaned_up_after == p.pid
        assert _status()["pid"] == os.getpid()
    finally:
        src.stop()
    after = _status()
    assert _our_rules() == 0
    assert after["pid"] == 0 and after["enabled"] == before["enabled"]
    assert after["backlog_limit"] == before["backlog_limit"]
    assert not N.state_path().exists()
