"""Hostile input against a real server: every case gets a 4xx with a message that says what and where,
never a 5xx, never a crash, never a write outside the payload and upload directories."""

from __future__ import annotations

import base64
import http.client
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from c2_helpers import ENROL, Server, serving


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("hostile"), "--caldera-compat") as srv:
        yield srv


def b64(value: Any) -> bytes:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.b64encode(raw)


def post_beacon(server: Server, body: bytes) -> tuple[int, Any]:
    return server.call("POST", "/beacon", raw=body, key=None, headers={"Content-Type": "text/plain"})


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"", 400, "the beacon is empty"),
        (b"%%%% not base64 at all %%%%", 400, "not base64"),
        (b64(b"\xff\xfe not json"), 400, "not JSON"),
        (b64(b"{broken json"), 400, "not JSON"),
        (b64([1, 2, 3]), 400, "must be a JSON object"),
        (b64({"paw": "x", "evil": 1}), 400, "unknown field(s) 'evil'"),
        (b64({"paw": 12}), 400, "field 'paw': must be a string"),
        (b64({"paw": "x", "privilege": "root"}), 400, "field 'privilege': must be 'User' or 'Elevated'"),
        (b64({"paw": "x", "pid": "12; rm -rf /"}), 400, "field 'pid': must be an integer"),
        (b64({"paw": "x", "pid": -4}), 400, "field 'pid': must not be negative"),
        (b64({"paw": "x", "executors": {"sh": 1}}), 400, "field 'executors': must be a list"),
        (b64({"paw": "x", "host": "h" * 5000}), 400, "field 'host': is longer than 255"),
        (b64({"paw": "x", "sleep_min": -5}), 400, "field 'sleep_min': must be between 0 and 86400"),
        (b64({"paw": "x", "sleep_max": 10**9}), 400, "field 'sleep_max': must be between 0 and 86400"),
        (
            b64({"paw": "x", "sleep_min": 9, "sleep_max": 3}),
            400,
            "sleep_min (9) is greater than sleep_max (3)",
        ),
        (b64({"paw": "x", "watchdog": "soon"}), 400, "field 'watchdog': must be an integer"),
        (b64({"paw": "x", "results": "all done"}), 400, "field 'results': must be a list"),
        (b64({"paw": "x", "results": [{"output": ""}]}), 400, "field 'results[0]': has no 'id'"),
        (
            b64({"paw": "x", "results": [{"id": "l", "output": "!!"}]}),
            400,
            "field 'results[0].output': is not base64",
        ),
        (b64({"paw": "x", "results": [{"id": "l", "status": "7"}]}), 400, "must be 0, 1 or 124"),
        (b64({"paw": "x", "results": [{"id": "l", "pid": "x"}]}), 400, "field 'results[0].pid'"),
        (b64({"paw": "x", "results": [{"id": "l", "agent_reported_time": "yesterday"}]}), 400, "%Y-%m-%dT"),
        (b64({"paw": "x", "results": [{"id": "nope", "status": "0"}]}), 409, "result rejected"),
        (base64.b64encode(b'{"paw": "x", "host": "h\\udc80"}'), 400, "field 'host': is not valid Unicode"),
        (base64.b64encode(b'{"paw": "x", "host_ip_addrs": ["\\ud800"]}'), 400, "not valid Unicode"),
    ],
)
def test_bad_beacons_get_a_4xx_that_names_the_problem(
    server: Server, body: bytes, status: int, message: str
) -> None:
    got, reply = post_beacon(server, body)
    assert got == status, reply
    assert message in reply["error"], reply
    assert server.process.poll() is None


