"""The Assay agent: one stdlib-only module that runs on any Linux host with python3.

    python3 -m assay.agent --server http://127.0.0.1:8888 --enrol-token TOKEN [--group red] [--paw P]

It enrols with the token (getting a per-agent key), then holds a beacon open until the server has an
instruction, runs it, and posts the result the moment it exists. A result stays with the agent until the
server acknowledges it (by link id), and is sent again after a reconnect; the server records it once. When
the server is unreachable the agent retries with a capped exponential backoff, so it rides out restarts.

Payloads named by an instruction are downloaded into the working directory before the command runs, and
their sha256 is checked against what the server announced; a mismatch fails the link, nothing runs.
Deadman instructions are kept and run when the agent stops: on SIGTERM/SIGINT, when the server kills the
agent, or when the watchdog expires (no successful contact for ``--watchdog`` seconds).

Commands are never put in argv: the
executor runs ``sh /dev/fd/3`` (or ``bash``, ``python3``) with the script on an inherited pipe at fd 3 and
stdin on ``/dev/null`` (docs/architecture.md §7). The agent reports the pid of the process it started and
that process's start time in clock ticks (field 22 of ``/proc/PID/stat``), read before the process is
reaped, so the pair names the process even after its pid is reused.

Nothing outside the standard library may be imported here: the module also runs alone (issue 4's zipapp).
"""

from __future__ import annotations

import argparse
import fcntl
import getpass
import hashlib
import http.client
import json
import os
import platform
import selectors
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

OUTPUT_CAP = 1 << 20  # bytes kept per stream; the rest is counted and reported, never buffered
PAYLOAD_CAP = 256 << 20  # the server's own limit on a payload
BACKOFF_MIN, BACKOFF_MAX = 0.5, 15.0  # seconds between attempts while the server is unreachable
EXIT_GRACE = 0.5  # after the executor exits, how long its children may keep the output pipes open
KILL_GRACE = 2.0
SCRIPT_FD = 3
_HIGH_FD = 10

# executor name → interpreter; the script path /dev/fd/3 is appended.
EXECUTORS: dict[str, tuple[str, ...]] = {
    "sh": ("sh",),
    "bash": ("bash",),
    "python": ("python3",),
    "python3": ("python3",),
}


class AgentError(Exception):
    """A failure the agent reports or retries (stdlib-only: not assay.errors)."""


# -- running one command ---------------------------------------------------------------------------------
def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: the process start time in clock ticks since boot."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses; everything after the last ')' is fields 3...
    rest = raw[raw.rfind(b")") + 2 :].split()
    return int(rest[22 - 3]) if len(rest) > 22 - 3 else None


def _high(fd: int) -> int:
    """Move ``fd`` above 2..3 so the spawn's dup2 actions can never overwrite one another's sources."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _HIGH_FD)
    os.close(fd)
    return moved


class _ExitWatch:
    """A file descriptor that becomes readable when the child exits: a pidfd, or a thread on old kernels."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.status: int | None = None
        self._thread: threading.Thread | None = None
        try:
            self.fd = os.pidfd_open(pid)
            self._pipe_w: int | None = None
        except (AttributeError, OSError):
            self.fd, self._pipe_w = os.pipe()
            self._thread = threading.Thread(target=self._wait, daemon=True)
            self._thread.start()

    def _wait(self) -> None:
        _, self.status = os.waitpid(self.pid, 0)
        assert self._pipe_w is not None
        os.write(self._pipe_w, b"x")

    def reap(self) -> int:
        if self._thread is not None:
            self._thread.join()
        else:
            _, self.status = os.waitpid(self.pid, 0)
        assert self.status is not None
        return self.status

    def close(self) -> None:
        os.close(self.fd)
        if self._pipe_w is not None:
            os.close(self._pipe_w)


@dataclass
class Outcome:
    status: int  # Caldera: 0 success, 1 error or start failure, 124 timeout
    exit_code: int | None
    stdout: str
    stderr: str
    pid: int | None
    start_ticks: int | None
    started_at: float
    ended_at: float


