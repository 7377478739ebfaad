"""Auth on a real server: Caldera's KEY header or a Bearer token, hashes at rest, named keys in the audit."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from c2_helpers import API_KEY, ENROL, serving


def test_keys_are_required_stored_as_scrypt_hashes_and_named_in_the_audit_trail(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        assert server.call("GET", "/api/v2/health", key=None)[0] == 401
        assert server.call("GET", "/api/v2/health", key="wrong")[0] == 401
        assert server.call("GET", "/api/v2/health", key="wrong")[0] == 401  # a repeated wrong key: still 401
        bearer = {"Authorization": f"Bearer {API_KEY}"}
        assert server.call("GET", "/api/v2/health", key=None, headers=bearer)[0] == 200
        assert (
            server.call("GET", "/api/v2/health", key=None, headers={"Authorization": f"Basic {API_KEY}"})[0]
            == 401
        )
        assert server.call("GET", "/api/v2/health", key=ENROL)[0] == 401  # the enrolment token is no API key

        status, created = server.call("POST", "/api/v2/keys", {"name": "ci", "role": "red"})
        assert status == 200 and (created["name"], created["role"]) == ("ci", "red")
        ci = created["key"]
        assert server.call("POST", "/api/v2/keys", {"name": "ci", "role": "blue"})[0] == 409
        assert server.call("POST", "/api/v2/keys", {"name": "../x", "role": "red"})[0] == 422
        status, body = server.call("POST", "/api/v2/keys", {"name": "x", "role": "root"})
        assert status == 422 and "role" in body["error"]
        assert server.call("GET", "/api/v2/keys", key=ci)[0] == 403  # a red key lists no keys
        _, listed = server.call("GET", "/api/v2/keys")
        assert listed == [{"name": "admin", "role": "admin"}, {"name": "ci", "role": "red"}]
        status, op = server.call(
            "POST", "/api/v2/operations", {"name": "by-ci", "adversary": {"adversary_id": "c2-small"}}, key=ci
        )
        assert status == 200
        _, trail = server.call("GET", f"/api/v2/audit?operation_id={op['id']}&kind=api")
        assert [(e["principal"], e["data"]["method"], e["data"]["status"]) for e in trail] == [
            ("api:ci", "POST", 200)
        ]
        assert server.call("DELETE", "/api/v2/keys/ci")[0] == 200
        assert server.call("GET", "/api/v2/health", key=ci)[0] == 401  # revoked at once
        assert server.call("DELETE", "/api/v2/keys/admin")[0] == 409
        _, trail = server.call("GET", "/api/v2/audit?kind=api")
        assert all(e["principal"] for e in trail)  # refused (401) calls did nothing and left no row

    with sqlite3.connect(server.data_dir / "assay.db") as db:
        stored = dict(db.execute("SELECT name, digest FROM credentials").fetchall())
    assert stored["api_key"].startswith("scrypt$") and stored["enrol_token"].startswith("scrypt$")
    raw = (server.data_dir / "assay.db").read_bytes()
    assert API_KEY.encode() not in raw and ENROL.encode() not in raw and ci.encode() not in raw
