"""A Caldera user's scripted session, unchanged, against a real `assay serve --caldera-compat` under uvicorn
with a stockpile-shaped checkout as its content (tests/data/stockpile_checkout, loaded as it is), and an
independent Caldera-protocol client (tests/c2/caldera_client.py, sharing no code with assay.agent).

Only the checkout's harmless abilities run (`hostname`, `whoami`, `echo`); its stockpile-style abilities load
and are never executed."""

from __future__ import annotations

import base64
import getpass
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from c2_helpers import API_KEY, ENROL, Server, no_proxy, start_server, stop, wait_for

CLIENT = Path(__file__).resolve().parent / "caldera_client.py"
CHECKOUT = Path(__file__).resolve().parent.parent / "data" / "stockpile_checkout"
HARMLESS = "0b73bf34-fc5b-48f7-9194-dce993b915b1"
BASIC = "ed32b9c3-9593-4c33-b0db-e2007315096b"


def request(
    server: Server, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """One call with the headers of the reply (Server.call drops them)."""
    data = None if body is None else json.dumps(body).encode()
    sent = {"KEY": API_KEY, "Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(server.url + path, data, sent, method=method)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=60) as reply:
            return reply.status, reply.read(), {k.lower(): v for k, v in reply.headers.items()}
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("session")
    srv = start_server(base / "data", "--caldera-compat", "--content", str(CHECKOUT))
    try:
        status, config = srv.call("PATCH", "/api/v2/config/agents", {"sleep_min": 1, "sleep_max": 1})
        assert status == 200, config
        yield srv
    finally:
        stop(srv.process)


def test_sources_are_created_edited_and_deleted_in_calderas_shapes(server: Server) -> None:
    _, sources = server.call("GET", "/api/v2/sources")
    by_id = {s["id"]: s for s in sources}
    assert by_id[BASIC]["name"] == "basic"  # stockpile's own basic source, from data/sources
    assert [f["value"] for f in by_id[BASIC]["facts"]] == ["wav", "yml", "png"]
    body = {
        "name": "session source",
        "facts": [{"trait": "host.user.name", "value": "alice", "score": 2}],
        "rules": [{"action": "DENY", "trait": "host.user.name", "match": "root"}],
        "relationships": [{"source": {"trait": "host.user.name", "value": "alice"}, "edge": "has_home",
                           "target": {"trait": "host.dir.home", "value": "/home/alice"}, "score": 1}],
        "adjustments": [{"ability_id": "assay-harmless-whoami", "trait": "host.user.name", "value": "alice",
                         "offset": 5}],
    }  # fmt: skip
    status, created = server.call("POST", "/api/v2/sources", body)
    assert status == 200, created
    source_id = created["id"]
    assert created["facts"] == [
        {"trait": "host.user.name", "name": "host.user.name", "value": "alice", "score": 2}
    ]
    assert created["rules"] == body["rules"] and created["adjustments"] == body["adjustments"]
    assert created["relationships"][0]["target"] == {"trait": "host.dir.home", "value": "/home/alice"}
    # What GET returns can be sent back as it is (Caldera's UI does exactly that).
    status, replaced = server.call("PUT", f"/api/v2/sources/{source_id}", {**created, "name": "renamed"})
    assert status == 200 and replaced["name"] == "renamed" and replaced["adjustments"] == body["adjustments"]
    status, patched = server.call("PATCH", f"/api/v2/sources/{source_id}", {"rules": []})
    assert status == 200 and patched["rules"] == [] and patched["name"] == "renamed"
    assert server.call("GET", f"/api/v2/sources/{source_id}")[1]["name"] == "renamed"
    status, bad = server.call("POST", "/api/v2/sources", {"name": "x", "rules": [{"action": "MAYBE"}]})
    assert status == 400 and "ALLOW or DENY" in json.dumps(bad)
    assert server.call("DELETE", f"/api/v2/sources/{source_id}")[0] == 204
    assert server.call("GET", f"/api/v2/sources/{source_id}")[0] == 404
    status, from_file = server.call("DELETE", f"/api/v2/sources/{BASIC}")
    assert status == 409 and "data/sources" in json.dumps(from_file)


def test_planners_and_objectives_list_stockpile_definitions(server: Server) -> None:
    status, raw, headers = request(server, "GET", "/api/v2/planners")
    assert status == 200 and "docs/caldera-differences.md#planners" in headers["x-assay-differs"]
    planners = {p["name"]: p for p in json.loads(raw)}
    assert planners["look_ahead"]["id"] == "254c7035-de7d-4d76-a888-2c09ba594eca"
    assert planners["naive bayes"]["runs_as"] is None and planners["guided"]["runs_as"] == "guided"
    _, objective = server.call("GET", "/api/v2/objectives/7ac9ef07-defa-4d09-87c0-2719868efbb5")
    assert objective["name"] == "Stage files" and objective["goals"][0]["operator"] == "*"
    status, refused = server.call(
        "POST", "/api/v2/operations",
        {"name": "nb", "adversary": {"adversary_id": HARMLESS}, "planner": {"id": "naive bayes"}},
    )  # fmt: skip
    assert status == 400 and "no implementation" in json.dumps(refused)


def test_a_scripted_caldera_session_runs_unchanged(server: Server, tmp_path: Path) -> None:
    workdir = tmp_path / "agent"
    workdir.mkdir()
    client = subprocess.Popen(
        [sys.executable, str(CLIENT), "--server", f"{server.url}/enrol/{ENROL}", "--group", "session"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=no_proxy(),
    )  # fmt: skip
    try:

        def registered() -> dict[str, Any] | None:
            _, agents = server.call("GET", "/api/v2/agents")
            return next((a for a in agents if a["pid"] == client.pid), None)

        paw = wait_for(registered, what="the Caldera client to register")["paw"]

        # Change the agent's sleep, as Caldera's PATCH does; Assay says where it is stricter.
        status, raw, headers = request(
            server, "PATCH", f"/api/v2/agents/{paw}", {"sleep_min": 1, "sleep_max": 2}
        )
        assert status == 200 and json.loads(raw)["sleep_max"] == 2
        assert "agent-patch" in headers["x-assay-differs"]
        assert server.call("PATCH", f"/api/v2/agents/{paw}", {"sleep_min": -5})[0] == 422

        # Create the operation exactly as Caldera's docs do: planner and source by id, paused.
        body = {
            "name": "caldera session",
            "adversary": {"adversary_id": HARMLESS},
            "planner": {"id": "atomic"},
            "source": {"id": "basic"},
            "group": "session",
            "state": "paused",
        }
        status, raw, headers = request(server, "POST", "/api/v2/operations", body)
        assert status == 200, raw
        assert "operation-defaults" in headers["x-assay-differs"]
        op = json.loads(raw)
        assert op["source"] == {"id": BASIC} and op["planner"]["name"] == "atomic"
        assert op["objective"]["id"] == "495a9828-cab1-44dd-a0ca-66e58177d8cc" and op["state"] == "paused"
        time.sleep(2.5)  # two beacons at least: a paused operation hands out nothing
        _, links = server.call("GET", f"/api/v2/operations/{op['id']}/links")
        assert links == []
        status, resumed = server.call("PATCH", f"/api/v2/operations/{op['id']}", {"state": "running"})
        assert status == 200 and resumed["state"] == "running"

        def finished() -> list[dict[str, Any]] | None:
            _, current = server.call("GET", f"/api/v2/operations/{op['id']}")
            if current["state"] != "finished":
                return None
            return server.call("GET", f"/api/v2/operations/{op['id']}/links")[1]  # type: ignore[no-any-return]

        links = wait_for(finished, 90, "the operation to finish")
        by_ability = {(lk["ability_id"], lk["cleanup"]): lk for lk in links}
        host = socket.gethostname()
        assert by_ability[("assay-harmless-hostname", 0)]["stdout"].strip() == host
        assert by_ability[("assay-harmless-whoami", 0)]["stdout"].strip() == getpass.getuser()
        echo = by_ability[("assay-harmless-echo", 0)]
        assert echo["status"] == 0 and echo["stdout"].strip() == f"seen-{host}"  # a learned fact, used
        assert by_ability[("assay-harmless-echo", 1)]["stdout"].strip() == f"cleaned-{host}"
        assert all(lk["status"] == 0 and lk["pid"] > 0 for lk in links), links
        _, result = server.call("GET", f"/api/v2/operations/{op['id']}/links/{echo['id']}/result")
        assert json.loads(base64.b64decode(result["result"]))["stdout"].strip() == f"seen-{host}"

        status, report = server.call(
            "POST", f"/api/v2/operations/{op['id']}/report", {"enable_agent_output": True}
        )
        assert status == 200 and report["planner"] == "atomic"
        steps = report["steps"][paw]["steps"]
        assert [s["ability_id"] for s in steps][:3] == [
            "assay-harmless-hostname", "assay-harmless-whoami", "assay-harmless-echo",
        ]  # fmt: skip
        assert steps[0]["output"]["stdout"].strip() == host
        assert {f["trait"] for f in report["facts"]} >= {"file.sensitive.extension", "host.name.short"}
        status, events = server.call("POST", f"/api/v2/operations/{op['id']}/event-logs", {})
        assert status == 200 and {e["ability_metadata"]["ability_id"] for e in events} >= {
            "assay-harmless-echo"
        }
        assert server.call("GET", f"/api/v2/operations/{op['id']}/report")[0] == 405  # POST only, as Caldera

        # Payloads through /file/download with Caldera's headers.
        status, data, headers = request(
            server, "POST", "/file/download", None,
            {"file": "assay-harmless-probe.sh", "platform": "linux", "server": server.url, "paw": paw},
        )  # fmt: skip
        assert status == 200 and data == b"#!/bin/sh\necho payload-ran\n"
        assert headers["filename"] == "assay-harmless-probe.sh"
        assert headers["content-disposition"] == 'attachment; filename="assay-harmless-probe.sh"'
        assert (
            request(server, "POST", "/file/download", None, {"file": "nope.sh", "platform": "linux"})[0]
            == 404
        )

        # executor_change and new_contact reach the agent in its next beacon reply.
        change = {"action": "update_path", "executor": "sh", "value": "/bin/sh"}
        status, raw, headers = request(
            server,
            "PATCH",
            f"/api/v2/agents/{paw}",
            {"pending_contact": "websocket", "executor_change": change},
        )
        assert status == 200 and "executor-change" in headers["x-assay-differs"]
        bad = {"executor_change": {"action": "remove", "executor": "psh"}}
        assert server.call("PATCH", f"/api/v2/agents/{paw}", bad)[0] == 422  # the agent has no psh
        time.sleep(3)  # at least one beacon (sleep 1-2 s)
        assert server.call("POST", f"/api/v2/agents/kill/{paw}")[0] == 200
        assert client.wait(timeout=30) == 0
        lines = [json.loads(line) for line in client.stdout or [] if line.startswith("{")]
        directives = [e for e in lines if e["event"] == "directive"]
        assert directives and directives[0]["new_contact"] == "websocket"
        assert [d["executor_change"] for d in directives if d["executor_change"]] == [change]  # sent once
    finally:
        stop(client)