class Runner:
    """Runs scripts with an executor. Kept separate from the beacon logic so tests can swap it."""

    def __init__(self) -> None:
        self._groups: set[int] = set()
        self._lock = threading.Lock()

    def available(self) -> list[str]:
        return [name for name, argv in EXECUTORS.items() if name != "python3" and shutil.which(argv[0])]

    def kill_all(self) -> None:
        """Kill the process groups of commands still running (the agent is stopping)."""
        with self._lock:
            groups = list(self._groups)
        for pgid in groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def run(self, executor: str, script: str, timeout: float) -> Outcome:
        started_at = time.time()
        argv = EXECUTORS.get(executor)
        exe = shutil.which(argv[0]) if argv else None
        if argv is None or exe is None:
            return Outcome(
                1,
                -1,
                "",
                f"executor {executor!r} is not available on this agent",
                None,
                None,
                started_at,
                time.time(),
            )
        fds: list[int] = []
        try:
            script_r, script_w = os.pipe()
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            script_r, out_w, err_w, devnull = (_high(fd) for fd in (script_r, out_w, err_w, devnull))
            fds = [script_r, script_w, out_r, out_w, err_r, err_w, devnull]
            actions = [
                (os.POSIX_SPAWN_DUP2, devnull, 0),
                (os.POSIX_SPAWN_DUP2, out_w, 1),
                (os.POSIX_SPAWN_DUP2, err_w, 2),
                (os.POSIX_SPAWN_DUP2, script_r, SCRIPT_FD),
            ]
            started_at = time.time()
            pid = os.posix_spawn(
                exe, [argv[0], f"/dev/fd/{SCRIPT_FD}"], dict(os.environ), file_actions=actions, setsid=True
            )
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            return Outcome(
                1, -1, "", f"cannot start {executor}: {exc.strerror}", None, None, started_at, time.time()
            )
        ticks = start_ticks(pid)  # before anything can reap it: a zombie still has its /proc entry
        with self._lock:
            self._groups.add(pid)
        for fd in (script_r, out_w, err_w, devnull):
            os.close(fd)
        try:
            return self._collect(pid, ticks, script_w, out_r, err_r, script, timeout, started_at)
        finally:
            with self._lock:
                self._groups.discard(pid)

    def _collect(
        self,
        pid: int,
        ticks: int | None,
        script_w: int,
        out_r: int,
        err_r: int,
        script: str,
        timeout: float,
        started_at: float,
    ) -> Outcome:
        writer = threading.Thread(target=_write_all, args=(script_w, script.encode()), daemon=True)
        writer.start()  # a thread: a script larger than the pipe buffer must not block the reads below
        watch = _ExitWatch(pid)
        sel = selectors.DefaultSelector()
        buffers = {out_r: bytearray(), err_r: bytearray()}
        dropped = {out_r: 0, err_r: 0}
        for fd in (out_r, err_r, watch.fd):
            sel.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        status: int | None = None
        timed_out = False
        try:
            while True:
                open_streams = [fd for fd in buffers if fd in sel.get_map()]
                if status is not None and not open_streams:
                    break
                now = time.monotonic()
                if status is not None and now >= deadline:
                    break  # exited; children still hold the pipes: stop reading, keep what we have
                if status is None and now >= deadline:
                    if timed_out:
                        break  # SIGKILL did not end it within the grace (uninterruptible sleep)
                    timed_out = True
                    _killpg(pid)
                    deadline = now + KILL_GRACE
                    continue
                for key, _ in sel.select(max(0.0, deadline - now)):
                    fd = int(key.fd)
                    if fd == watch.fd:
                        sel.unregister(fd)
                        status = watch.reap()
                        if not timed_out:
                            deadline = min(deadline, time.monotonic() + EXIT_GRACE)
                        continue
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        sel.unregister(fd)
                        continue
                    room = OUTPUT_CAP - len(buffers[fd])
                    buffers[fd] += chunk[:room]
                    dropped[fd] += max(0, len(chunk) - room)
        finally:
            sel.close()
            if status is None:
                _killpg(pid)
                status = watch.reap()
            watch.close()
            for fd in (out_r, err_r):
                os.close(fd)
            writer.join(timeout=1.0)
        ended_at = time.time()
        exit_code = os.waitstatus_to_exitcode(status)
        stdout = buffers[out_r].decode("utf-8", "replace")
        stderr = buffers[err_r].decode("utf-8", "replace")
        for fd, name in ((out_r, "stdout"), (err_r, "stderr")):
            if dropped[fd]:
                stderr += f"\n[assay agent: {name} truncated, {dropped[fd]} bytes dropped]"
        if timed_out:
            stdout = "Timeout reached, process killed\n" + stdout  # Sandcat's marker
            return Outcome(124, exit_code, stdout, stderr, pid, ticks, started_at, ended_at)
        return Outcome(
            0 if exit_code == 0 else 1, exit_code, stdout, stderr, pid, ticks, started_at, ended_at
        )


