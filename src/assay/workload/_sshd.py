"""A throw-away sshd inside a network namespace the workload creates, for benign ssh logins.

Nothing of the host's ssh set-up is used or touched: the daemon runs with its own config (``-f``), its own
generated host key and authorized keys, listens only on the namespace's loopback, and gets a private,
empty ``/run`` (its privilege-separation directory lives there, not on the host). It is started and stopped
by its own PID, and the namespace is deleted afterwards.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
PORT = 2222


class SshdError(Exception):
    """The workload's sshd could not be set up."""


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, check=False, timeout=30)
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).decode(errors="replace").strip()
        raise SshdError(f"{' '.join(argv)} exited {proc.returncode}: {out}")


@dataclass
class Sshd:
    directory: Path
    netns: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def key(self) -> Path:
        return self.directory / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.directory / "known_hosts"

    def client_argv(self, tool: str = "ssh") -> list[str]:
        """``ip netns exec NS ssh ...`` with options that read nothing of the user's own ssh config."""
        port_flag = "-P" if tool == "scp" else "-p"
        return [
            "ip",
            "netns",
            "exec",
            self.netns,
            tool,
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-i",
            str(self.key),
            port_flag,
            str(PORT),
        ]

    def start(self) -> Sshd:
        for tool in (SSHD, "ssh-keygen", "ip", "unshare"):
            if shutil.which(tool) is None:
                raise SshdError(f"{tool} is not installed (openssh-server, iproute2, util-linux)")
        self.directory.mkdir(parents=True, exist_ok=True)
        host_key = self.directory / "ssh_host_ed25519_key"
        for path in (host_key, self.key):
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "assay-baseline", "-f", str(path)])
        authorized = self.directory / "authorized_keys"
        authorized.write_bytes(self.key.with_suffix(".pub").read_bytes())
        config = self.directory / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {PORT}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"PidFile {self.directory / 'sshd.pid'}",
                    f"AuthorizedKeysFile {authorized}",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "UsePAM no",
                    "StrictModes no",
                    "PrintMotd no",
                    "PrintLastLog no",
                    f"Subsystem sftp {SFTP_SERVER}",
                    "",
                ]
            ),
            encoding="utf-8",
        )
        self.netns = f"assay-baseline-{secrets.token_hex(4)}"
        _run(["ip", "netns", "add", self.netns])
        _run(["ip", "-n", self.netns, "link", "set", "lo", "up"])
        # ip netns exec and unshare both exec (no fork), so the PID started here is sshd's own.
        script = (
            "mount -t tmpfs -o mode=0755 assay-run /run && mkdir -m 0755 /run/sshd"
            f" && exec {SSHD} -D -e -f {config}"
        )
        log = (self.directory / "sshd.log").open("ab")
        try:
            self.proc = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.netns,
                    "unshare",
                    "--mount",
                    "--propagation=private",
                    "sh",
                    "-c",
                    script,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        self._wait_listening()
        return self

    def _wait_listening(self, timeout: float = 15.0) -> None:
        log = self.directory / "sshd.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise SshdError(f"sshd exited {self.proc.returncode}: {log.read_text(errors='replace')}")
            if "Server listening" in log.read_text(errors="replace"):
                return
            time.sleep(0.05)
        raise SshdError(f"sshd did not listen within {timeout:.0f} s: {log.read_text(errors='replace')}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.netns:
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False, timeout=30)
            self.netns = ""