def test_oversized_bodies_are_refused_before_they_are_read(server: Server) -> None:
    host, port = server.url.split("//")[1].split(":")
    for path, size in (("/beacon", 5 * 1024 * 1024), ("/api/v2/operations", 2 * 1024 * 1024)):
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            # Declare the size, send only the start: the server answers from the header alone.
            conn.putrequest("POST", path)
            conn.putheader("Content-Length", str(size))
            conn.putheader("KEY", "irrelevant")
            conn.endheaders(b"A" * 1024)
            response = conn.getresponse()
            assert response.status == 413
            assert "limit" in json.loads(response.read())["error"] or path == "/beacon"
        finally:
            conn.close()
    # Chunked (no Content-Length): counted as it arrives.
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        chunks = (b"x" * 65536 for _ in range(40))  # 2.5 MB against a 1 MB limit
        conn.request(
            "PATCH",
            "/api/v2/agents/x",
            body=chunks,
            headers={"Transfer-Encoding": "chunked"},
            encode_chunked=True,
        )
        assert conn.getresponse().status == 413
    finally:
        conn.close()


def test_beacon_takes_post_only(server: Server) -> None:
    status, body = server.call("GET", "/beacon", key=None)
    assert status == 405 and "POST" in body["error"]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../../../../etc/passwd", "path separator"),
        ("/etc/passwd", "path separator"),
        ("..", "starts with a dot"),
        (".bashrc", "starts with a dot"),
        ("..\\..\\x", "path separator"),
        ("sandcat.go:evil", "packer"),
    ],
)
def test_path_traversal_in_file_headers_is_refused(server: Server, name: str, message: str) -> None:
    status, body = server.call("POST", "/file/download", key=None, headers={"file": name, "paw": "x"})
    assert status == 400 and message in body["error"], body


def test_a_symlink_out_of_the_payload_directory_is_never_served(server: Server) -> None:
    payloads = server.data_dir / "payloads"
    (payloads / "escape").symlink_to("/etc/hostname")
    status, body = server.call("POST", "/file/download", key=None, headers={"file": "escape"})
    assert status == 404 and "no payload named 'escape'" in body["error"]
    status, body = server.call("POST", "/file/download", key=None, headers={"file": "missing"})
    assert status == 404 and "no payload named 'missing'" in body["error"]


def _multipart(filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = "assayboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_uploads_stay_in_the_upload_directory(server: Server, tmp_path: Path) -> None:
    status, _ = server.call(
        "POST", f"/enrol/{ENROL}/beacon", raw=b64({"paw": "uploader", "platform": "linux"}), key=None
    )
    assert status == 200
    before = {p for p in server.data_dir.parent.rglob("*")}
    for filename, status, message in (
        ("../../escaped.txt", 400, "path separator"),
        ("..", 400, "starts with a dot"),
        ("/tmp/abs.txt", 400, "path separator"),
    ):
        body, ctype = _multipart(filename, b"data")
        got, reply = server.call(
            "POST", "/file/upload", raw=body, key=None, headers={"Content-Type": ctype, "X-Paw": "uploader"}
        )
        assert got == status and message in reply["error"], reply
    body, ctype = _multipart("loot.txt", b"data")
    got, reply = server.call(
        "POST",
        "/file/upload",
        raw=body,
        key=None,
        headers={"Content-Type": ctype, "X-Paw": "uploader", "Directory": "../payloads"},
    )
    assert got == 400 and "Directory" in reply["error"]
    got, reply = server.call(
        "POST", "/file/upload", raw=body, key=None, headers={"Content-Type": ctype, "X-Paw": "uploader"}
    )
    assert got == 200, reply
    created = {p for p in server.data_dir.parent.rglob("*")} - before
    assert created == {
        server.data_dir / "uploads",
        server.data_dir / "uploads" / "uploader",
        server.data_dir / "uploads" / "uploader" / "loot.txt",
    }
    got, reply = server.call(
        "POST", "/file/upload", raw=body, key=None, headers={"Content-Type": ctype, "X-Paw": "stranger"}
    )
    assert got == 403  # an unknown paw may not upload
    assert not os.path.exists(tmp_path.parent / "escaped.txt")


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"sleep_min": -5}, "sleep_min"),
        ({"sleep_max": 10**7}, "sleep_max"),
        ({"watchdog": -1}, "watchdog"),
        ({"sleep_min": "fast"}, "sleep_min"),
        ({"colour": "red"}, "colour"),
        ({"group": "../../etc"}, "group"),
    ],
)
def test_agent_patch_refuses_bad_sleep_and_unknown_fields(
    server: Server, patch: dict[str, Any], field: str
) -> None:
    post_beacon(server, b64({"paw": "patched", "platform": "linux"}))
    status, body = server.call("PATCH", "/api/v2/agents/patched", patch)
    assert status == 422 and field in body["error"], body


