"""The sandbox's two inner processes (started as ``python -m assay.sandbox CONFIG_JSON``).

Process tree, as the host sees it::

    launcher (assay, host)             host relay: unix socket -> 127.0.0.1:PORT
    └─ outer  (this module, host pid namespace)   unshare(mount, pid, net, uts, ipc), fork, wait
       └─ init   (pid 1 of the new pid namespace)  builds the root, drops capabilities, inside relay, reaps
          └─ the command (the agent), and everything it starts

Why two processes here: ``unshare(CLONE_NEWPID)`` does not move the caller; its *next child* is pid 1 of the
new namespace. The outer process therefore stays in the host's pid namespace (but already in the new mount,
net, uts and ipc namespaces, which it never uses) and only waits. Both die with their parent
(``PR_SET_PDEATHSIG``), and when the init exits the kernel kills every process left in its pid namespace:
nothing started inside outlives the sandbox.

Why pid 1 is this small Python process and not the command: a pid namespace's init is immune to signals it
has no handler for *from inside* the namespace (``kill -9 -1`` inside kills everything but it), and it must
reap orphans. ``reboot(2)`` inside a non-initial pid namespace does not reboot the host: it ends this init
(and needs CAP_SYS_BOOT, which the command does not get anyway).

The init reports to the launcher on an inherited pipe: ``ok`` once the root is built, or the error.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

from assay.sandbox import _syscalls as sc
from assay.sandbox._errors import SandboxError
from assay.sandbox._relay import tcp_to_unix
from assay.sandbox._rootfs import SERVER_SOCKET, build_and_enter

NAMESPACES = sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWNET | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC

# Capabilities removed from the bounding set, so no process started inside can ever hold them. What each
# would reach on the host (these are not namespaced, or this sandbox creates no user namespace for them):
DROPPED_CAPABILITIES = {
    "CAP_SYS_MODULE": 16,  # load kernel modules
    "CAP_SYS_RAWIO": 17,  # /dev/mem, ioperm, raw block I/O
    "CAP_SYS_PACCT": 20,  # host-wide process accounting
    "CAP_SYS_ADMIN": 21,  # mount (devtmpfs → the host's disks), swapon, bpf, sethostname ... the big one
    "CAP_SYS_BOOT": 22,  # reboot, kexec
    "CAP_SYS_NICE": 23,  # real-time priority that starves the host
    "CAP_SYS_TIME": 25,  # the host's clock
    "CAP_SYS_TTY_CONFIG": 26,  # vhangup of host terminals
    "CAP_MKNOD": 27,  # device nodes for the host's disks
    # CAP_AUDIT_WRITE (29) stays, as in Docker's default set: sudo, login and su refuse to run when
    # their audit message is refused (EPERM), so dropping it turned every procedure using sudo into a
    # failed command. A record it writes carries the sender's real pid and loginuid.
    "CAP_AUDIT_CONTROL": 30,  # change or delete audit rules
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,  # LSM policy
    "CAP_SYSLOG": 34,  # read or clear the host's kernel log
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,  # perf_event_open on the host
    "CAP_BPF": 39,  # load eBPF programs (blind or fool the sensor)
    "CAP_CHECKPOINT_RESTORE": 40,
}

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


@dataclass
class InitConfig:
    sandbox_id: str
    state_dir: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    server_port: int | None = None
    server_socket: str | None = None  # host path of the host relay's socket
    status_fd: int = -1
    hostname: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> InitConfig:
        return cls(**json.loads(text))


def _loopback_up() -> None:
    # A new network namespace has a loopback device that is down; "ip link set lo up" by ioctl.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def _drop_bounding_set() -> None:
    for name, cap in DROPPED_CAPABILITIES.items():
        if sc.prctl(sc.PR_CAPBSET_READ, cap) == 1:
            sc.prctl(sc.PR_CAPBSET_DROP, cap)
        if sc.prctl(sc.PR_CAPBSET_READ, cap) != 0:
            raise SandboxError(f"{name} is still in the bounding set after PR_CAPBSET_DROP")
    sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)


def _report(fd: int, text: str) -> None:
    if fd >= 0:
        os.write(fd, text.encode("utf-8", "replace")[:4000] + b"\n")
        os.close(fd)


def _exit_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def init_main(cfg: InitConfig) -> int:
    """Pid 1 of the sandbox. Returns the command's exit code (128 + signal when killed)."""
    sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)  # the outer process died: end the sandbox
    try:
        build_and_enter(Path(cfg.state_dir), cfg.server_socket)
        if cfg.hostname:
            socket.sethostname(cfg.hostname)
        _loopback_up()
        relay = tcp_to_unix(cfg.server_port, SERVER_SOCKET) if cfg.server_port else None
        _drop_bounding_set()
        # The init itself needs no capability from here on (relay, reaping). Holding none means a process
        # inside that ptraces pid 1 gains nothing by it.
        sc.clear_own_capabilities()
    except (OSError, SandboxError) as exc:
        _report(cfg.status_fd, f"error: {exc}")
        return 125
    if relay:
        relay.start()
    env = {**os.environ, **cfg.env, "ASSAY_SANDBOX": cfg.sandbox_id}
    try:
        child = os.posix_spawnp(cfg.argv[0], cfg.argv, env)
    except OSError as exc:
        _report(cfg.status_fd, f"error: cannot start {cfg.argv[0]!r} inside the sandbox: {exc}")
        return 127
    _report(cfg.status_fd, "ok")
    # Reap everything (orphans re-parent to pid 1) until the command itself exits.
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 1  # cannot happen while the command runs; kept so a kernel surprise ends the sandbox
        if pid == child:
            return _exit_code(status)


def outer_main(cfg: InitConfig) -> int:
    sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)  # the launcher died: end the sandbox
    try:
        sc.unshare(NAMESPACES)
    except SandboxError as exc:
        _report(cfg.status_fd, f"error: {exc}")
        return 125
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = init_main(cfg)
        finally:
            os._exit(code)
    os.close(cfg.status_fd)

    def stop(signum: int, frame: object) -> None:
        # SIGKILL to the init ends the whole pid namespace at once: there is nothing inside worth a
        # graceful stop (its file system is thrown away anyway).
        os.kill(pid, signal.SIGKILL)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _, status = os.waitpid(pid, 0)
    return _exit_code(status)