def _write_all(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BrokenPipeError:
        pass  # the executor exited without reading its whole script; its exit status says why
    finally:
        os.close(fd)


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# -- talking to the server ---------------------------------------------------------------------------------
class Transport(Protocol):
    """The agent's view of a contact: :class:`HttpTransport`, or :class:`FakeTransport` in tests."""

    def enrol(self, profile: dict[str, Any]) -> dict[str, Any]: ...
    def beacon(self, key: str, wait: float) -> dict[str, Any]: ...
    def results(self, key: str, results: list[dict[str, Any]]) -> dict[str, Any]: ...
    def download(self, key: str, name: str, paw: str) -> tuple[bytes, str | None]: ...


class Unauthorized(AgentError):
    """The server no longer knows our key: enrol again."""


class PinMismatch(AgentError):
    """The server's TLS certificate is not the one pinned: the agent refuses to talk to it."""


def normalise_pin(pin: str) -> str:
    """A SHA-256 fingerprint as lowercase hex, whether given as ``AB:CD:...`` or ``abcd...``."""
    hexed = pin.replace(":", "").strip().lower()
    if len(hexed) != 64 or any(c not in "0123456789abcdef" for c in hexed):
        raise ValueError(f"--tls-pin {pin!r}: expected a SHA-256 fingerprint (64 hex digits, colons allowed)")
    return hexed


def pinned_context() -> ssl.SSLContext:
    """TLS without the system CA store or a host name check: the pin below is the only trust there is."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def check_pin(sock: Any, pin: str, where: str) -> None:
    """Refuse (before a byte of the request is sent) a peer whose certificate's SHA-256 is not ``pin``."""
    der = sock.getpeercert(binary_form=True)
    actual = hashlib.sha256(der).hexdigest() if der else "(none)"
    if actual != pin:
        sock.close()
        raise PinMismatch(
            f"{where}: the server's TLS certificate has sha256 {actual}, not the pinned {pin}; "
            "refusing to talk to it (a different server, or one that changed its certificate)"
        )


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    pin = ""

    def connect(self) -> None:
        super().connect()
        check_pin(self.sock, self.pin, f"{self.host}:{self.port}")


class _PinnedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, pin: str) -> None:
        super().__init__(context=pinned_context())
        self._connection = type("PinnedConnection", (_PinnedHTTPSConnection,), {"pin": pin})

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection: Any = self._connection  # a subclass of HTTPSConnection, as do_open wants
        return self.do_open(connection, req, context=self._context)  # type: ignore[attr-defined]


