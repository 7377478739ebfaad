"""Each eBPF hook, triggered by a small harmless program of the test's own, in a temporary directory.

Every test asserts the normalized fields of the event its program caused, and its lineage.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from assay.events import Event

from .conftest import Watch

pytestmark = [pytest.mark.root, pytest.mark.kernel]


def one(events: list[Event], action: str, **fields: object) -> Event:
    found = [e for e in events if e.action == action and all(e.get(k) == v for k, v in fields.items())]
    assert found, f"no {action} event with {fields}; got {[(e.action, e.get('file.path')) for e in events]}"
    return found[0]


def test_exec_has_the_full_argv_read_in_the_kernel(watch: Watch, tmp_path: Path) -> None:
    args = [f"arg{i}-" + "x" * 200 for i in range(40)]  # 8 KB of argv, more than a per-argument loop can read
    pid, events = watch.run(["/bin/true", *args], cwd=tmp_path)
    ev = one(events, "exec", **{"process.pid": pid})
    assert ev["process.args"] == ["/bin/true", *args]
    assert ev["process.executable"] == os.path.realpath("/bin/true")
    assert ev["process.working_directory"] == str(tmp_path)
    assert ev["process.parent.pid"] == os.getpid()
    assert ev["user.id"] == os.getuid()
    assert "process.args_truncated" not in ev
    with open(f"/proc/{os.getpid()}/stat") as fh:
        my_start = int(fh.read().rpartition(")")[2].split()[19])
    assert ev["process.parent.entity_id"] == f"{os.getpid()}:{my_start}"
    assert ev["process.ancestry"][0] == ev["process.parent.entity_id"]


def test_exec_past_the_cap_is_flagged_truncated(watch: Watch, tmp_path: Path) -> None:
    args = ["y" * 1000 for _ in range(20)]  # 20 KB > the 16 KiB cap
    pid, events = watch.run(["/bin/true", *args], cwd=tmp_path)
    ev = one(events, "exec", **{"process.pid": pid})
    assert ev["process.args_truncated"] is True
    assert ev["process.args_bytes"] == sum(len(a) + 1 for a in ["/bin/true", *args])
    assert ev["process.args"][:3] == ["/bin/true", "y" * 1000, "y" * 1000]


def test_failed_exec_is_reported_with_its_argv(watch: Watch, tmp_path: Path) -> None:
    code = "import os\ntry:\n    os.execv('./nope', ['./nope', 'a1', 'a2'])\nexcept OSError:\n    pass\n"
    pid, events = watch.python(code, cwd=tmp_path)
    ev = one(events, "exec_failed", **{"process.pid": pid})
    assert ev["file.path"] == str(tmp_path / "nope")
    assert ev["exec.args"] == ["./nope", "a1", "a2"]
    assert ev["event.outcome"] == "failure" and ev["event.code"] == 2  # ENOENT


def test_fork_exit_and_lineage_survive_daemonising(watch: Watch, tmp_path: Path) -> None:
    # the middle process exits at once, so the grandchild is re-parented; its lineage must still lead here
    code = textwrap.dedent(
        """
        import os, sys
        if os.fork() == 0:
            if os.fork() == 0:
                os.execv('/bin/sh', ['sh', '-c', 'exit 3'])
            os._exit(0)
        os.wait()
        """
    )
    pid, _ = watch.python(code, cwd=tmp_path)

    def grandchild_exit(e: Event) -> bool:
        return (
            e.action == "exit"
            and e.get("process.exit_code") == 3
            and len(e.lineage) > 3
            and e.lineage[2].startswith(f"{pid}:")
        )

    found = watch.wait_for(grandchild_exit)
    assert found, "the grandchild's exit (code 3) was not seen with its lineage"
    ev = found[0]
    forks = [e for e in watch.events if e.action == "fork" and e.get("process.entity_id") == ev.entity_id]
    assert forks and forks[0]["process.parent.entity_id"] == ev.lineage[1]
    assert ev["process.args"] == ["sh", "-c", "exit 3"]


def test_exit_by_signal(watch: Watch, tmp_path: Path) -> None:
    pid, events = watch.python("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", cwd=tmp_path)
    ev = one(events, "exit", **{"process.pid": pid})
    assert ev["process.exit_code"] == 137 and ev["signal.number"] == 9


@pytest.mark.parametrize(
    ("call", "syscall"),
    [
        ("os.close(os.open('f1', os.O_WRONLY | os.O_CREAT, 0o640))", "openat"),
        (
            "import ctypes; libc = ctypes.CDLL(None, use_errno=True); libc.syscall(2, b'f1', 0o101, 0o640)",
            "open",
        ),
        ("import ctypes; libc = ctypes.CDLL(None, use_errno=True); libc.syscall(85, b'f1', 0o640)", "creat"),
        (
            "import ctypes, struct; libc = ctypes.CDLL(None, use_errno=True)\n"
            "how = ctypes.create_string_buffer(struct.pack('<QQQ', 0o101, 0o640, 0))\n"
            "libc.syscall(437, -100, b'f1', how, 24)",
            "openat2",
        ),
    ],
)
def test_file_write_every_open_variant(watch: Watch, tmp_path: Path, call: str, syscall: str) -> None:
    pid, events = watch.python(f"import os\n{call}", cwd=tmp_path)
    ev = one(events, "file_write", **{"process.pid": pid, "syscall.name": syscall})
    assert ev["file.path"] == str(tmp_path / "f1")
    assert ev["file.mode"] == 0o640 and ev["event.outcome"] == "success"


def test_truncate_is_a_write(watch: Watch, tmp_path: Path) -> None:
    (tmp_path / "t").write_text("content")
    pid, events = watch.python("import os; os.truncate('t', 0)", cwd=tmp_path)
    one(
        events,
        "file_write",
        **{"process.pid": pid, "syscall.name": "truncate", "file.path": str(tmp_path / "t")},
    )


def test_read_only_opens_are_filtered_in_the_kernel(watch: Watch, tmp_path: Path) -> None:
    (tmp_path / "r").write_text("x")
    pid, events = watch.python("open('r').read(); open('w', 'a').write('y')", cwd=tmp_path)
    paths = [e.get("file.path") for e in events if e.pid == pid and e.action.startswith("file_")]
    assert str(tmp_path / "w") in paths and str(tmp_path / "r") not in paths


def test_delete_and_rename_every_variant(watch: Watch, tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        for n in ('a', 'b', 'c', 'd', 'e'):
            open(n, 'w').close()
        os.mkdir('dir1'); os.mkdir('dir2')
        libc.syscall(87, b'a')                          # unlink
        libc.syscall(263, -100, b'b', 0)                # unlinkat
        libc.syscall(84, b'dir1')                       # rmdir
        libc.syscall(263, -100, b'dir2', 0x200)         # unlinkat(AT_REMOVEDIR)
        libc.syscall(82, b'c', b'c2')                   # rename
        fd = os.open('.', os.O_RDONLY)
        libc.syscall(264, fd, b'd', fd, b'd2')          # renameat, relative to a dirfd
        libc.syscall(316, -100, b'e', -100, b'e2', 0)   # renameat2
        """
    )
    pid, events = watch.python(code, cwd=tmp_path)
    t = str(tmp_path)
    for name, sc in (("a", "unlink"), ("b", "unlinkat"), ("dir1", "rmdir"), ("dir2", "unlinkat")):
        one(events, "file_delete", **{"file.path": f"{t}/{name}", "syscall.name": sc, "process.pid": pid})
    for old, sc in (("c", "rename"), ("d", "renameat"), ("e", "renameat2")):
        ev = one(events, "file_rename", **{"file.path": f"{t}/{old}", "syscall.name": sc, "process.pid": pid})
        assert ev["file.target_path"] == f"{t}/{old}2"


