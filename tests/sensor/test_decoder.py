"""The eBPF record decoder, driven by hand-built records: no kernel, no root."""

from __future__ import annotations

import dataclasses
import socket
import struct

import pytest

from assay.errors import SensorError
from assay.events import Event
from assay.sensor import _records as R
from assay.sensor._decoder import Decoder, split_argv
from assay.sensor._syscalls import by_number
from assay.sensor._tree import ProcessTree

from .records import exec_rec, exit_rec, fork_rec, sys_rec


@pytest.fixture
def dec() -> Decoder:
    d = Decoder(ProcessTree(), "h1", by_number("x86_64"), {"mnt": 1, "net": 2, "pid": 3})
    d.clock_offset = 1000.0
    return d


def test_exec_has_full_argv_exe_cwd_and_container(dec: Decoder) -> None:
    ev = dec.decode(
        exec_rec([b"sh", b"-c", b"echo 'a b'", b""], b"/usr/bin/dash", b"/tmp/w", filename=b"/bin/sh")
    )
    assert ev is not None
    f = ev.fields
    assert f["event.action"] == "exec" and f["event.source"] == "ebpf" and f["host.name"] == "h1"
    assert f["process.args"] == ["sh", "-c", "echo 'a b'", ""]  # an empty argument is kept
    assert f["process.command_line"] == "sh -c echo 'a b' "
    assert f["process.executable"] == "/usr/bin/dash" and f["process.name"] == "dash"
    assert f["process.exec_filename"] == "/bin/sh"
    assert f["process.working_directory"] == "/tmp/w"
    assert f["process.entity_id"] == "100:5000" and f["process.start"] == 5000
    assert f["process.parent.entity_id"] == "1:30" and f["process.ancestry"] == ["1:30"]
    assert f["container.id"] == "a" * 64
    assert f["@timestamp"] == pytest.approx(1001.0)
    assert "namespace.pid" not in f  # host namespaces are not repeated on every event


def test_exec_flags_truncated_argv(dec: Decoder) -> None:
    ev = dec.decode(exec_rec([b"x"], b"/bin/x", b"/", flags=R.F_ARGV_TRUNC))
    assert ev is not None and ev["process.args_truncated"] is True


def test_fork_records_the_parent_at_fork_time_and_inherits_its_image(dec: Decoder) -> None:
    dec.decode(exec_rec([b"bash"], b"/usr/bin/bash", b"/root", pid=100, start_ticks=5000))
    child = dec.decode(fork_rec(parent=100, parent_start=5000, child=101, child_start=5001))
    assert child is not None
    assert child["event.action"] == "fork"
    assert child["process.entity_id"] == "101:5001"
    assert child["process.parent.entity_id"] == "100:5000"
    assert child["process.parent.executable"] == "/usr/bin/bash"
    assert child["process.executable"] == "/usr/bin/bash"  # not exec'd yet
    assert child["process.ancestry"] == ["100:5000", "1:30"]
    # the child execs, then a grandchild forks: lineage is kept even when the kernel's parent changes
    dec.decode(
        exec_rec([b"id"], b"/usr/bin/id", b"/root", pid=101, start_ticks=5001, ppid=100, pstart_ticks=5000)
    )
    g = dec.decode(fork_rec(parent=101, parent_start=5001, child=102, child_start=5002))
    assert g is not None and g["process.ancestry"] == ["101:5001", "100:5000", "1:30"]
    assert g["process.parent.command_line"] == "id"
    late = dec.decode(sys_rec("unlink", strs=(b"/tmp/x", None, None), pid=102, start_ticks=5002, ppid=1))
    assert late is not None and late["process.parent.entity_id"] == "101:5001"  # re-parented to init: kept


@pytest.mark.parametrize(
    ("status", "code", "signal"),
    [(0, 0, None), (1 << 8, 1, None), (9, 137, 9)],
)
def test_exit_code_and_signal(dec: Decoder, status: int, code: int, signal: int | None) -> None:
    ev = dec.decode(exit_rec(status))
    assert ev is not None and ev["event.action"] == "exit"
    assert ev["process.exit_code"] == code
    assert ev.get("signal.number") == signal


