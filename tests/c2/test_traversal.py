"""Path traversal in payload and upload names, against a real server: encoded dots, NUL bytes, absolute
paths, RFC 2231 file names, symbolic links planted in the payload and upload directories. Every case is a
4xx that says what was wrong, and nothing is read or written outside the payload and upload directories.
(tests/c2/test_hostile.py has the plain ``../`` and ``/etc/passwd`` cases.)"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from c2_helpers import ENROL, Server, serving

SECRET = b"outside-the-payload-directory\n"


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("outside")
    (out / "secret.txt").write_bytes(SECRET)
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("traversal"), "--caldera-compat") as srv:
        status, _ = srv.call(
            "POST",
            f"/enrol/{ENROL}/beacon",
            raw=base64.b64encode(json.dumps({"paw": "looter", "platform": "linux"}).encode()),
            key=None,
        )
        assert status == 200
        yield srv


def download(server: Server, name: str) -> tuple[int, object]:
    return server.call("POST", "/file/download", key=None, headers={"file": name, "paw": "looter"})


@pytest.mark.parametrize(
    ("name", "status", "message"),
    [
        ("%2e%2e%2f%2e%2e%2fsecret.txt", 404, "no payload named"),  # never URL-decoded: a literal name
        ("..%2fsecret.txt", 400, "starts with a dot"),
        ("%2e%2e", 404, "no payload named"),
        ("x/../../secret.txt", 400, "path separator"),
        ("c2-probe.sh/", 400, "path separator"),
        ("....//secret.txt", 400, "path separator"),
        ("\\secret.txt", 400, "path separator"),
        ("a" * 300, 400, "longer than 255 bytes"),
        ("", 400, "missing or empty"),
    ],
)
def test_encoded_and_odd_payload_names_are_refused(
    server: Server, name: str, status: int, message: str
) -> None:
    got, body = download(server, name)
    assert got == status and isinstance(body, dict) and message in body["error"], body


@pytest.mark.parametrize("name", [b"../../secret\x00.txt", b"secret.txt\x00", b"secret\x01.txt"])
def test_nul_and_control_bytes_in_the_file_header_are_refused(server: Server, name: bytes) -> None:
    # Sent raw: the HTTP parser refuses them before any route sees them (a 400, never a 500 or a file).
    host, port = server.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /file/download HTTP/1.1\r\nHost: x\r\nfile: " + name + b"\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    assert status == 400 and SECRET not in reply, reply[:200]
    assert server.process.poll() is None


def test_symlinks_in_the_payload_directory_are_not_followed_out(server: Server, outside: Path) -> None:
    payloads = server.data_dir / "payloads"
    (payloads / "to-dir").symlink_to(outside)  # a directory outside
    (payloads / "to-parent").symlink_to(payloads / ".." / ".." / "..")
    (payloads / "chain").symlink_to(payloads / "to-dir" / "secret.txt")  # inside, then out
    (payloads / "dangling").symlink_to(outside / "missing")
    (payloads / "local.sh").write_bytes(b"echo local\n")
    (payloads / "alias.sh").symlink_to(payloads / "local.sh")  # inside, to inside: a payload
    for name in ("to-dir", "to-parent", "chain", "dangling"):
        got, body = download(server, name)
        assert got == 404 and isinstance(body, dict) and f"no payload named {name!r}" in body["error"], body
    got, body = download(server, "alias.sh")
    assert got == 200 and body == b"echo local\n"
    listed = {p["name"] for p in server.call("GET", "/api/v2/payloads")[1]}
    assert {"local.sh", "alias.sh"} <= listed and not listed & {"to-dir", "to-parent", "chain", "dangling"}


def _multipart(disposition: str, data: bytes = b"loot") -> tuple[bytes, str]:
    boundary = "assayboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; {disposition}\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode("utf-8", "surrogateescape")
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def upload(server: Server, disposition: str, paw: str = "looter") -> tuple[int, object]:
    body, ctype = _multipart(disposition)
    return server.call(
        "POST", "/file/upload", raw=body, key=None, headers={"Content-Type": ctype, "X-Paw": paw}
    )


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.mark.parametrize(
    ("disposition", "status", "message"),
    [
        ('filename="loot\x00.txt"', 400, "NUL"),
        ('filename="/etc/cron.d/evil"', 400, "path separator"),
        ('filename="..\\..\\evil.txt"', 400, "path separator"),
        ('filename="..%2F..%2Fevil.txt"', 400, "starts with a dot"),
        ("filename*=UTF-8''..%2F..%2Fevil.txt", 400, ""),
        ('filename="evil\r.txt"', 400, ""),
        ('filename=""', 400, ""),
    ],
)
def test_upload_names_that_would_leave_the_directory_are_refused(
    server: Server, disposition: str, status: int, message: str
) -> None:
    base = server.data_dir.parent
    before = _tree(base)
    got, body = upload(server, disposition)
    assert got == status and isinstance(body, dict) and message in body["error"], body
    assert not {p for p in _tree(base) - before if p.is_file()}, "a 4xx upload wrote a file"
    assert server.process.poll() is None


def test_an_encoded_name_is_stored_literally_inside_the_agents_directory(server: Server) -> None:
    got, body = upload(server, 'filename="%2e%2e%2fencoded.txt"')
    assert got == 200, body
    stored = server.data_dir / "uploads" / "looter" / "%2e%2e%2fencoded.txt"
    assert stored.read_bytes() == b"loot"
    assert not (server.data_dir / "encoded.txt").exists()


def test_symlinks_planted_in_the_upload_directory_are_not_written_through(
    server: Server, outside: Path
) -> None:
    uploads = server.data_dir / "uploads"
    uploads.mkdir(exist_ok=True)
    for paw, target in (("linked", outside), ("dangling", outside / "gone")):
        status, _ = server.call(
            "POST",
            f"/enrol/{ENROL}/beacon",
            raw=base64.b64encode(json.dumps({"paw": paw, "platform": "linux"}).encode()),
            key=None,
        )
        assert status == 200
        (uploads / paw).symlink_to(target, target_is_directory=True)
        got, body = upload(server, 'filename="planted.txt"', paw=paw)
        assert got == 403 and isinstance(body, dict) and "upload directory" in body["error"], body
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    # A file name that is a planted link inside the agent's own directory: never written through.
    own = uploads / "looter"
    own.mkdir(exist_ok=True)
    (own / "through.txt").symlink_to(outside / "secret.txt")
    got, body = upload(server, 'filename="through.txt"')
    assert got == 409 and isinstance(body, dict) and "uploaded already" in body["error"], body
    (own / "dangling.txt").symlink_to(outside / "created-through-link.txt")
    got, body = upload(server, 'filename="dangling.txt"')
    assert got == 409, body
    assert (outside / "secret.txt").read_bytes() == SECRET
    assert not (outside / "created-through-link.txt").exists()


def test_x_paw_cannot_name_a_directory_outside(server: Server) -> None:
    for paw in ("../looter", "..", "/tmp", "looter/../.."):
        got, body = upload(server, 'filename="p.txt"', paw=paw)
        assert got in (400, 403) and isinstance(body, dict) and body["error"], (paw, body)


def test_operator_payload_names_are_checked_too(server: Server, outside: Path) -> None:
    planted = server.data_dir / "payloads" / "to-dir"
    if not planted.is_symlink():  # planted by the symlink test above when the whole file runs
        planted.symlink_to(outside)
    body, ctype = _multipart('filename="../../evil.sh"')
    got, reply = server.call("POST", "/api/v2/payloads", raw=body, headers={"Content-Type": ctype})
    assert got == 400 and isinstance(reply, dict) and "path separator" in reply["error"], reply
    for path, status, message in (
        ("/api/v2/payloads/%2e%2e", 400, "starts with a dot"),
        # %2F decodes to a separator: no route matches a two-segment name
        ("/api/v2/payloads/..%2F..%2Fsecret.txt", 404, "Not Found"),
        ("/api/v2/payloads/%2e%2e%2fsecret.txt", 404, "Not Found"),
        ("/api/v2/payloads/to-dir", 404, "no payload 'to-dir'"),  # the planted link: never deleted through
    ):
        got, reply = server.call("DELETE", path)
        assert got == status and isinstance(reply, dict) and message in reply["error"], (path, got, reply)
    assert (server.data_dir / "payloads" / "to-dir").is_symlink()
    assert (outside / "secret.txt").read_bytes() == SECRET
