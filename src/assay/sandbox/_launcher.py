"""Host side of a sandbox: its state directory, the host relay, the inner processes, and the clean-up.

The state directory (``/run/assay/sandbox/<id>`` by default) holds only the host relay's unix socket and an
empty mount point; the sandbox mounts its tmpfs on that mount point inside its own mount namespace, so the
host never sees a byte of what is written inside. The launcher removes the directory when the sandbox ends.
"""

from __future__ import annotations

import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from assay.sandbox._errors import SandboxError
from assay.sandbox._init import InitConfig
from assay.sandbox._relay import Relay, unix_to_tcp

DEFAULT_STATE_ROOT = Path("/run/assay/sandbox")
SETUP_TIMEOUT = 30.0


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii")
    except OSError:
        return []
    return [int(p) for p in text.split()]


def namespace_inode(pid: int | str, kind: str) -> int:
    """The inode of ``/proc/<pid>/ns/<kind>`` (``pid``, ``mnt``, ``net``, ...), as the sensor reports it."""
    link = str(Path(f"/proc/{pid}/ns/{kind}").readlink())  # "pid:[4026532178]"
    return int(link.split("[", 1)[1].rstrip("]"))


@dataclass(frozen=True)
class SandboxPids:
    """Host pids of a sandbox's processes: the launcher (host relay), outer, init (pid 1), the command."""

    launcher: int
    outer: int
    init: int
    command: int

    @property
    def infrastructure(self) -> list[int]:
        """The sandbox's own processes: not the attack, so the watcher ignores what they do."""
        return [self.launcher, self.outer, self.init]


def find_pids(launcher_pid: int, timeout: float = 30.0) -> SandboxPids:
    """The host pids under an ``assay sandbox run`` launcher, once its command has started.

    Read from the host's /proc (``task/<pid>/children``), so they are host pids whatever the command's pid
    inside is. Raises :class:`SandboxError` when the chain is not complete within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        outer = _children(launcher_pid)
        init = _children(outer[0]) if outer else []
        command = _children(init[0]) if init else []
        if command:
            return SandboxPids(launcher_pid, outer[0], init[0], min(command))
        if time.monotonic() > deadline or not Path(f"/proc/{launcher_pid}").exists():
            raise SandboxError(
                f"no sandboxed command under launcher pid {launcher_pid} within {timeout:.0f} s "
                f"(outer {outer}, init {init})"
            )
        time.sleep(0.05)


@dataclass
class Sandbox:
    """One sandboxed command. ``start()``, then ``wait()`` or ``stop()``; always ``close()`` (or ``with``)."""

    argv: list[str]
    server_port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    sandbox_id: str = field(default_factory=lambda: f"sbx-{secrets.token_hex(4)}")
    state_root: Path = DEFAULT_STATE_ROOT
    stdout: IO[bytes] | int | None = None
    stderr: IO[bytes] | int | None = None
    hostname: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    _relay: Relay | None = None

    @property
    def state_dir(self) -> Path:
        return self.state_root / self.sandbox_id

    # -- life cycle -----------------------------------------------------------------------------------------
    def start(self) -> Sandbox:
        if os.geteuid() != 0:
            raise SandboxError("the sandbox needs root (mount, pid and network namespaces, pivot_root)")
        if not self.argv:
            raise SandboxError("no command to run in the sandbox")
        self.state_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.state_dir.mkdir(mode=0o700)
        (self.state_dir / "fs").mkdir(mode=0o700)
        socket_path: str | None = None
        if self.server_port is not None:
            socket_path = str(self.state_dir / "server.sock")
            self._relay = unix_to_tcp(socket_path, self.server_port).start()
            Path(socket_path).chmod(0o600)
        read_fd, write_fd = os.pipe()
        cfg = InitConfig(
            sandbox_id=self.sandbox_id,
            state_dir=str(self.state_dir),
            argv=list(self.argv),
            env=dict(self.env),
            server_port=self.server_port,
            server_socket=socket_path,
            status_fd=write_fd,
            hostname=self.hostname,
        )
        config_read, config_write = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "assay.sandbox", "--config-fd", str(config_read)],
                pass_fds=(write_fd, config_read),
                stdin=subprocess.DEVNULL,
                stdout=self.stdout,
                stderr=self.stderr,
            )
            with os.fdopen(config_write, "wb") as pipe:
                config_write = -1
                pipe.write(cfg.to_json().encode("utf-8"))
        finally:
            os.close(write_fd)
            os.close(config_read)
            if config_write >= 0:
                os.close(config_write)
        try:
            status = self._read_status(read_fd)
        finally:
            os.close(read_fd)
        if status != "ok":
            self.close()
            raise SandboxError(f"sandbox {self.sandbox_id} did not start: {status}")
        return self

    def _read_status(self, fd: int) -> str:
        deadline = time.monotonic() + SETUP_TIMEOUT
        data = b""
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return f"no word from the sandbox init within {SETUP_TIMEOUT:.0f} s"
            chunk = os.read(fd, 4096)
            if not chunk:
                code = self.proc.wait(5.0) if self.proc else None
                return f"the sandbox init exited (code {code}) before it reported"
            data += chunk
        return data.decode("utf-8", "replace").strip()

    def wait(self, timeout: float | None = None) -> int:
        if self.proc is None:
            raise SandboxError("the sandbox was not started")
        return self.proc.wait(timeout)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the outer process (SIGTERM/SIGINT end the sandbox); safe in a signal handler."""
        if self.proc is not None and self.proc.returncode is None:
            os.kill(self.proc.pid, signum)

    def stop(self, timeout: float = 10.0) -> int | None:
        """End the sandbox: its outer process kills the init, and with it every process inside."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def close(self) -> None:
        self.stop()
        if self.proc is not None:
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()
        if self._relay is not None:
            self._relay.close()
            self._relay = None
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- host-side identities -------------------------------------------------------------------------------
    @property
    def outer_pid(self) -> int:
        if self.proc is None:
            raise SandboxError("the sandbox was not started")
        return self.proc.pid

    def init_pid(self) -> int | None:
        """Host pid of the sandbox's pid 1, or None once it has gone."""
        kids = _children(self.outer_pid)
        return kids[0] if kids else None

    def command_pid(self) -> int | None:
        """Host pid of the command the sandbox runs (the agent), or None once it has gone."""
        init = self.init_pid()
        if init is None:
            return None
        kids = _children(init)
        return min(kids) if kids else None  # the command is the init's first child; orphans come later

    def pid_namespace(self) -> int:
        init = self.init_pid()
        if init is None:
            raise SandboxError(f"sandbox {self.sandbox_id} has no init process")
        return namespace_inode(init, "pid")