def test_agent_patch_refuses_reversed_sleep_and_unknown_agents(server: Server) -> None:
    post_beacon(server, b64({"paw": "patched2", "platform": "linux"}))
    status, body = server.call("PATCH", "/api/v2/agents/patched2", {"sleep_min": 50, "sleep_max": 10})
    assert status == 400 and "sleep_min (50) is greater than sleep_max (10)" in body["error"]
    status, body = server.call("PATCH", "/api/v2/agents/patched2", {"sleep_min": 5, "sleep_max": 10})
    assert status == 200 and (body["sleep_min"], body["sleep_max"]) == (5, 10)
    assert server.call("PATCH", "/api/v2/agents/nobody", {"sleep_min": 1})[0] == 404
    assert server.call("POST", "/api/v2/agents/kill/nobody")[0] == 404


def test_native_contact_rejects_garbage(server: Server) -> None:
    status, body = server.call("POST", "/agent/enrol", raw=b"{not json", key=None)
    assert status == 422 and "JSON" in body["error"]
    status, body = server.call("POST", "/agent/enrol", {"token": ENROL, "shell": "bash"}, key=None)
    assert status == 422 and "shell" in body["error"]
    status, enrolled = server.call("POST", "/agent/enrol", {"token": ENROL, "host": "h"}, key=None)
    bearer = {"Authorization": f"Bearer {enrolled['key']}"}
    status, body = server.call("POST", "/agent/beacon", {"wait": -1}, key=None, headers=bearer)
    assert status == 422 and "wait" in body["error"]
    status, body = server.call("POST", "/agent/beacon", {"wait": 1e9}, key=None, headers=bearer)
    assert status == 422 and "wait" in body["error"]
    status, body = server.call(
        "POST", "/agent/results", {"results": [{"id": "x", "status": 3}]}, key=None, headers=bearer
    )
    assert status == 422 and "status" in body["error"]
    status, body = server.call(
        "POST", "/agent/results", {"results": [{"id": "x", "status": 0}]}, key=None, headers=bearer
    )
    assert status == 200 and body["rejected"][0]["id"] == "x" and body["acknowledged"] == ["x"]


def test_lone_surrogates_in_json_are_refused_before_anything_is_stored(server: Server) -> None:
    raw = b'{"name": "x\\udc80", "adversary": {"adversary_id": "c2-small"}}'
    status, body = server.call("POST", "/api/v2/operations", raw=raw)
    assert status == 400 and "body.name: not valid Unicode" in body["error"]
    status, body = server.call("PUT", "/api/v2/sources/s1", raw=b'{"id": "s1", "name": "ok \\ud83d\\ude00"}')
    assert status == 200 and body["name"] == "ok \U0001f600"  # a surrogate pair is a character
    assert server.call("GET", "/api/v2/sources/s1")[1]["name"] == "ok \U0001f600"


def test_api_json_errors_are_4xx(server: Server) -> None:
    status, body = server.call("POST", "/api/v2/operations", raw=b"\xff\xfe{")
    assert status == 400 and "parsing the body" in body["error"], body
    status, body = server.call("POST", "/api/v2/telemetry", raw=b"[1,2]")
    assert status == 422
    status, body = server.call("GET", "/api/v2/events?limit=100000000")
    assert status == 422 and "limit" in body["error"]
    status, body = server.call("GET", "/api/v2/nothing-here")
    assert status == 404
