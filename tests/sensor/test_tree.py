"""The process tree: /proc snapshot, fork-time parents, enrichment."""

from __future__ import annotations

import os
from pathlib import Path

from assay.sensor._tree import ProcessTree, container_id_from_cgroup, parse_stat, read_proc_process


def test_parse_stat_handles_parentheses_in_comm() -> None:
    line = "42 (a) b (c)) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0 0"
    assert parse_stat(line) == ("a) b (c)", 7, 12345)


def test_snapshot_knows_this_process_and_its_ancestry() -> None:
    tree = ProcessTree()
    n = tree.snapshot()
    assert n > 0
    me = tree.by_pid(os.getpid())
    assert me is not None
    with open(f"/proc/{os.getpid()}/stat") as fh:
        _, ppid, start = parse_stat(fh.read())
    assert me.entity_id == f"{os.getpid()}:{start}"
    assert me.ppid == ppid
    parent = tree.by_pid(ppid)
    assert parent is not None and me.ancestry[0] == parent.entity_id
    assert me.args is not None and me.args_from_proc
    f = tree.fields(me)
    assert f["process.parent.entity_id"] == parent.entity_id
    assert f["process.ancestry"] == list(me.ancestry)


def test_fork_exec_exit_and_grace_period() -> None:
    tree = ProcessTree(keep_exited=2)
    root = tree.ensure(10, 100, 1, 1, "init-ish", proc=None)
    tree.exec(root, "/bin/bash", ["bash"], "/root")
    child = tree.fork(11, 101, 10, 100)
    assert child.executable == "/bin/bash" and child.ancestry == ("10:100", "1:1")
    tree.exec(child, "/usr/bin/id", ["id", "-u"], None)
    f = tree.fields(child)
    assert f["process.parent.executable"] == "/bin/bash" and f["process.command_line"] == "id -u"
    assert f["process.working_directory"] == "/root"  # inherited until it changes
    # the parent execs: the child's cached parent fields follow
    tree.exec(root, "/usr/bin/zsh", ["zsh"], None)
    assert tree.fields(child)["process.parent.executable"] == "/usr/bin/zsh"
    for pid in (20, 21, 22):
        tree.exit(tree.fork(pid, 200 + pid, 10, 100))
    assert tree.get("20:220") is None  # beyond keep_exited
    assert tree.get("22:222") is not None


def test_ensure_ignores_a_reused_pid_in_proc() -> None:
    tree = ProcessTree()
    info = tree.ensure(os.getpid(), 1, 1, 1, "ghost")  # wrong start time: /proc shows someone else
    assert info.entity_id == f"{os.getpid()}:1" and info.name == "ghost" and info.args is None


def test_read_proc_process_of_a_gone_pid(tmp_path: Path) -> None:
    assert read_proc_process(tmp_path, 123) is None


def test_container_ids_from_cgroup_paths() -> None:
    cid = "0123456789abcdef" * 4
    assert container_id_from_cgroup(f"0::/system.slice/docker-{cid}.scope") == cid
    assert container_id_from_cgroup(f"12:cpu:/docker/{cid}") == cid
    assert container_id_from_cgroup(f"cri-containerd-{cid}.scope") == cid
    assert container_id_from_cgroup("0::/user.slice/session-1.scope") is None