def test_relative_paths_resolve_against_the_directory_the_kernel_reported(dec: Decoder) -> None:
    ev = dec.decode(
        sys_rec(
            "openat",
            args=(0xFFFFFF9C, 0, 0o101, 0o640),
            ret=3,
            strs=(b"../x.txt", None, None),
            bases=(b"/tmp/a/b", None),
        )
    )
    assert ev is not None
    assert ev["event.action"] == "file_write" and ev["file.path"] == "/tmp/a/x.txt"
    assert ev["file.mode"] == 0o640 and ev["event.outcome"] == "success"
    ren = dec.decode(sys_rec("rename", strs=(b"a", b"/abs/b", None), bases=(b"/w", None)))
    assert ren is not None and ren["file.path"] == "/w/a" and ren["file.target_path"] == "/abs/b"
    empty = dec.decode(
        sys_rec("fchmodat", args=(5, 0, 0o4755), strs=(b"", None, None), bases=(b"/srv/f", None))
    )
    assert empty is not None and empty["file.path"] == "/srv/f" and empty["file.mode"] == 0o4755


def test_failed_syscalls_carry_the_errno(dec: Decoder) -> None:
    ev = dec.decode(sys_rec("unlinkat", args=(0, 0, 0x200), ret=-13, strs=(b"/etc/x", None, None)))
    assert ev is not None
    assert ev["event.outcome"] == "failure" and ev["event.code"] == 13 and ev["file.type"] == "dir"


def test_sensitive_read_only_open_is_its_own_action(dec: Decoder) -> None:
    ev = dec.decode(
        sys_rec(
            "openat", args=(0xFFFFFF9C, 0, 0), ret=3, strs=(b"/etc/shadow", None, None), flags=R.F_SENSITIVE
        )
    )
    assert ev is not None and ev["event.action"] == "file_read_sensitive"
    assert ev["file.sensitive_match"] == "file"


def test_connect_ipv4_and_mapped_ipv6_give_the_same_destination(dec: Decoder) -> None:
    v4 = (
        struct.pack("<H", socket.AF_INET) + struct.pack(">H", 8080) + socket.inet_aton("10.1.2.3") + b"\0" * 8
    )
    ev = dec.decode(
        sys_rec(
            "connect",
            args=(3, 0, 16),
            blob=v4,
            sock=(
                socket.AF_INET,
                1,
                6,
                40000,
                8080,
                socket.inet_aton("10.0.0.9"),
                socket.inet_aton("10.1.2.3"),
            ),
        )
    )
    assert ev is not None
    assert (ev["destination.ip"], ev["destination.port"]) == ("10.1.2.3", 8080)
    assert (ev["source.ip"], ev["source.port"]) == ("10.0.0.9", 40000)
    assert ev["network.transport"] == "tcp" and ev["network.family"] == "ipv4"
    mapped = socket.inet_pton(socket.AF_INET6, "::ffff:10.1.2.3")
    v6 = struct.pack("<H", socket.AF_INET6) + struct.pack(">H", 8080) + b"\0" * 4 + mapped + b"\0" * 4
    ev6 = dec.decode(sys_rec("connect", args=(3, 0, 28), ret=-115, blob=v6))
    assert ev6 is not None and ev6["destination.ip"] == "10.1.2.3" and ev6["network.family"] == "ipv6"
    assert ev6["event.outcome"] == "unknown"  # EINPROGRESS: a non-blocking connect under way


def test_accept_reports_the_peer_as_source(dec: Decoder) -> None:
    ev = dec.decode(
        sys_rec(
            "accept4",
            ret=5,
            sock=(
                socket.AF_INET,
                1,
                6,
                22,
                51000,
                socket.inet_aton("127.0.0.1"),
                socket.inet_aton("192.168.1.7"),
            ),
        )
    )
    assert ev is not None and ev["event.action"] == "accept"
    assert (ev["source.ip"], ev["source.port"]) == ("192.168.1.7", 51000)
    assert (ev["destination.ip"], ev["destination.port"]) == ("127.0.0.1", 22)


def test_unix_and_abstract_socket_paths(dec: Decoder) -> None:
    sun = struct.pack("<H", socket.AF_UNIX) + b"/run/x.sock\0"
    ev = dec.decode(sys_rec("connect", args=(3, 0, len(sun)), blob=sun))
    assert ev is not None and ev["unix.path"] == "/run/x.sock" and ev["network.family"] == "unix"
    abstract = struct.pack("<H", socket.AF_UNIX) + b"\0hidden"
    ev2 = dec.decode(sys_rec("bind", args=(3, 0, len(abstract)), blob=abstract))
    assert ev2 is not None and ev2["unix.path"] == "@hidden"


def test_kill_of_self_and_signal_zero_are_not_reported(dec: Decoder) -> None:
    assert dec.decode(sys_rec("kill", args=(200, 0))) is None
    assert dec.decode(sys_rec("kill", args=(100, 15))) is None  # the record's own pid
    ev = dec.decode(sys_rec("kill", args=(200, 9)))
    assert ev is not None and ev["signal.number"] == 9 and ev["signal.target_pid"] == 200