class HttpTransport:
    def __init__(self, server: str, pin: str | None = None) -> None:
        self.server = server.rstrip("/")
        parts = urllib.parse.urlsplit(self.server)
        host = parts.hostname or ""
        # A proxy from the environment must not capture traffic to a loopback server.
        handlers: list[urllib.request.BaseHandler] = (
            [urllib.request.ProxyHandler({})] if host in ("127.0.0.1", "localhost", "::1") else []
        )
        if pin is not None:
            if parts.scheme != "https":
                raise AgentError(f"--tls-pin needs an https:// server URL, not {self.server}")
            # A pinned agent must reach the server itself: a proxy in between would present its own
            # certificate (or tunnel), so the environment's proxies are ignored.
            handlers = [urllib.request.ProxyHandler({}), _PinnedHTTPSHandler(pin)]
        self._opener = urllib.request.build_opener(*handlers)

    def _post(self, path: str, body: dict[str, Any], key: str | None, timeout: float) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(
            self.server + path, json.dumps(body).encode(), headers, method="POST"
        )
        try:
            with self._opener.open(request, timeout=timeout) as response:
                data = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:500]
            if exc.code == 401:
                raise Unauthorized(f"{path}: 401 {detail}") from exc
            raise AgentError(f"{path}: HTTP {exc.code} {detail}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise AgentError(f"{path}: {exc}") from exc
        if not isinstance(data, dict):
            raise AgentError(f"{path}: expected a JSON object")
        return data

    def enrol(self, profile: dict[str, Any]) -> dict[str, Any]:
        return self._post("/agent/enrol", profile, None, 30.0)

    def beacon(self, key: str, wait: float) -> dict[str, Any]:
        return self._post("/agent/beacon", {"wait": wait}, key, wait + 30.0)

    def results(self, key: str, results: list[dict[str, Any]]) -> dict[str, Any]:
        return self._post("/agent/results", {"results": results}, key, 30.0)

    def download(self, key: str, name: str, paw: str) -> tuple[bytes, str | None]:
        """A payload's bytes and the sha256 the server sent with them."""
        headers = {"Authorization": f"Bearer {key}", "file": name, "paw": paw, "platform": sys.platform}
        request = urllib.request.Request(self.server + "/file/download", b"", headers, method="POST")
        try:
            with self._opener.open(request, timeout=120) as response:
                data = response.read(PAYLOAD_CAP + 1)
                announced = response.headers.get("X-Payload-SHA256")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:300]
            if exc.code == 401:
                raise Unauthorized(f"/file/download: 401 {detail}") from exc
            raise AgentError(f"/file/download {name}: HTTP {exc.code} {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise AgentError(f"/file/download {name}: {exc}") from exc
        if len(data) > PAYLOAD_CAP:
            raise AgentError(f"/file/download {name}: larger than {PAYLOAD_CAP} bytes")
        return data, announced


@dataclass
class FakeTransport:
    """An in-process server stand-in: hands out queued instructions and records what the agent posts."""

    queued: list[dict[str, Any]] = field(default_factory=list)
    posted: list[dict[str, Any]] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    fail_next_results: int = 0
    kill: bool = False

    def enrol(self, profile: dict[str, Any]) -> dict[str, Any]:
        self.profiles.append(profile)
        return {"paw": profile.get("paw") or "fakepaw", "key": "fake-key"}

    def beacon(self, key: str, wait: float) -> dict[str, Any]:
        out, self.queued = self.queued, []
        return {"paw": "fakepaw", "instructions": out, "kill": self.kill}

    def results(self, key: str, results: list[dict[str, Any]]) -> dict[str, Any]:
        if self.fail_next_results > 0:
            self.fail_next_results -= 1
            raise AgentError("connection refused (fake)")
        fresh = [r for r in results if r["id"] not in {p["id"] for p in self.posted}]
        self.posted.extend(fresh)
        ids = [r["id"] for r in results]
        return {"acknowledged": ids, "accepted": [r["id"] for r in fresh], "duplicates": [], "rejected": []}

    def download(self, key: str, name: str, paw: str) -> tuple[bytes, str | None]:
        if name not in self.files:
            raise AgentError(f"/file/download {name}: HTTP 404 (fake)")
        data = self.files[name]
        return data, hashlib.sha256(data).hexdigest()


def profile(group: str, paw: str | None, executors: list[str]) -> dict[str, Any]:
    try:
        username = getpass.getuser()
    except (KeyError, OSError):
        username = str(os.getuid())
    return {
        "paw": paw,
        "host": socket.gethostname(),
        "platform": sys.platform if sys.platform != "linux2" else "linux",
        "executors": executors,
        "privilege": "Elevated" if os.geteuid() == 0 else "User",
        "group": group,
        "username": username,
        "architecture": platform.machine(),
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "location": str(Path(sys.argv[0]).resolve()) if sys.argv and sys.argv[0] else "",
        "exe_name": Path(sys.executable).name,
        # Set by assay.sandbox's init for what it starts: the server lets disruptive abilities run only on
        # agents that say they are sandboxed.
        "sandbox": os.environ.get("ASSAY_SANDBOX") or None,
    }


class Stopped(AgentError):
    """The server told the agent to stop (an operator's kill)."""


class Agent:
    """Beacon loop: enrol, hold a beacon, run each instruction in its own thread, post each result at once."""

    def __init__(
        self,
        transport: Transport,
        runner: Runner,
        *,
        group: str = "red",
        paw: str | None = None,
        wait: float = 25.0,
        workdir: Path | None = None,
        watchdog: float = 0.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.transport = transport
        self.runner = runner
        self.group = group
        self.paw = paw
        self.wait = wait
        self.workdir = workdir or Path.cwd()
        self.watchdog = watchdog  # seconds without a successful contact before the agent stops; 0 = never
        self.key: str | None = None
        self.log = log or (lambda msg: print(f"assay agent: {msg}", file=sys.stderr, flush=True))
        self.unsent: list[dict[str, Any]] = []
        self.deadman: list[dict[str, Any]] = []
        self.last_contact = time.monotonic()
        self._lock = threading.Lock()
        self.workers: list[threading.Thread] = []

    def enrol(self) -> None:
        reply = self.transport.enrol(
            {**profile(self.group, self.paw, self.runner.available()), "deadman_enabled": True}
        )
        self.paw, self.key = str(reply["paw"]), str(reply["key"])
        self.last_contact = time.monotonic()
        self.log(f"enrolled as paw {self.paw} (group {self.group})")

    def step(self, wait: float | None = None) -> int:
        """One held beacon; starts a worker per instruction and returns how many it started."""
        if self.key is None:
            self.enrol()
        assert self.key is not None
        self.flush()
        reply = self.transport.beacon(self.key, self.wait if wait is None else wait)
        self.last_contact = time.monotonic()
        if reply.get("kill"):
            raise Stopped("the server killed this agent")
        started = 0
        for instruction in reply.get("instructions") or []:
            if instruction.get("deadman"):
                self.deadman.append(instruction)  # runs when the agent stops
                continue
            worker = threading.Thread(target=self.execute, args=(instruction,), daemon=True)
            worker.start()
            self.workers.append(worker)
            started += 1
        self.workers = [w for w in self.workers if w.is_alive()]
        return started

    def _payloads(self, instruction: dict[str, Any]) -> tuple[list[Path], str | None]:
        """Fetch and check the instruction's payloads; (files written, why it cannot run)."""
        written: list[Path] = []
        for item in instruction.get("payloads") or []:
            name = str(item.get("name", "")) if isinstance(item, dict) else str(item)
            expected = item.get("sha256") if isinstance(item, dict) else None
            if not name or "/" in name or name.startswith(".") or "\x00" in name:
                return written, f"payload name {name!r} is not a plain file name"
            if expected is None:
                return written, f"Payload(s) not available: {name}"
            target = self.workdir / name
            if target.is_file() and _sha256_file(target) == expected:
                continue  # already here and intact
            try:
                data, announced = self.transport.download(self.key or "", name, self.paw or "")
            except AgentError as exc:
                return written, f"Payload(s) not available: {name} ({exc})"
            actual = hashlib.sha256(data).hexdigest()
            if actual != expected or (announced is not None and announced != expected):
                return written, (
                    f"payload {name}: sha256 {actual} does not match the announced {expected}; not run"
                )
            fd, tmp = tempfile.mkstemp(dir=self.workdir, prefix=".payload-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            Path(tmp).chmod(0o700)
            Path(tmp).replace(target)
            written.append(target)
        return written, None

    def execute(self, instruction: dict[str, Any]) -> dict[str, Any]:
        written, problem = self._payloads(instruction)
        if problem is not None:
            now = time.time()
            outcome = Outcome(1, -1, "", problem, None, None, now, now)
        else:
            outcome = self.runner.run(
                str(instruction.get("executor", "sh")),
                str(instruction.get("command", "")),
                float(instruction.get("timeout") or 60),
            )
        if instruction.get("delete_payload", True):
            for path in written:
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass  # the command removed it itself
        result = {
            "id": instruction["id"],
            "status": outcome.status,
            "exit_code": outcome.exit_code,
            "stdout": outcome.stdout,
            "stderr": outcome.stderr,
            "pid": outcome.pid,
            "start_ticks": outcome.start_ticks,
            "started_at": outcome.started_at,
            "ended_at": outcome.ended_at,
        }
        with self._lock:
            self.unsent.append(result)
        self.flush()
        return result

    def flush(self) -> None:
        """Post every result not yet acknowledged. What the server did not acknowledge is kept and re-sent."""
        with self._lock:
            pending, self.unsent = self.unsent, []
        if not pending or self.key is None:
            with self._lock:
                self.unsent = pending + self.unsent
            return
        try:
            reply = self.transport.results(self.key, pending)
        except AgentError as exc:
            self.log(f"results not delivered, will retry: {exc}")
            with self._lock:
                self.unsent = pending + self.unsent
            return
        acknowledged = set(reply.get("acknowledged") or [])
        for rejected in reply.get("rejected") or []:
            self.log(f"server refused the result of {rejected.get('id')}: {rejected.get('reason')}")
        kept = [r for r in pending if r["id"] not in acknowledged]
        if kept:
            with self._lock:
                self.unsent = kept + self.unsent

    def run_deadman(self) -> None:
        """Run the stored deadman instructions, one after the other (the agent is stopping)."""
        tasks, self.deadman = self.deadman, []
        for instruction in tasks:
            self.log(f"running deadman instruction {instruction.get('id')}")
            self.execute(instruction)

    def run(self, stop: threading.Event) -> None:
        backoff = BACKOFF_MIN
        while not stop.is_set():
            if self.watchdog > 0 and time.monotonic() - self.last_contact > self.watchdog:
                self.log(f"no contact with the server for {self.watchdog:.0f}s: watchdog stops the agent")
                return
            try:
                self.step()
                backoff = BACKOFF_MIN
            except Stopped as exc:
                self.log(str(exc))
                return
            except PinMismatch as exc:
                self.log(str(exc))
                raise
            except Unauthorized as exc:
                self.log(f"{exc}; enrolling again")
                self.key = None
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            except AgentError as exc:
                self.log(f"server unreachable ({exc}); retrying in {backoff:.1f}s")
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m assay.agent", description="The Assay agent.")
    parser.add_argument("--server", required=True, help="server URL, e.g. http://127.0.0.1:8888")
    parser.add_argument(
        "--enrol-token",
        default=os.environ.get("ASSAY_ENROL_TOKEN"),
        help="enrolment token (or ASSAY_ENROL_TOKEN)",
    )
    parser.add_argument("--group", default="red")
    parser.add_argument("--paw", default=None, help="agent id to use (default: the server assigns one)")
    parser.add_argument(
        "--wait", type=float, default=25.0, help="seconds a beacon is held open by the server"
    )
    parser.add_argument("--workdir", default=None, help="where payloads go and commands run (default: cwd)")
    parser.add_argument(
        "--watchdog", type=float, default=0.0, help="stop after this many seconds without contact (0: never)"
    )
    parser.add_argument(
        "--tls-pin",
        default=os.environ.get("ASSAY_TLS_PIN") or None,
        help="SHA-256 fingerprint of the server's certificate (https only; printed by assay serve --tls): "
        "the agent trusts that certificate and nothing else",
    )
    args = parser.parse_args(argv)
    if not args.enrol_token:
        parser.error("--enrol-token (or ASSAY_ENROL_TOKEN) is required")
    pin: str | None = None
    if args.tls_pin:
        try:
            pin = normalise_pin(args.tls_pin)
        except ValueError as exc:
            parser.error(str(exc))
        if not args.server.startswith("https://"):
            parser.error(f"--tls-pin needs an https:// server URL, not {args.server}")
    token = args.enrol_token
    workdir = Path(args.workdir).resolve() if args.workdir else Path.cwd()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)  # commands run here, beside their payloads (as Sandcat runs in its own directory)

    class _Enrolling(HttpTransport):
        def enrol(self, profile: dict[str, Any]) -> dict[str, Any]:
            return super().enrol({**profile, "token": token})

    runner = Runner()
    agent = Agent(
        _Enrolling(args.server, pin),
        runner,
        group=args.group,
        paw=args.paw,
        wait=args.wait,
        workdir=workdir,
        watchdog=args.watchdog,
    )
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stop.set()
        raise SystemExit(128 + signum)  # interrupts a held beacon at once

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    code = 0
    try:
        agent.run(stop)
    except SystemExit as exc:
        code = int(exc.code or 0)
    except PinMismatch:
        code = 3  # said why in the log; retrying would only knock on the wrong door again
    finally:
        runner.kill_all()  # never leave a command of ours running without its agent
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the deadman instructions run to the end
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    agent.run_deadman()
    return code