def test_chmod_and_chown_every_variant(watch: Watch, tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        open('m', 'w').close()
        libc.syscall(90, b'm', 0o700)                  # chmod
        fd = os.open('m', os.O_RDONLY)
        libc.syscall(91, fd, 0o701)                    # fchmod
        libc.syscall(268, -100, b'm', 0o702)           # fchmodat
        libc.syscall(452, -100, b'm', 0o703, 0)        # fchmodat2 (ENOSYS before 6.6: still reported)
        libc.syscall(92, b'm', os.getuid(), -1)        # chown
        libc.syscall(93, fd, -1, os.getgid())          # fchown
        libc.syscall(94, b'm', os.getuid(), -1)        # lchown
        libc.syscall(260, -100, b'm', os.getuid(), -1, 0)  # fchownat
        """
    )
    pid, events = watch.python(code, cwd=tmp_path)
    path = str(tmp_path / "m")
    for mode, sc in ((0o700, "chmod"), (0o701, "fchmod"), (0o702, "fchmodat"), (0o703, "fchmodat2")):
        one(
            events,
            "file_chmod",
            **{"file.path": path, "file.mode": mode, "syscall.name": sc, "process.pid": pid},
        )
    for sc in ("chown", "fchown", "lchown", "fchownat"):
        one(events, "file_chown", **{"file.path": path, "syscall.name": sc})
    assert one(events, "file_chown", **{"syscall.name": "chown"})["file.uid"] == os.getuid()


def test_paths_of_files_outside_any_tree_follow_d_path(watch: Watch, tmp_path: Path) -> None:
    """What /proc/PID/exe and /proc/PID/fd/N show: a memfd is "/memfd:NAME (deleted)" (simple_dname of an
    internal mount's pseudo dentry), a pipe "pipe:[INO]", an unlinked file "PATH (deleted)"."""
    code = textwrap.dedent(
        """
        import os, shutil
        fd = os.memfd_create('assay-test', 0)
        with open('/bin/true', 'rb') as src:
            os.write(fd, src.read())
        if os.fork() == 0:
            os.execv(f'/proc/self/fd/{fd}', ['memfd-child'])
        os.wait()
        shutil.copy('/bin/true', 'gone')
        keep = os.open('gone', os.O_RDONLY)
        os.unlink('gone')
        if os.fork() == 0:
            os.execv(f'/proc/self/fd/{keep}', ['deleted-child'])
        os.wait()
        r, w = os.pipe()
        os.fchmod(r, 0o600)
        print(os.fstat(r).st_ino, flush=True)
        """
    )
    out = tmp_path / "out"
    with out.open("w") as fh:
        pid, events = watch.run([sys.executable, "-c", code], cwd=tmp_path, stdout=fh)
    pipe_ino = int(out.read_text().split()[0])
    memfd = one(events, "exec", **{"process.args": ["memfd-child"]})
    assert memfd["process.executable"] == "/memfd:assay-test (deleted)"
    deleted = one(events, "exec", **{"process.args": ["deleted-child"]})
    assert deleted["process.executable"] == f"{tmp_path}/gone (deleted)"
    one(events, "file_chmod", **{"process.pid": pid, "file.path": f"pipe:[{pipe_ino}]"})


def test_sensitive_file_read_by_name_pattern(watch: Watch, tmp_path: Path) -> None:
    ssh = tmp_path / "home" / ".ssh"
    ssh.mkdir(parents=True)
    (ssh / "id_test").write_text("-----BEGIN FAKE KEY-----\n")
    pid, events = watch.run(["/bin/cat", "id_test"], cwd=ssh, stdout=subprocess.DEVNULL)
    ev = one(events, "file_read_sensitive", **{"process.pid": pid})
    assert ev["file.path"] == str(ssh / "id_test")
    assert ev["file.sensitive_match"] == "directory"
    assert ev["process.args"] == ["/bin/cat", "id_test"]


def test_connect_bind_listen_accept_ipv4_ipv6_unix(watch: Watch, tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import socket
        for fam, host in ((socket.AF_INET, '127.0.0.1'), (socket.AF_INET6, '::1')):
            srv = socket.socket(fam); srv.bind((host, 0)); srv.listen()
            port = srv.getsockname()[1]
            cli = socket.socket(fam); cli.connect((host, port))
            conn, _ = srv.accept()
            conn.close(); cli.close(); srv.close()
        u = socket.socket(socket.AF_UNIX); u.bind('s.sock'); u.listen()
        c = socket.socket(socket.AF_UNIX); c.connect('s.sock')
        u.accept()[0].close(); c.close(); u.close()
        """
    )
    pid, events = watch.python(code, cwd=tmp_path)
    for fam, ip in (("ipv4", "127.0.0.1"), ("ipv6", "::1")):
        b = one(events, "bind", **{"network.family": fam, "source.ip": ip, "process.pid": pid})
        port = b["source.port"]
        assert port > 0
        one(events, "listen", **{"network.family": fam, "source.port": port})
        c = one(events, "connect", **{"destination.ip": ip, "destination.port": port})
        assert c["network.transport"] == "tcp" and c["source.port"] > 0 and c["event.outcome"] == "success"
        a = one(events, "accept", **{"destination.port": port, "source.port": c["source.port"]})
        assert a["source.ip"] == ip
    one(events, "bind", **{"unix.path": "s.sock", "network.family": "unix"})
    one(events, "connect", **{"unix.path": "s.sock", "network.transport": "unix"})


def test_credentials_ptrace_memfd_prctl_kill_bpf_module(watch: Watch, tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import ctypes, os, signal, struct, time
        libc = ctypes.CDLL(None, use_errno=True)
        os.setgid(os.getgid()); os.setuid(os.getuid())            # setgid, setuid (to themselves: harmless)
        os.setresuid(-1, os.geteuid(), -1)
        fd = libc.syscall(319, b'assay-test', 0); os.close(fd)     # memfd_create
        libc.prctl(15, b'assay-renamed', 0, 0, 0)                  # PR_SET_NAME
        child = os.fork()
        if child == 0:
            time.sleep(30); os._exit(0)
        libc.ptrace(16, child, 0, 0)                               # PTRACE_ATTACH our own child
        os.kill(child, signal.SIGKILL); os.waitpid(child, 0)
        # a 2-instruction socket filter (r0 = 0; exit): loads nothing into the running kernel's paths
        insns = struct.pack('<BBhiBBhi', 0xb7, 0, 0, 0, 0x95, 0, 0, 0)
        buf = ctypes.create_string_buffer(insns)
        lic = ctypes.create_string_buffer(b'GPL')
        attr = struct.pack('<IIQQ', 1, 2, ctypes.addressof(buf), ctypes.addressof(lic)).ljust(48, b'\\0')
        attr += b'assay_t'.ljust(16, b'\\0')
        attr = ctypes.create_string_buffer(attr.ljust(128, b'\\0'))
        pfd = libc.syscall(321, 5, attr, 128)
        if pfd >= 0: os.close(pfd)
        libc.syscall(313, -1, b'', 0)                              # finit_module on no file: EBADF/ENOSYS
        """
    )
    pid, events = watch.python(code, cwd=tmp_path)
    one(events, "setgid", **{"process.pid": pid, "group.target.id": os.getgid()})
    one(events, "setuid", **{"process.pid": pid, "syscall.name": "setuid", "user.target.id": os.getuid()})
    one(events, "setuid", **{"process.pid": pid, "syscall.name": "setresuid"})
    one(events, "memfd_create", **{"memfd.name": "assay-test"})
    one(events, "prctl", **{"prctl.option": 15})
    pt = one(events, "ptrace", **{"ptrace.request": 16})
    assert pt["ptrace.target_pid"] > 0
    # the target is a fork of the tracer (no exec): the tree names its executable, the tracer's own
    assert pt["ptrace.target_executable"] == pt["process.executable"]
    kill = one(events, "kill", **{"signal.number": 9, "signal.target_pid": pt["ptrace.target_pid"]})
    assert kill["signal.target_executable"] == pt["process.executable"]
    bpf = one(events, "bpf_load", **{"process.pid": pid})
    assert bpf["bpf.prog_type"] == 1 and bpf["bpf.prog_name"] == "assay_t"
    mod = one(events, "module_load", **{"process.pid": pid})
    assert mod["event.outcome"] == "failure"


def test_mount_in_a_private_namespace(watch: Watch, tmp_path: Path) -> None:
    target = tmp_path / "mnt"
    target.mkdir()
    script = f"mount -t tmpfs assay-tmpfs {target} && umount {target}"
    _, events = watch.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script])
    m = one(events, "mount", **{"mount.target": str(target)})
    assert m["mount.fstype"] == "tmpfs" and m["mount.source"] == "assay-tmpfs"
    assert "namespace.mnt" in m  # a new mount namespace, not the host's
    one(events, "umount", **{"mount.target": str(target)})


