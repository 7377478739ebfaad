"""`assay serve --tls` as a real uvicorn process over HTTPS, with real agent processes that pin the server's
certificate: the right pin enrols and runs links; a wrong pin is refused with the reason; plain HTTP to the
TLS port gets nothing; the generated key is 0600 and kept across restarts; the user's own pair works."""

from __future__ import annotations

import hashlib
import http.client
import ssl
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from c2_helpers import ENROL, SRC, Server, no_proxy, run_operation, serving, stop, system_python, wait_for

from assay.api._tls import generate


def _fingerprint(server: Server) -> str:
    line = next(ln for ln in server.lines if "TLS certificate sha256 " in ln)
    return line.rsplit(" ", 1)[1]


def _trust(server: Server, cert: Path) -> None:
    """The test's own API calls trust exactly this certificate (as a CA file: it is self-signed)."""
    server.context = ssl.create_default_context(cafile=str(cert))


@contextmanager
def _tls_server(base: Path, *args: str) -> Iterator[Server]:
    with serving(base, "--tls", *args) as server:
        assert server.url.startswith("https://127.0.0.1:"), server.lines
        _trust(server, base / "data" / "tls-cert.pem")
        yield server


def _agent_cmd(server: Server, pin: str, group: str) -> list[str]:
    return [system_python(), "-m", "assay.agent", "--server", server.url, "--enrol-token", ENROL,
            "--group", group, "--tls-pin", pin]  # fmt: skip


def _assay(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", "from assay.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=no_proxy())


def _enrolled(server: Server, pid: int) -> str:
    def find() -> str | None:
        _, agents = server.call("GET", "/api/v2/agents")
        return next((a["paw"] for a in agents if a["pid"] == pid), None)

    return wait_for(find, what=f"agent pid {pid} to enrol")  # type: ignore[no-any-return]


def test_generated_certificate_key_is_private_and_pinned_deploy_command_runs_links(tmp_path: Path) -> None:
    with _tls_server(tmp_path) as server:
        data = tmp_path / "data"
        key, cert = data / "tls-key.pem", data / "tls-cert.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        pin = _fingerprint(server)
        der = ssl.PEM_cert_to_DER_cert(cert.read_text())
        assert pin == hashlib.sha256(der).hexdigest()
        # The deploy command the server prints carries the pin.
        printed = next(ln for ln in server.lines if "deploy-command" in ln)
        assert f"--tls-pin {pin}" in printed, printed
        line = _assay(
            "agent", "deploy-command", "--server", server.url, "--enrol-token", ENROL, "--group", "tls",
            "--foreground", "--tls-pin", pin.upper(),
        ).stdout.strip()  # fmt: skip
        assert pin in line and "--tls-pin" in line
        target = tmp_path / "target"
        target.mkdir()
        env = {**no_proxy(), "PATH": "/usr/bin:/bin"}  # python3 and nothing of ours
        agent = subprocess.Popen(["sh", "-c", line], cwd=target, env=env, stderr=subprocess.PIPE, text=True)
        try:
            _enrolled(server, agent.pid)  # fetched the zipapp over pinned TLS, then exec'd it
            op = run_operation(server, "c2-small", "tls")
            links = op["chain"]
            assert [lk["status"] for lk in links] == [0, 0, 0], links
        finally:
            stop(agent)
    # Restarted, the server keeps the certificate, so pinned agents keep working.
    with _tls_server(tmp_path) as again:
        assert _fingerprint(again) == pin
        assert not any("generated self-signed" in ln for ln in again.lines)


def test_agent_with_a_wrong_pin_refuses_the_server_and_says_why(tmp_path: Path) -> None:
    wrong = "ab" * 32
    with _tls_server(tmp_path) as server:
        env = {**no_proxy(), "PYTHONPATH": str(SRC)}
        agent = subprocess.run(
            _agent_cmd(server, wrong, "bad"), env=env, capture_output=True, text=True, timeout=30
        )
        assert agent.returncode == 3, agent.stderr
        assert f"not the pinned {wrong}" in agent.stderr and _fingerprint(server) in agent.stderr
        assert "refusing" in agent.stderr
        _, agents = server.call("GET", "/api/v2/agents")
        assert agents == []  # it never enrolled: the token was not sent
        # The pinned fetch of the deploy command refuses too, before sending the token.
        line = _assay(
            "agent", "deploy-command", "--server", server.url, "--enrol-token", ENROL, "--tls-pin", wrong,
        ).stdout.strip()  # fmt: skip
        fetched = subprocess.run(
            ["sh", "-c", line.split(" && ", 1)[0]], cwd=tmp_path, capture_output=True, text=True, timeout=30
        )
        assert fetched.returncode != 0 and f"not the pinned {wrong}" in fetched.stderr, fetched.stderr
        # A pin on a plain-HTTP URL is a usage error, not a silent downgrade.
        http_url = server.url.replace("https://", "http://")
        cmd = [system_python(), "-m", "assay.agent", "--server", http_url, "--enrol-token", ENROL,
               "--tls-pin", wrong]  # fmt: skip
        plain = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
        assert plain.returncode == 2 and "needs an https://" in plain.stderr


def test_plain_http_to_the_tls_port_gets_no_answer(tmp_path: Path) -> None:
    with _tls_server(tmp_path) as server:
        http_url = server.url.replace("https://", "http://")
        with pytest.raises((http.client.HTTPException, urllib.error.URLError, OSError)):
            urllib.request.urlopen(http_url + "/api/v2/health", timeout=10)
        status, _ = server.call("GET", "/api/v2/agents")  # and the TLS side still answers
        assert status == 200
        # Without the pin (or a CA that signed it), a client's normal verification rejects the certificate.
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(server.url + "/api/v2/agents", timeout=10)


def test_users_own_certificate_and_key(tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.mkdir()
    cert, key = own / "server.crt", own / "server.key"
    generate(cert, key, "127.0.0.1")
    with serving(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key)) as server:
        _trust(server, cert)
        assert server.url.startswith("https://")
        der = ssl.PEM_cert_to_DER_cert(cert.read_text())
        assert _fingerprint(server) == hashlib.sha256(der).hexdigest()
        env = {**no_proxy(), "PYTHONPATH": str(SRC)}
        agent = subprocess.Popen(
            _agent_cmd(server, _fingerprint(server), "own"), env=env, stderr=subprocess.PIPE, text=True
        )
        try:
            _enrolled(server, agent.pid)
            op = run_operation(server, "c2-small", "own")
            assert [lk["status"] for lk in op["chain"]] == [0, 0, 0]
        finally:
            stop(agent)
    assert not (tmp_path / "data" / "tls-key.pem").exists()  # nothing generated when the user gave a pair


def test_half_a_pair_or_a_bad_certificate_is_a_clear_error(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("not a certificate\n")
    only = _assay("serve", "--port", "0", "--data-dir", str(tmp_path / "d"), "--tls-cert", str(cert))
    assert only.returncode == 2 and "--tls-cert and --tls-key go together" in only.stderr
    bad = _assay(
        "serve", "--port", "0", "--data-dir", str(tmp_path / "d"), "--tls-cert", str(cert), "--tls-key",
        str(cert),
    )  # fmt: skip
    assert bad.returncode == 2 and f"{cert}: no PEM certificate" in bad.stderr
