"""The per-syscall field logic eBPF and audit share, for the calls added after the first table (no root)."""

from __future__ import annotations

from typing import Any

import pytest

from assay.events import FIELDS, Action
from assay.sensor import _records as R
from assay.sensor._actions import syscall_fields, target_fields
from assay.sensor._syscalls import by_name


def fields(
    name: str, args: tuple[int, ...], path: str | None = None, base: str | None = None
) -> dict[str, Any]:
    sc = by_name("x86_64")[name]
    strs: list[str | None] = [None] * 6
    strs[R.S_ARG0], strs[R.S_BASE0] = path, base
    out: dict[str, Any] = {}
    syscall_fields(sc, sc.action.value, out, (*args, 0, 0, 0, 0, 0, 0)[:6], strs, b"", 0, 0)
    return out


def test_personality_and_syslog_name_their_argument() -> None:
    assert fields("personality", (0x0040000,)) == {"personality.persona": 0x40000}  # ADDR_NO_RANDOMIZE
    assert fields("personality", (0xFFFFFFFF,)) == {"personality.persona": 0xFFFFFFFF}
    assert fields("syslog", (5,)) == {"syslog.action": 5}
    assert fields("sysinfo", (0x7FFC0000,)) == {}  # a pointer to the caller's buffer says nothing


@pytest.mark.parametrize(
    ("mode", "kind", "device"),
    [
        (0o010644, "fifo", None),
        (0o140600, "socket", None),
        (0o020660, "char", 0x0103),
        (0o060660, "block", 0x0801),
        (0o000644, "file", None),  # type 0 makes a regular file
    ],
)
def test_mknod_reports_the_node_type_mode_and_device(mode: int, kind: str, device: int | None) -> None:
    f = fields("mknodat", (0xFFFFFF9C, 0, mode, device or 0), path="n", base="/tmp/t")
    expected = {"file.path": "/tmp/t/n", "file.type": kind, "file.mode": mode & 0o7777}
    if device is not None:
        expected["file.device"] = device
    assert f == expected
    plain = fields("mknod", (0, mode, device or 0), path="/dev/shm/n")
    assert plain["file.type"] == kind and plain["file.path"] == "/dev/shm/n"


def test_new_actions_are_in_the_taxonomy_with_their_fields() -> None:
    table = by_name("x86_64")
    for name, action in (
        ("personality", Action.PERSONALITY),
        ("syslog", Action.SYSLOG),
        ("sysinfo", Action.SYSINFO),
        ("mknod", Action.MKNOD),
        ("mknodat", Action.MKNOD),
    ):
        assert table[name].action is action
    for field in ("personality.persona", "syslog.action", "file.type", "file.mode", "file.device"):
        assert field in FIELDS


def test_a_kill_or_trace_names_its_target_executable_when_the_tree_knows_it() -> None:
    class Known:
        executable = "/usr/sbin/mysqld"

    tree = {4242: Known()}
    kill = fields("kill", (4242, 15))
    target_fields(Action.KILL.value, kill, tree.get)
    assert kill == {
        "signal.number": 15,
        "signal.target_pid": 4242,
        "signal.target_executable": "/usr/sbin/mysqld",
    }
    trace = fields("ptrace", (16, 4242))
    target_fields(Action.PTRACE.value, trace, tree.get)
    assert trace["ptrace.target_executable"] == "/usr/sbin/mysqld"
    for pid in (0, -4242, 77):  # a process group, or a process the tree never saw: nothing is guessed
        other = fields("kill", (pid & 0xFFFFFFFFFFFFFFFF, 9))
        target_fields(Action.KILL.value, other, tree.get)
        assert "signal.target_executable" not in other
    assert {"signal.target_executable", "ptrace.target_executable"} <= set(FIELDS)
