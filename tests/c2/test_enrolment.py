"""Agent enrolment on a real server, with crafted beacons: an agent without the enrolment token (or deleted)
gets no command and writes no result, neither into its own links nor into another agent's; a paw enrolled with
the token cannot be borrowed by a beacon without it. The three ``--caldera-unenrolled`` policies."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from c2_helpers import ENROL, Server, serving, wait_for

TOKEN_PATH = f"/enrol/{ENROL}/beacon"


def beacon(
    server: Server, profile: dict[str, Any], path: str = TOKEN_PATH, **headers: str
) -> tuple[int, Any]:
    raw = base64.b64encode(json.dumps(profile).encode())
    status, body = server.call(
        "POST", path, raw=raw, key=None, headers={"Content-Type": "text/plain", **headers}
    )
    if status == 200:
        return status, json.loads(base64.b64decode(body))
    return status, body


def instructions(reply: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(i) for i in json.loads(reply["instructions"])]


def result(link_id: str, output: str) -> dict[str, Any]:
    return {"id": link_id, "output": base64.b64encode(output.encode()).decode(), "status": "0", "pid": "4242"}


def _profile(paw: str, group: str) -> dict[str, Any]:
    return {"paw": paw, "platform": "linux", "executors": ["sh"], "group": group, "host": "h"}


def _first_link(server: Server, paw: str, group: str) -> tuple[str, dict[str, Any]]:
    """Start an operation for ``group``; the enrolled agent ``paw`` takes its first link (never answered)."""
    status, op = server.call(
        "POST",
        "/api/v2/operations",
        {"name": f"op-{group}", "adversary": {"adversary_id": "c2-slow"}, "group": group},
    )
    assert status == 200, op

    def handed() -> dict[str, Any] | None:
        found = instructions(beacon(server, _profile(paw, group))[1])
        return found[0] if found else None

    return op["id"], wait_for(handed, what="the enrolled agent's first link")


def _link(server: Server, op_id: str, link_id: str) -> dict[str, Any]:
    status, link = server.call("GET", f"/api/v2/operations/{op_id}/links/{link_id}")
    assert status == 200, link
    return link  # type: ignore[no-any-return]


def test_unenrolled_agents_get_no_command_and_write_into_no_link(tmp_path: Path) -> None:
    with serving(tmp_path, "--caldera-compat") as server:
        assert server.call("PATCH", "/api/v2/config/agents", {"sleep_min": 1, "sleep_max": 1})[0] == 200
        status, reply = beacon(server, _profile("owner", "g1"))
        assert status == 200
        _, owner = server.call("GET", "/api/v2/agents/owner")
        assert owner["trusted"] is True and owner["enrolled"] is True
        op_id, link = _first_link(server, "owner", "g1")

        # A stranger without the token: registered, untrusted, no command while the operation runs.
        status, reply = beacon(server, _profile("stranger", "g1"), "/beacon")
        assert status == 200 and instructions(reply) == []
        _, stranger = server.call("GET", "/api/v2/agents/stranger")
        assert stranger["trusted"] is False and stranger["enrolled"] is False
        # ... and its results for the owner's link are refused, naming why; the link is untouched.
        status, body = beacon(
            server, {**_profile("stranger", "g1"), "results": [result(link["id"], "forged")]}, "/beacon"
        )
        assert status == 409 and "not trusted" in body["error"], body
        # The owner's paw without the token: refused outright (a paw is no secret).
        status, body = beacon(
            server, {**_profile("owner", "g1"), "results": [result(link["id"], "forged")]}, "/beacon"
        )
        assert status == 403 and "enrolled with the token" in body["error"], body
        # A wrong token in the path or in a Bearer header: 401 before anything is decoded.
        assert beacon(server, _profile("owner", "g1"), "/enrol/wrong-token/beacon")[0] == 401
        assert beacon(server, _profile("owner", "g1"), "/beacon", Authorization="Bearer wrong")[0] == 401
        assert _link(server, op_id, link["id"])["status"] == -3  # still waiting for the owner's result
        # An enrolled agent writes nothing into another agent's link either.
        assert beacon(server, _profile("other", "g2"))[0] == 200
        status, body = beacon(server, {**_profile("other", "g2"), "results": [result(link["id"], "forged")]})
        assert status == 409 and "belongs to agent owner" in body["error"], body
        assert _link(server, op_id, link["id"])["status"] == -3

        # The owner (token in a Bearer header this time) completes its link.
        status, _ = beacon(
            server, {**_profile("owner", "g1"), "results": [result(link["id"], "real")]}, "/beacon",
            Authorization=f"Bearer {ENROL}",
        )  # fmt: skip
        assert status == 200
        assert _link(server, op_id, link["id"])["status"] == 0

        # An operator approves the stranger: audited, and from then on it gets work (a new operation).
        assert server.call("PATCH", "/api/v2/agents/stranger", {"trusted": True})[0] == 200
        _, trail = server.call("GET", "/api/v2/audit?paw=stranger")
        kinds = [(e["kind"], e["principal"], e["data"]) for e in trail]
        assert ("register", None, {"host": "h", "enrolled": False, "trusted": False}) in kinds
        assert ("agent", "api:admin", {"patch": {"trusted": True}}) in kinds

        op = {"name": "after", "adversary": {"adversary_id": "c2-small"}, "group": "g1"}
        assert server.call("POST", "/api/v2/operations", op)[0] == 200

        def stranger_works() -> bool:
            return bool(instructions(beacon(server, _profile("stranger", "g1"), "/beacon")[1]))

        wait_for(stranger_works, what="the approved agent's first link")


def test_a_deleted_agent_gets_no_command_and_cannot_finish_its_old_links(tmp_path: Path) -> None:
    with serving(tmp_path, "--caldera-compat") as server:
        assert beacon(server, _profile("gone", "g3"))[0] == 200
        op_id, link = _first_link(server, "gone", "g3")
        assert server.call("DELETE", "/api/v2/agents/gone")[0] == 204
        # Whoever beacons as that paw now, without the token, is a new untrusted agent.
        status, reply = beacon(server, _profile("gone", "g3"), "/beacon")
        assert status == 200 and instructions(reply) == []
        status, body = beacon(
            server, {**_profile("gone", "g3"), "results": [result(link["id"], "late")]}, "/beacon"
        )
        assert status == 409 and "not trusted" in body["error"]
        assert _link(server, op_id, link["id"])["status"] == -3

        # A deleted native agent: its key is refused on every contact.
        status, enrolled = server.call("POST", "/agent/enrol", {"token": ENROL, "paw": "natgone"}, key=None)
        assert status == 200
        bearer = {"Authorization": f"Bearer {enrolled['key']}"}
        assert server.call("DELETE", "/api/v2/agents/natgone")[0] == 204
        status, body = server.call("POST", "/agent/beacon", {"wait": 0}, key=None, headers=bearer)
        assert status == 401, body
        status, body = server.call(
            "POST", "/agent/results", {"results": [{"id": link["id"], "status": 0}]}, key=None, headers=bearer
        )
        assert status == 401, body
        assert _link(server, op_id, link["id"])["status"] == -3
        # A wrong enrolment token enrols nobody.
        status, body = server.call("POST", "/agent/enrol", {"token": "wrong", "paw": "x"}, key=None)
        assert status == 401 and server.call("GET", "/api/v2/agents/x")[0] == 404


def test_the_unenrolled_policy_is_a_setting(tmp_path: Path) -> None:
    (tmp_path / "refuse").mkdir()
    (tmp_path / "open").mkdir()
    with serving(tmp_path / "refuse", "--caldera-compat", "--caldera-unenrolled", "refuse") as server:
        status, body = beacon(server, _profile("nope", "g"), "/beacon")
        assert status == 403 and "/enrol/<token>/beacon" in body["error"]
        assert server.call("GET", "/api/v2/agents/nope")[0] == 404
        assert beacon(server, _profile("yes", "g"))[0] == 200
        assert any("an agent without the token is refused" in line for line in server.lines)
    with serving(tmp_path / "open", "--caldera-compat", "--caldera-unenrolled", "trusted") as server:
        assert beacon(server, _profile("open", "g"), "/beacon")[0] == 200
        _, agent = server.call("GET", "/api/v2/agents/open")
        assert agent["trusted"] is True and agent["enrolled"] is False
        assert any("anyone who can reach this port" in line for line in server.lines)
