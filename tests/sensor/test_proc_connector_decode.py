"""Proc connector datagrams → events, and sequence gaps → exact loss, without the kernel."""

from __future__ import annotations

import struct
from pathlib import Path

from assay.sensor._proc_connector import (
    PROC_EVENT_EXIT,
    PROC_EVENT_FORK,
    PROC_EVENT_UID,
    ProcConnectorSource,
)


def msg(what: int, seq: int, cpu: int, body: bytes, ts_ns: int = 5_000_000_000) -> bytes:
    return (
        struct.pack("=IHHII", 0, 3, 0, 0, 0)
        + struct.pack("=IIIIHH", 1, 1, seq, 0, 0, 0)
        + struct.pack("=IIQ", what, cpu, ts_ns)
        + body
    )


def test_fork_exit_uid_and_sequence_gaps(tmp_path: Path) -> None:
    src = ProcConnectorSource("h", proc=tmp_path, snapshot=False)  # an empty /proc: every process is "gone"
    fork = src.decode(msg(PROC_EVENT_FORK, 0, 0, struct.pack("=4I", 10, 10, 11, 11)))
    assert fork is not None and fork["event.action"] == "fork" and fork["process.pid"] == 11
    assert fork["process.parent.pid"] == 10 and fork["process.start_estimated"] is True
    assert fork["process.entity_id"] == f"11:{fork['process.start']}"
    assert src.decode(msg(PROC_EVENT_FORK, 1, 0, struct.pack("=4I", 11, 11, 12, 11))) is None  # a thread
    uid = src.decode(msg(PROC_EVENT_UID, 2, 0, struct.pack("=4I", 11, 11, 0, 0)))
    assert uid is not None and uid["event.action"] == "setuid" and uid["user.target.id"] == 0
    # cpu 0 jumps from seq 2 to 7: 3, 4, 5 and 6 were lost
    ex = src.decode(msg(PROC_EVENT_EXIT, 7, 0, struct.pack("=6I", 11, 11, 2 << 8, 17, 10, 10)))
    assert ex is not None and ex["process.exit_code"] == 2
    assert ex["process.entity_id"] == fork["process.entity_id"]
    src.decode(msg(PROC_EVENT_FORK, 0, 1, struct.pack("=4I", 1, 1, 20, 20)))  # cpu 1 starts its own count
    loss = src._gap_losses()
    assert len(loss) == 1 and loss[0]["loss.count"] == 4
    assert src.stats()["dropped"] == 4
