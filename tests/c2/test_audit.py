"""The audit trail on a real server: every command dispatched, every key behind a state change (refused ones
too), every approval (a link an operator approved, an agent an operator trusted); readable by admin only."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from c2_helpers import ENROL, Server, serving, wait_for


def beacon(server: Server, profile: dict[str, Any], path: str = f"/enrol/{ENROL}/beacon") -> dict[str, Any]:
    raw = base64.b64encode(json.dumps(profile).encode())
    status, body = server.call("POST", path, raw=raw, key=None, headers={"Content-Type": "text/plain"})
    assert status == 200, body
    return json.loads(base64.b64decode(body))  # type: ignore[no-any-return]


def test_dispatches_keys_and_approvals_are_in_the_trail(tmp_path: Path) -> None:
    with serving(tmp_path, "--caldera-compat") as server:
        _, made = server.call("POST", "/api/v2/keys", {"name": "operator", "role": "red"})
        red = made["key"]
        profile = {"paw": "aud1", "platform": "linux", "executors": ["sh"], "group": "ga"}
        beacon(server, profile)
        body = {"name": "manual", "adversary": {"adversary_id": "c2-small"}, "group": "ga", "autonomous": 0}
        status, op = server.call("POST", "/api/v2/operations", body, key=red)
        assert status == 200, op

        def paused() -> dict[str, Any] | None:
            _, links = server.call("GET", f"/api/v2/operations/{op['id']}/links", key=red)
            return next((lk for lk in links if lk["status"] == -1), None)  # -1: waiting for approval

        link = wait_for(paused, what="a link waiting for approval")
        assert json.loads(beacon(server, profile)["instructions"]) == []  # not approved: not handed out
        path = f"/api/v2/operations/{op['id']}/links/{link['id']}"
        assert server.call("PATCH", path, {"status": -3}, key=red)[0] == 200

        def handed() -> list[Any]:
            return json.loads(beacon(server, profile)["instructions"])  # type: ignore[no-any-return]

        (instruction,) = wait_for(handed, what="the approved link to be handed out")
        assert json.loads(instruction)["id"] == link["id"]
        assert server.call("GET", "/api/v2/audit", key=red)[0] == 403  # the trail is the admin's
        beacon(server, {**profile, "paw": "aud2"}, "/beacon")  # unenrolled: untrusted until approved
        assert server.call("PATCH", "/api/v2/agents/aud2", {"trusted": True}, key=red)[0] == 200

        status, trail = server.call("GET", "/api/v2/audit")
        assert status == 200
        rows = [(e["kind"], e["principal"], e["link_id"], e["data"]) for e in trail]
        created = [r for r in rows if r[0] == "api" and r[3]["path"] == "/api/v2/operations"]
        assert [(r[1], r[3]["status"], r[3]["created"]) for r in created] == [("api:operator", 200, op["id"])]
        assert ("approval", "api:operator", link["id"], {"link": {"status": -3}}) in rows
        assert ("approval", "api:operator", None, {"trusted": True}) in rows
        dispatched = [r for r in rows if r[0] == "dispatch" and r[2] == link["id"]]
        assert len(dispatched) == 1 and dispatched[0][1] == "agent:aud1"
        assert dispatched[0][3]["command"] == link["command"] or dispatched[0][3]["command"].startswith(
            "echo"
        )
        refused = [r for r in rows if r[0] == "api" and r[3]["status"] == 403]
        assert refused == [], "a GET is not a state change"
        assert server.call("POST", "/api/v2/keys", {"name": "sneaky", "role": "admin"}, key=red)[0] == 403
        _, trail = server.call("GET", "/api/v2/audit?kind=api")
        assert [(e["principal"], e["data"]["status"]) for e in trail if e["data"]["path"] == "/api/v2/keys"][
            -1
        ] == ("api:operator", 403)  # a refused attempt with a valid key is recorded, with its key