def test_setuid_family_reports_the_effective_target(dec: Decoder) -> None:
    ev = dec.decode(sys_rec("setresuid", args=(0xFFFFFFFF, 0, 0xFFFFFFFF), uid=1000))
    assert ev is not None and ev["event.action"] == "setuid" and ev["user.target.id"] == 0
    assert ev["user.id"] == 1000


def test_other_namespaces_are_reported(dec: Decoder) -> None:
    ev = dec.decode(exec_rec([b"x"], b"/x", b"/", ns=(10, 20, 30), ns_pid=1))
    assert ev is not None
    assert (ev["namespace.mnt"], ev["namespace.net"], ev["namespace.pid"]) == (10, 20, 30)
    assert ev["process.ns_pid"] == 1 and ev["process.pid"] == 100


def test_bpf_prog_load_names_the_program(dec: Decoder) -> None:
    attr = struct.pack("<II", 1, 2).ljust(48, b"\0") + b"sneaky\0".ljust(16, b"\0")
    ev = dec.decode(sys_rec("bpf", args=(5, 0, len(attr)), blob=attr))
    assert ev is not None and ev["bpf.prog_type"] == 1 and ev["bpf.prog_name"] == "sneaky"


def test_bad_records_raise_clear_errors(dec: Decoder) -> None:
    with pytest.raises(SensorError, match="shorter than its header"):
        dec.decode(b"\0" * 10)
    rec = bytearray(exit_rec(0))
    rec[R.TYPE_OFFSET] = 99
    with pytest.raises(SensorError, match="unknown type 99"):
        dec.decode(bytes(rec))


def test_split_argv() -> None:
    assert split_argv(b"a\0b c\0\0") == ["a", "b c", ""]
    assert split_argv(b"") == []
    assert split_argv(b"\xff\0") == ["\\xff"]


def test_derived_contexts_equal_full_builds(dec: Decoder) -> None:
    """fork_fields/exec_fields are shortcuts: they must give exactly what a rebuild gives."""
    dec.decode(exec_rec([b"bash", b"-i"], b"/usr/bin/bash", b"/root", pid=100, start_ticks=5000))
    child = dec.decode(fork_rec(parent=100, parent_start=5000, child=101, child_start=5001))
    ex = dec.decode(
        exec_rec([b"id"], b"/usr/bin/id", b"/tmp", pid=101, start_ticks=5001, ppid=100, pstart_ticks=5000)
    )
    assert child is not None and ex is not None
    fresh = Decoder(ProcessTree(), "h1", by_number("x86_64"), {"mnt": 1, "net": 2, "pid": 3})
    fresh.clock_offset = dec.clock_offset
    for rec in (
        exec_rec([b"bash", b"-i"], b"/usr/bin/bash", b"/root", pid=100, start_ticks=5000),
        fork_rec(parent=100, parent_start=5000, child=101, child_start=5001),
    ):
        fresh.decode(rec)
    info = fresh.tree.get("101:5001")
    assert info is not None
    info.cache = None  # force full builds from here on
    parent = fresh.tree.get("100:5000")
    assert parent is not None
    parent.cache = None
    ex2 = fresh.decode(
        exec_rec([b"id"], b"/usr/bin/id", b"/tmp", pid=101, start_ticks=5001, ppid=100, pstart_ticks=5000)
    )
    assert ex2 is not None and ex2.fields == ex.fields
    assert child["process.parent.args"] == ["bash", "-i"] and "process.parent.args_count" not in child


def test_fork_context_shortcut_equals_a_rebuild(dec: Decoder) -> None:
    dec.decode(exec_rec([b"bash", b"-i"], b"/usr/bin/bash", b"/root", pid=100, start_ticks=5000))
    rec = fork_rec(parent=100, parent_start=5000, child=101, child_start=5001)
    dec.decode(rec)
    child = dec.tree.get("101:5001")
    assert child is not None and child.cache is not None
    # the cached context is shared by the brood: right but for the identity, which each event sets
    derived = dict(child.cache)
    derived.update({"process.pid": 101, "process.entity_id": "101:5001", "process.start": 5001})
    rebuilt = dec._context(rec, 0, child.cache_key, child)
    assert derived == rebuilt


def test_events_made_without_init_are_plain_events(dec: Decoder) -> None:
    # the decoder makes events as object.__new__(Event) plus the `fields` slot: that is all Event(f) does
    assert [f.name for f in dataclasses.fields(Event)] == ["fields"] and Event.__slots__ == ("fields",)
    ev = dec.decode(exec_rec([b"/bin/true"], b"/usr/bin/true", b"/"))
    assert ev is not None and type(ev) is Event and ev == Event(dict(ev.fields))
