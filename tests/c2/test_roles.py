"""Roles on a real server: the OpenAPI spec is walked, and every /api/ route is called with no key, a wrong
key and a key of every role. A route must declare its roles (``x-assay-roles``: a new route that declares none
fails this test), admit those roles and admin, refuse every other role with a 403 and no key with a 401."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from c2_helpers import API_KEY, SRC, Server, no_proxy, serving

from assay.c2 import KeyRing, Principal, Role, slow_hash

REFUSED = (401, 403)


def _example(path: str) -> str:
    """A concrete path for a templated one: every path parameter is a name nothing has."""
    parts = [("no-such-thing" if p.startswith("{") else p) for p in path.split("/")]
    return "/".join(parts)


def _keys(server: Server) -> dict[str, str]:
    keys = {"admin": API_KEY}
    for role in ("red", "blue"):
        status, created = server.call("POST", "/api/v2/keys", {"name": f"{role}-key", "role": role})
        assert status == 200 and created["role"] == role, created
        keys[role] = created["key"]
    return keys


def _call(
    server: Server, method: str, path: str, operation: dict[str, Any], key: str | None
) -> tuple[int, Any]:
    if "multipart/form-data" in operation.get("requestBody", {}).get("content", {}):
        return server.call(
            method,
            path,
            key=key,
            raw=b"--b--\r\n",
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
    return server.call(method, path, {} if method in ("POST", "PUT", "PATCH") else None, key=key)


def test_every_api_route_declares_roles_and_refuses_the_others_and_no_key(tmp_path: Path) -> None:
    with serving(tmp_path, "--caldera-compat") as server:
        keys = _keys(server)
        _, spec = server.call("GET", "/api/openapi.json")
        undeclared: list[str] = []
        wrong: list[str] = []
        checked = 0
        for path, item in spec["paths"].items():
            if not path.startswith("/api/"):
                continue
            for method, operation in item.items():
                method = method.upper()
                roles = operation.get("x-assay-roles")
                if not roles:
                    undeclared.append(f"{method} {path}")
                    continue
                assert "admin" in roles, f"{method} {path}: admin is refused"
                url = _example(path)
                status, body = _call(server, method, url, operation, None)
                if status != 401 or "API key required" not in body["error"]:
                    wrong.append(f"{method} {path} with no key: {status}")
                status, _ = _call(server, method, url, operation, "not-a-key")
                if status != 401:
                    wrong.append(f"{method} {path} with a wrong key: {status}")
                for role, key in keys.items():
                    status, body = _call(server, method, url, operation, key)
                    if role in roles and status in REFUSED:
                        wrong.append(f"{method} {path} refused the {role} key it declares: {status} {body}")
                    if role not in roles:
                        expected = f"has the {role} role"
                        if status != 403 or expected not in str(body.get("error")):
                            wrong.append(f"{method} {path} let the {role} key through: {status}")
                checked += 1
        assert undeclared == [], (
            f"routes that declare no role (add dependencies=[require(Role...)]): {undeclared}"
        )
        assert wrong == []
        assert checked > 60
        assert server.process.poll() is None


def test_the_roles_are_the_ones_the_issue_names(tmp_path: Path) -> None:
    with serving(tmp_path, content=False) as server:
        _, spec = server.call("GET", "/api/openapi.json")

        def roles(method: str, path: str) -> list[str]:
            return sorted(spec["paths"][path][method]["x-assay-roles"])

        assert roles("post", "/api/v2/operations") == ["admin", "red"]
        assert roles("patch", "/api/v2/agents/{paw}") == ["admin", "red"]
        assert roles("get", "/api/v2/alerts") == ["admin", "blue"]
        assert roles("get", "/api/v2/rounds") == ["admin", "blue"]
        assert roles("get", "/api/v2/rules") == ["admin", "blue"]
        assert roles("post", "/api/v2/telemetry") == ["admin", "blue"]
        assert roles("post", "/api/v2/keys") == ["admin"]
        assert roles("get", "/api/v2/audit") == ["admin"]
        assert roles("patch", "/api/v2/config/agents") == ["admin"]
        assert roles("get", "/api/v2/health") == ["admin", "blue", "red"]
        keys = _keys(server)
        assert server.call("GET", "/api/v2/health", key=keys["blue"])[1]["access"] == "blue"


def _cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**no_proxy(), "PYTHONPATH": str(SRC), "ASSAY_API_KEY": API_KEY, "ASSAY_SERVER": server.url}
    return subprocess.run(
        [sys.executable, "-c", "from assay.cli import main; main()", "keys", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_keys_are_created_listed_and_revoked_from_the_cli(tmp_path: Path) -> None:
    with serving(tmp_path, content=False) as server:
        made = _cli(server, "create", "ci-red", "--role", "red")
        assert made.returncode == 0, made.stderr
        name, secret = made.stdout.strip().split(": ")
        assert name == "ci-red (red)"
        assert server.call("GET", "/api/v2/agents", key=secret)[0] == 200
        assert server.call("GET", "/api/v2/alerts", key=secret)[0] == 403
        listed = _cli(server, "list")
        assert listed.returncode == 0 and listed.stdout.splitlines() == ["admin\tadmin", "ci-red\tred"]
        bad = _cli(server, "create", "x", "--role", "root")
        assert bad.returncode == 1 and "role" in bad.stderr
        assert _cli(server, "revoke", "ci-red").returncode == 0
        assert server.call("GET", "/api/v2/agents", key=secret)[0] == 401
        again = _cli(server, "revoke", "ci-red")
        assert again.returncode == 1 and "no key named 'ci-red'" in again.stderr
        denied = subprocess.run(
            [sys.executable, "-c", "from assay.cli import main; main()", "keys", "list", "--api-key", secret],
            capture_output=True,
            text=True,
            env={**no_proxy(), "PYTHONPATH": str(SRC), "ASSAY_SERVER": server.url},
            timeout=60,
            check=False,
        )
        assert denied.returncode == 1 and "401" in denied.stderr


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_key_revoked_elsewhere_stops_working_when_its_cache_entry_expires() -> None:
    """Another server process sharing the database revoked it: this one re-checks after the cache time."""
    stored = {Principal("api", "ci", Role.RED): slow_hash("s3cret")}
    clock = _Clock()
    ring = KeyRing(lambda: dict(stored), ttl=30.0, clock=clock)
    ring.reload()
    assert ring.cached("s3cret") is None  # not verified yet: the caller runs verify() off the event loop
    assert ring.verify("s3cret", "api") == Principal("api", "ci", Role.RED)
    stored.clear()  # revoked by another process
    clock.now = 29.0
    assert ring.cached("s3cret") == Principal("api", "ci", Role.RED)  # still within its cache time
    clock.now = 31.0
    assert ring.cached("s3cret") is None  # expired: checked again
    assert ring.verify("s3cret", "api") is None  # against what is stored now
    assert ring.cached("s3cret") is False


def test_legacy_named_keys_are_admin_keys() -> None:
    from assay.api._state import credential_name, principal_for

    assert principal_for("api_key:old") == Principal("api", "old", Role.ADMIN)
    assert principal_for("key:blue:watcher") == Principal("api", "watcher", Role.BLUE)
    assert principal_for("key:root:x") is None and principal_for("something") is None
    assert credential_name(Principal("api", "watcher", Role.BLUE)) == "key:blue:watcher"


def test_a_route_that_declares_no_role_admits_only_admin(tmp_path: Path) -> None:
    """Fail closed: a route added without require() still needs a key, and only an admin key passes."""
    import asyncio

    import httpx
    from fastapi import Depends

    from assay.api import ServerConfig, create_app
    from assay.api._app import fastapi_app
    from assay.api._state import credential_name

    edge = create_app(ServerConfig(data_dir=tmp_path, api_key=API_KEY, enrol_token="t" * 32))
    app = fastapi_app(edge)
    guard = app.state.assay_guard

    @app.get("/api/v2/forgotten", dependencies=[Depends(guard.authenticated)])
    def forgotten() -> dict[str, str]:
        return {"ok": "yes"}

    st = app.state.assay
    red = Principal("api", "r", Role.RED)
    st.store.set_credential(credential_name(red), slow_hash("red-secret"))
    st.keys.reload()

    async def calls() -> list[int]:
        transport = httpx.ASGITransport(app=edge)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [
                (await client.get("/api/v2/forgotten", headers=headers)).status_code
                for headers in ({}, {"KEY": "red-secret"}, {"KEY": API_KEY})
            ]

    assert asyncio.run(calls()) == [401, 403, 200]
    st.store.close()
