"""The web UI's sessions over real HTTP: login, signed cookies, CSRF on every form, and what each role sees.

A real ``assay serve`` under uvicorn; the client is httpx with its own cookie jar, as a browser keeps one.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving import API_KEY, Server, start_server, stop
from web_helpers import browser, csrf_of, log_in


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("websession"))
    try:
        yield srv
    finally:
        stop(srv.process)


@pytest.fixture(scope="module")
def keys(server: Server) -> dict[str, str]:
    out = {"admin": API_KEY}
    for role in ("red", "blue"):
        out[role] = server.ok("POST", "/api/v2/keys", {"name": f"web-{role}", "role": role})["key"]
    return out


def test_the_login_form_wants_its_csrf_token_and_a_valid_key(server: Server) -> None:
    with browser(server) as client:
        first = client.get("/ui/operations")
        assert first.status_code == 303
        assert first.headers["location"] == "/ui/login?next=%2Fui%2Foperations"
        form = client.get("/ui/login")
        cookie = form.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        token = csrf_of(form)

        missing = client.post("/ui/login", data={"key": API_KEY})
        assert missing.status_code == 403 and "CSRF" in missing.text
        wrong = client.post("/ui/login", data={"csrf": token, "key": "not-a-key"})
        assert wrong.status_code == 401 and "not a valid API key" in wrong.text
        agent_token = client.post("/ui/login", data={"csrf": token, "key": "ops-enrol-token-" + "t" * 24})
        assert agent_token.status_code == 401  # the agents' enrolment token is not a key for people

        done = client.post("/ui/login", data={"csrf": token, "key": API_KEY, "next": "//evil.example/x"})
        assert done.status_code == 303 and done.headers["location"] == "/ui/"  # never off this UI
        page = client.get("/ui/operations")
        assert page.status_code == 200
        assert csrf_of(page) != token  # a token seen before login is not trusted after it


def test_every_form_refuses_a_missing_or_stale_csrf_token_and_changes_nothing(server: Server) -> None:
    with browser(server) as client:
        log_in(client, API_KEY)
        before = len(server.ok("GET", "/api/v2/operations"))
        adversary = server.ok("GET", "/api/v2/adversaries")[0]["adversary_id"]
        body = {"adversary_id": adversary, "name": "csrf probe", "group": "nobody-here"}
        for sent in ({}, {"csrf": "stale-token"}):
            refused = client.post("/ui/operations", data={**body, **sent})
            assert refused.status_code == 403 and "CSRF" in refused.text
        assert len(server.ok("GET", "/api/v2/operations")) == before

        # A form from another site carries no token either: the same POST with the page's token goes through.
        token = csrf_of(client.get("/ui/operations"))
        started = client.post("/ui/operations", data={**body, "csrf": token, "sandbox": "on"})
        assert started.status_code == 303, started.text[:300]
        op_id = started.headers["location"].rsplit("/", 1)[1]
        op = server.ok("GET", f"/api/v2/operations/{op_id}")
        assert op["name"] == "csrf probe" and op["sandbox"] is True  # the form's sandbox toggle reached it
        for path, data in (
            (f"/ui/operations/{op_id}/state", {"state": "finished"}),
            ("/ui/content/ability", {"yaml": "- id: x"}),
            ("/ui/logout", {}),
        ):
            assert client.post(path, data=data).status_code == 403, path
        client.post(f"/ui/operations/{op_id}/state", data={"state": "finished", "csrf": token})
        assert server.wait_for(op_id)["state"] == "finished"


def test_a_tampered_or_forged_cookie_is_no_session(server: Server) -> None:
    with browser(server) as client:
        log_in(client, API_KEY)
        cookie = client.cookies["assay_session"]
        payload, _, mac = cookie.partition(".")
        data = json.loads(base64.urlsafe_b64decode(payload))
        data["p"] = "someone-else"
        forged = base64.urlsafe_b64encode(json.dumps(data).encode()).decode() + "." + mac
        for value in (forged, payload + ".", "garbage", "x" * 5000):
            with browser(server) as other:
                other.cookies.set("assay_session", value)
                assert other.get("/ui/").status_code == 303, value[:40]  # back to the login page
        assert client.get("/ui/").status_code == 200  # the genuine cookie still works


def _nav(page: httpx.Response) -> set[str]:
    header = page.text.split("<header", 1)[1].split("</header>", 1)[0]
    return set(re.findall(r'href="(/ui/[a-z]*)"', header))


@pytest.mark.parametrize(
    ("role", "may", "may_not"),
    [
        ("red", ["/ui/content", "/ui/operations"], ["/ui/rounds", "/ui/alerts", "/ui/rules"]),
        ("blue", ["/ui/rounds", "/ui/alerts", "/ui/rules"], ["/ui/content", "/ui/operations"]),
        ("admin", ["/ui/content", "/ui/operations", "/ui/rounds", "/ui/alerts", "/ui/rules"], []),
    ],
)
def test_each_role_sees_only_its_pages(
    server: Server, keys: dict[str, str], role: str, may: list[str], may_not: list[str]
) -> None:
    with browser(server) as client:
        log_in(client, keys[role])
        home = client.get("/ui/")
        assert home.status_code == 200
        assert _nav(home) - {"/ui/"} == set(may)  # the navigation offers exactly what the role may see
        for path in may:
            assert client.get(path).status_code == 200, path
        for path in may_not:
            refused = client.get(path)
            assert (
                refused.status_code == 403 and f"needs {'red' if role == 'blue' else 'blue'}" in refused.text
            )


def test_round_downloads_and_streams_follow_the_roles(server: Server, keys: dict[str, str]) -> None:
    ops: list[dict[str, Any]] = server.ok("GET", "/api/v2/operations")
    finished = next(op for op in ops if op["state"] == "finished")  # from the CSRF test's operation
    paths = [f"/ui/rounds/{finished['id']}/{name}" for name in ("report.html", "report.md", "layer.json")]
    with browser(server) as anonymous:
        for path in paths:
            assert anonymous.get(path).status_code == 303  # to the login page
        assert anonymous.get(f"/ui/stream/operations/{finished['id']}").status_code == 401
    with browser(server) as red:
        log_in(red, keys["red"])
        for path in paths:
            assert red.get(path).status_code == 403, path
    with browser(server) as blue:
        log_in(blue, keys["blue"])
        for path in paths:
            got = blue.get(path)
            assert got.status_code == 200, path
            assert finished["id"] in got.text


def test_deleting_a_key_ends_its_sessions(server: Server) -> None:
    secret = server.ok("POST", "/api/v2/keys", {"name": "web-short-lived", "role": "blue"})["key"]
    with browser(server) as client:
        log_in(client, secret)
        assert client.get("/ui/rounds").status_code == 200
        status, _ = server.call("DELETE", "/api/v2/keys/web-short-lived")
        assert status in (200, 204)
        assert client.get("/ui/rounds").status_code == 303


def test_pages_forbid_framing_and_foreign_scripts(server: Server, tmp_path: Path) -> None:
    with browser(server) as client:
        log_in(client, API_KEY)
        page = client.get("/ui/")
        assert page.headers["x-frame-options"] == "DENY"
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert page.headers["cache-control"] == "no-store"
        assert "<script>" not in page.text  # no inline script: the CSP would refuse it anyway