def test_namespaces_and_namespace_pid(watch: Watch, tmp_path: Path) -> None:
    pid, events = watch.run(
        [
            "unshare",
            "--fork",
            "--pid",
            "--net",
            "--mount",
            "--mount-proc",
            "/bin/sh",
            "-c",
            "/bin/true inside",
        ]
    )
    ev = one(events, "exec", **{"process.args": ["/bin/true", "inside"]})
    assert ev["process.ns_pid"] == 2  # sh is 1 inside the new pid namespace
    for ns in ("pid", "net", "mnt"):
        assert ev[f"namespace.{ns}"] != os.stat(f"/proc/self/ns/{ns}").st_ino
    assert ev["process.pid"] != 2  # the host pid
    assert any(x.startswith(f"{pid}:") for x in ev.lineage)


def test_the_sensor_does_not_report_itself(watch: Watch, tmp_path: Path) -> None:
    (tmp_path / "self-write").write_text("x")  # written by this process, which runs the sensor
    pid, events = watch.run(["/bin/true", "after-self-write"])
    one(events, "exec", **{"process.pid": pid})  # the stream was live while we wrote
    assert not [e for e in watch.events if e.pid == os.getpid()]
    assert not [e for e in watch.events if e.get("file.path") == str(tmp_path / "self-write")]
