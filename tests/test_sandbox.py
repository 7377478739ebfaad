"""The sandbox (issue 10, ``--sandbox``): namespaces, file system, network path, capabilities, and the
done-when test: disruptive commands take effect inside, the host's trees stay byte-identical.

Every dangerous command runs only after the script's guard (tests/sandbox_helpers.GUARD) has proven from
inside that it is in the sandbox; the tests also check the guard refuses outside one.
"""

from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from assay.events import Event
from assay.sandbox import DROPPED_CAPABILITIES, Sandbox, SandboxError, overlaid_submounts, parse_mountinfo
from sandbox_helpers import GUARD, HOST_TREES, differences, guard_env, host_namespaces, manifest

root = pytest.mark.root


def run_in_sandbox(script: str, *, server_port: int | None = None, timeout: float = 60.0) -> tuple[int, str]:
    sandbox = Sandbox(
        ["sh", "-c", script],
        server_port=server_port,
        env=guard_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    with sandbox:
        assert sandbox.proc is not None and sandbox.proc.stdout is not None
        out = sandbox.proc.stdout.read().decode("utf-8", "replace")
        code = sandbox.wait(timeout)
    assert not sandbox.state_dir.exists(), "the sandbox left its state directory behind"
    return code, out


# -- pure parts ---------------------------------------------------------------------------------------------
MOUNTINFO = """\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
23 22 0:5 / /proc rw - proc proc rw
24 22 0:20 / /sys rw - sysfs sysfs rw
25 22 0:6 / /dev rw - devtmpfs devtmpfs rw
26 22 254:1 / /home rw - xfs /dev/vdb rw
27 22 0:30 / /tmp rw - tmpfs tmpfs rw
28 22 0:31 / /mnt/tool ro - tmpfs tmpfs ro
29 22 254:0 /run/netns /run/netns rw - ext4 /dev/vda rw
30 26 254:2 / /home/my\\040data rw - ext4 /dev/vdc rw
31 22 0:40 / /run/assay/sandbox/x/fs rw - tmpfs tmpfs rw
32 22 0:41 / /snap/core rw - squashfs /dev/loop0 ro
33 22 0:42 / /media/fuse rw - fuse.sshfs remote rw
"""


def test_submounts_overlaid_are_real_file_systems_outside_the_replaced_trees() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert [m.target for m in mounts][4] == "/home"
    assert overlaid_submounts(mounts, "/run/assay/sandbox/x") == ["/home", "/tmp", "/home/my data"]


# -- the launcher -------------------------------------------------------------------------------------------
@root
def test_the_guard_refuses_outside_a_sandbox() -> None:
    proc = subprocess.run(
        ["sh", "-c", GUARD + "echo DANGEROUS PART REACHED"],
        env={**os.environ, **guard_env(), "ASSAY_SANDBOX": "fake"},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert proc.returncode == 99, proc.stdout + proc.stderr
    assert "DANGEROUS PART REACHED" not in proc.stdout


@root
def test_fresh_namespaces_host_paths_and_a_minimal_dev_proc_sys_run() -> None:
    script = (
        GUARD
        + r"""
echo "pid=$$"
for kind in mnt pid net uts ipc; do echo "ns $kind $(readlink /proc/self/ns/$kind)"; done
echo "passwd=$(sha256sum < /etc/passwd | cut -c1-64)"
echo "dev: $(ls /dev | tr '\n' ' ')"
echo "run: $(find /run | sort | tr '\n' ' ')"
echo "procs: $(ls /proc | grep -c '^[0-9]')"
touch /sys/kernel/x 2>/dev/null && echo "sys writable" || echo "sys read-only"
echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo "proc/sys writable" || echo "proc/sys read-only"
grep ^Cap /proc/self/status
echo "sandbox=$ASSAY_SANDBOX"
"""
    )
    code, out = run_in_sandbox(script)
    assert code == 0, out
    assert "GUARD: ok" in out
    host = host_namespaces()
    for kind, link in host.items():
        assert f"ns {kind} {link}" not in out, f"{kind} namespace shared with the host\n{out}"
        assert f"ns {kind} {kind}:[" in out
    import hashlib

    assert f"passwd={hashlib.sha256(Path('/etc/passwd').read_bytes()).hexdigest()}" in out  # host paths
    dev = out.split("dev: ", 1)[1].splitlines()[0].split()
    assert set(dev) == {"fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout",
                        "tty", "urandom", "zero"}  # fmt: skip
    run = out.split("run: ", 1)[1].splitlines()[0].split()
    assert run == ["/run", "/run/lock"], "an empty /run (no host sockets)"
    assert int(out.split("procs: ", 1)[1].splitlines()[0]) < 10, "only the sandbox's own processes in /proc"
    assert "sys read-only" in out and "proc/sys read-only" in out
    caps = {
        line.split(":")[0]: int(line.split()[1], 16) for line in out.splitlines() if line.startswith("Cap")
    }
    for name, bit in DROPPED_CAPABILITIES.items():
        assert not caps["CapBnd"] & (1 << bit), f"{name} in the bounding set"
        assert not caps["CapEff"] & (1 << bit), f"{name} effective"
    assert caps["CapEff"] & (1 << 1), "root inside keeps CAP_DAC_OVERRIDE: procedures run as root"
    assert "sandbox=sbx-" in out


@root
def test_a_failed_start_says_which_step_failed() -> None:
    with pytest.raises(SandboxError, match="cannot start '/nonexistent/cmd'"):
        Sandbox(["/nonexistent/cmd"]).start()


class _Echo:
    """A TCP echo server on host loopback (stands for the Assay server, or for any other host service)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                while data := conn.recv(4096):
                    conn.sendall(b"echo:" + data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def echo_pair() -> Iterator[tuple[_Echo, _Echo]]:
    server, other = _Echo(), _Echo()
    yield server, other
    server.close()
    other.close()


CONNECT = """
import socket, sys
s = socket.socket()
s.settimeout(5)
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
    s.sendall(b"ping")
    print("port", sys.argv[1], "reply", s.recv(100).decode())
except OSError as exc:
    print("port", sys.argv[1], "refused", exc.errno)
"""


@root
def test_only_the_server_port_is_reachable(echo_pair: tuple[_Echo, _Echo], tmp_path: Path) -> None:
    server, other = echo_pair
    # A unix socket of the host, in a directory the sandbox sees through its overlay: the overlay's inode is
    # not the one the socket is bound to, so connect() is refused (no path to host daemons' sockets).
    host_socket = socket.socket(socket.AF_UNIX)
    host_socket.bind(str(tmp_path / "host.sock"))
    host_socket.listen(1)
    py = sys.executable
    unix = f"import socket; socket.socket(socket.AF_UNIX).connect('{tmp_path}/host.sock'); "
    unix += "print('unix CONNECTED')"
    script = f"""{py} -c '{CONNECT}' {server.port}; {py} -c '{CONNECT}' {other.port}
{py} -c 'import socket; print("routes", open("/proc/net/route").read().count(chr(10)) - 1)'
{py} -c "{unix}" 2>&1 | tail -1
"""
    code, out = run_in_sandbox(script, server_port=server.port)
    assert code == 0, out
    assert f"port {server.port} reply echo:ping" in out, out
    assert f"port {other.port} refused" in out, out  # another loopback port of the host: not reachable
    assert other.accepted == 0
    assert "routes 0" in out, "no route anywhere: the namespace has only its loopback"
    assert "ConnectionRefusedError" in out and "unix CONNECTED" not in out, out
    host_socket.close()


@root
def test_reboot_inside_a_pid_namespace_ends_only_that_namespace() -> None:
    """The kernel guarantee the sandbox rests on, shown without the sandbox's capability drop: a root process
    holding CAP_SYS_BOOT calls reboot(RB_AUTOBOOT) as pid 1 of a fresh pid namespace. Guard: it calls it
    only when getpid() == 1 *and* its pid namespace differs from the host's, which the host's real init
    cannot satisfy. The namespace's init is killed by SIGHUP; this machine keeps running."""
    code = (
        "import ctypes, os, sys\n"
        "if os.getpid() != 1 or os.readlink('/proc/self/ns/pid') == sys.argv[1]:\n"
        "    sys.exit(99)\n"
        "ctypes.CDLL(None, use_errno=True).reboot(0x01234567)\n"  # RB_AUTOBOOT
        "sys.exit(98)\n"
    )
    before = Path("/proc/stat").read_text().split("btime ")[1].split()[0]
    proc = subprocess.run(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            sys.executable,
            "-c",
            code,
            os.readlink("/proc/self/ns/pid"),
        ],
        capture_output=True,
        timeout=30,
    )
    # util-linux unshare re-raises the child's fatal signal on itself
    assert proc.returncode in (-signal.SIGHUP, 128 + signal.SIGHUP), (proc.returncode, proc.stderr)
    assert Path("/proc/stat").read_text().split("btime ")[1].split()[0] == before  # same boot


DISRUPTIVE = r"""
# the guard has passed: everything below runs inside the sandbox only
sleep 300 & victim=$!
ls /proc | grep -q "^$victim$" && echo "victim $victim alive"
# kill -9 -1 from a child shell: every process of the namespace but the init dies, this script included,
# so the rest runs in a second shell started afterwards by the test.
sh -c 'kill -9 -1'
echo "NOT REACHED: kill -9 -1 spared this shell"
"""

DESTRUCTIVE = r"""
# the guard has passed: everything below runs inside the sandbox only
echo "tampered" >> /etc/passwd && echo "etc write ok"
useradd -M -s /bin/false assaysbxuser && grep -c '^assaysbxuser:' /etc/passwd | sed 's/^/useradd ok /'
mkdir -p /var/spool/cron/crontabs && echo '* * * * * root /bin/true' > /var/spool/cron/crontabs/root \
  && echo '* * * * * root /bin/true' >> /etc/crontab && echo "crontab ok"
echo x > /usr/local/assay-sbx-marker && echo "usr/local write ok"
echo x > /tmp/assay-sbx-marker && echo "tmp write ok"
rm -rf /etc /root /home /var/spool /usr/local/* /tmp/* 2>&1 | tail -1
[ ! -e /etc/passwd ] && [ ! -e /root ] && echo "rm -rf ok: /etc and /root are gone inside"
refusal() { name=$1; shift; "$@" >/dev/null 2>&1 && echo "$name ACCEPTED" || echo "$name refused"; }
refusal "sysctl domainname" sysctl -w kernel.domainname=assay-sbx
refusal "sysctl swappiness" sysctl -w vm.swappiness=1
refusal date date -s 2001-01-01
refusal mount mount -t tmpfs none /mnt
refusal mknod mknod /dev/assay-disk b 254 0
truncate -s 1M /swapfile-assay && refusal swapon swapon /swapfile-assay
python3 - <<'EOF'
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
def call(name, *args):
    ret = getattr(libc, name)(*args)
    print(name, "ACCEPTED" if ret == 0 else f"refused {errno.errorcode[ctypes.get_errno()]}")
call("init_module", None, 0, b"")          # module load: EPERM (no CAP_SYS_MODULE), ENOSYS without modules
call("reboot", 0x01234567)                 # RB_AUTOBOOT: EPERM, CAP_SYS_BOOT is out of the bounding set
import socket, struct
# audit rules: AUDIT_LIST_RULES (1013) with an ACK request; the kernel answers with NLMSG_ERROR (2) carrying
# -EPERM (no CAP_AUDIT_CONTROL, not the initial pid namespace) where auditctl would get its rules
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 9)
s.settimeout(5)
s.sendto(struct.pack("=IHHII", 16, 1013, 1 | 4, 1, 0), (0, 0))
kind, error = struct.unpack_from("=4xH10xi", s.recv(65536))
print("audit", "refused " + errno.errorcode[-error] if kind == 2 and error < 0 else f"ACCEPTED type {kind}")
EOF
"""


def _inside(events: list[Event], action: str, key: str, value: str) -> list[Event]:
    """Events of `action` with `key` == `value` from a process outside the host's pid and mount namespaces."""
    host_pid_ns, host_mnt_ns = (os.stat(f"/proc/self/ns/{k}").st_ino for k in ("pid", "mnt"))
    return [
        e
        for e in events
        if e.action == action
        and e.get(key) == value
        and e.get("process.pid_ns") not in (None, host_pid_ns)
        and e.get("namespace.mnt") not in (None, host_mnt_ns)
        and e.get("process.ns_pid") != e.pid
    ]


@root
@pytest.mark.kernel
@pytest.mark.slow
def test_disruptive_commands_take_effect_inside_and_leave_the_host_untouched(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # The suite's own temp dirs under /tmp: pytest's, and the throwaway PostgreSQL of tests/conftest.py, which
    # keeps writing its data directory while a session runs.
    exclude = [str(tmp_path_factory.getbasetemp().parent), *glob.glob("/tmp/assay-pg-*")]
    before = manifest(HOST_TREES, exclude)
    host_sleeper = subprocess.Popen(["sleep", "120"])
    boot = Path("/proc/stat").read_text().split("btime ")[1].split()[0]
    from assay.sensor import EbpfSource, SelfNoise

    sensor = EbpfSource(os.uname().nodename, SelfNoise(), sensitive_paths=())
    sensor.start()
    events: list[Event] = []
    try:
        code, out = run_in_sandbox(GUARD + DISRUPTIVE)
        assert "GUARD: ok" in out and "victim" in out, out
        assert code == 128 + signal.SIGKILL, f"kill -9 -1 killed the script inside: {code}\n{out}"
        assert "NOT REACHED" not in out
        assert host_sleeper.poll() is None, "kill -9 -1 inside reached a host process"

        code, out = run_in_sandbox(GUARD + DESTRUCTIVE)
        assert code == 0, out
        effects = (
            "etc write ok",
            "useradd ok 1",
            "crontab ok",
            "usr/local write ok",
            "tmp write ok",
            "rm -rf ok",
        )
        for took_effect in effects:
            assert took_effect in out, (
                f"{took_effect!r} missing: the command did not take effect inside\n{out}"
            )
        for refused in ("sysctl domainname", "sysctl swappiness", "date", "mount", "mknod", "swapon"):
            assert f"{refused} refused" in out, f"{refused} was not refused\n{out}"
        assert "reboot refused EPERM" in out, out
        assert "init_module refused EPERM" in out or "init_module refused ENOSYS" in out, out
        assert "audit refused EPERM" in out, out
        # The host's sensor saw them happen, inside: the same actions, in the sandbox's namespaces.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _inside(
            events, "exec", "process.executable", "/usr/sbin/useradd"
        ):
            events.extend(sensor.poll(0.1))
        events.extend(sensor.poll(0.2))
    finally:
        sensor.stop()
        host_sleeper.kill()
        host_sleeper.wait()
    for action, key, value in (
        ("exec", "process.executable", "/usr/sbin/useradd"),
        ("file_write", "file.path", "/etc/passwd"),
        ("file_write", "file.path", "/var/spool/cron/crontabs/root"),
        ("exec", "process.executable", "/usr/bin/rm"),
    ):
        assert _inside(events, action, key, value), (
            f"no {action} {value} from inside the sandbox seen by the sensor"
        )
    after = manifest(HOST_TREES, exclude)
    diff = differences(before, after)
    assert not diff, "the host's trees changed:\n" + "\n".join(diff[:40])
    assert Path("/proc/stat").read_text().split("btime ")[1].split()[0] == boot
    assert "assaysbxuser" not in Path("/etc/passwd").read_text()


@root
def test_stop_ends_every_process_inside() -> None:
    sandbox = Sandbox(["sh", "-c", "sleep 300 & sleep 300 & wait"])
    with sandbox:
        deadline = time.monotonic() + 10
        inside: list[int] = []
        while len(inside) < 4 and time.monotonic() < deadline:  # init, sh and its two sleeps
            time.sleep(0.05)
            cmd, init = sandbox.command_pid(), sandbox.init_pid()
            if cmd is not None and init is not None:
                kids = Path(f"/proc/{cmd}/task/{cmd}/children").read_text().split()
                inside = [init, cmd, *(int(p) for p in kids)]
        assert len(inside) == 4, inside
        sandbox.stop()
    for pid in inside:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
