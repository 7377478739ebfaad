"""Caldera's /beacon protocol against a real `assay serve --caldera-compat`, driven by an independent client
(tests/c2/caldera_client.py, written from the protocol description, sharing no code with assay.agent)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from c2_helpers import ENROL, Server, no_proxy, run_operation, serving, stop, wait_for

CLIENT = Path(__file__).resolve().parent / "caldera_client.py"


@pytest.fixture(scope="module")
def compat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("compat"), "--caldera-compat") as server:
        # Caldera's defaults are 30-60 s between beacons; a test wants the agents quick.
        status, config = server.call("PATCH", "/api/v2/config/agents", {"sleep_min": 1, "sleep_max": 1})
        assert status == 200 and config["sleep_min"] == 1
        yield server


def beacon(server: Server, profile: dict[str, Any], path: str = f"/enrol/{ENROL}/beacon") -> tuple[int, Any]:
    """A beacon with the enrolment token in its path (as Sandcat sends it with -server URL/enrol/TOKEN)."""
    raw = base64.b64encode(json.dumps(profile).encode())
    status, body = server.call("POST", path, raw=raw, key=None, headers={"Content-Type": "text/plain"})
    if status == 200:
        assert isinstance(body, bytes)
        return status, json.loads(base64.b64decode(body))
    return status, body


def test_independent_caldera_client_runs_an_operation_end_to_end(compat: Server, tmp_path: Path) -> None:
    workdir = tmp_path / "agent"
    workdir.mkdir()
    client = subprocess.Popen(
        [sys.executable, str(CLIENT), "--server", f"{compat.url}/enrol/{ENROL}", "--group", "cal"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=no_proxy(),
    )
    try:

        def registered() -> dict[str, Any] | None:
            _, agents = compat.call("GET", "/api/v2/agents")
            return next((a for a in agents if a["pid"] == client.pid), None)

        agent = wait_for(registered, what="the Caldera client to register")
        paw = agent["paw"]
        assert len(paw) == 6 and agent["contact"] == "HTTP" and agent["group"] == "cal"
        assert agent["host_ip_addrs"] == ["127.0.0.1"] and agent["deadman_enabled"] is True
        assert agent["status"] == "alive" and agent["sleep_min"] == 1

        op = run_operation(compat, "c2-small", "cal")
        _, links = compat.call("GET", f"/api/v2/operations/{op['id']}/links")
        by_ability = {(lk["ability_id"], lk["cleanup"]): lk for lk in links}
        echo = by_ability[("c2-echo", 0)]
        assert echo["status"] == 0 and echo["stdout"] == f"hello-from-{paw}\n"
        assert echo["pid"] > 0 and echo["agent_reported_time"] is not None
        assert by_ability[("c2-id", 0)]["stdout"].strip().isdigit(), json.dumps(links)
        assert by_ability[("c2-echo", 1)]["stdout"] == f"cleaned-{paw}\n"  # cleanup ran too

        payload_op = run_operation(compat, "c2-payload", "cal")
        _, (payload_link,) = compat.call("GET", f"/api/v2/operations/{payload_op['id']}/links")
        assert payload_link["status"] == 0 and payload_link["stdout"] == "probe-ran\n"
        assert (workdir / "c2-probe.sh").read_bytes().startswith(b"#!/bin/sh")

        # The audit trail: which key started the operation, which agent ran what, and when.
        _, trail = compat.call("GET", f"/api/v2/audit?operation_id={op['id']}")
        started = [e for e in trail if e["kind"] == "api"]
        assert started[0]["principal"] == "api:admin" and started[0]["data"]["path"] == "/api/v2/operations"
        dispatched = {e["link_id"]: e for e in trail if e["kind"] == "dispatch"}
        assert set(dispatched) == {lk["id"] for lk in links}
        assert dispatched[echo["id"]]["paw"] == paw
        assert dispatched[echo["id"]]["data"]["command"] == f"echo hello-from-{paw}"
        assert dispatched[echo["id"]]["at"] <= echo["finished_at"]

        # Kill: the reply carries watchdog 1, the agent's own watchdog ends its loop.
        status, killed = compat.call("POST", f"/api/v2/agents/kill/{paw}")
        assert status == 200 and killed["status"] == "pending kill"
        assert client.wait(timeout=30) == 0
        events = [json.loads(line) for line in client.stdout or [] if line.startswith("{")]
        ran = {e["id"]: e for e in events if e["event"] == "ran"}
        assert ran[echo["id"]]["pid"] == echo["pid"]  # the pid the agent reported, sent as a string
        assert any(e["event"] == "watchdog" for e in events)
        _, after = compat.call("GET", f"/api/v2/agents/{paw}")
        assert after["status"] == "dead"
    finally:
        stop(client)


def test_beacon_reply_shapes_match_caldera(compat: Server) -> None:
    status, reply = beacon(compat, {"paw": "", "platform": "linux", "executors": ["sh"], "group": "shape"})
    assert status == 200
    assert set(reply) == {"paw", "sleep", "watchdog", "instructions"}
    assert isinstance(reply["instructions"], str) and json.loads(reply["instructions"]) == []
    assert isinstance(reply["sleep"], int) and reply["watchdog"] == 0
    paw = reply["paw"]
    op = compat.call(
        "POST",
        "/api/v2/operations",
        {"name": "shape", "adversary": {"adversary_id": "c2-small"}, "group": "shape"},
    )[1]
    status, reply = beacon(compat, {"paw": paw, "platform": "linux", "executors": ["sh"]})
    (encoded,) = json.loads(reply["instructions"])
    instruction = json.loads(encoded)  # each item is itself a JSON string
    assert set(instruction) == {
        "id", "sleep", "command", "executor", "timeout", "payloads", "uploads", "deadman", "delete_payload",
    }  # fmt: skip
    assert base64.b64decode(instruction["command"]).decode() == f"echo hello-from-{paw}"
    assert instruction["executor"] == "sh" and instruction["deadman"] is False
    # Delivered exactly once.
    assert json.loads(beacon(compat, {"paw": paw, "platform": "linux"})[1]["instructions"]) == []
    # A result with numbers as strings and no pid is accepted (Caldera: 500), and such a beacon gets "[]".
    result = {"id": instruction["id"], "output": base64.b64encode(b"hi\n").decode(), "stderr": "",
              "exit_code": "0", "status": "0", "agent_reported_time": "2026-11-24T10:00:00Z"}  # fmt: skip
    status, reply = beacon(compat, {"paw": paw, "results": [result]})
    assert status == 200 and reply["instructions"] == "[]"
    # The same result again (a re-send) is a duplicate: still 200, nothing changes.
    assert beacon(compat, {"paw": paw, "results": [{**result, "output": ""}]})[0] == 200
    _, links = compat.call("GET", f"/api/v2/operations/{op['id']}/links")
    first = next(lk for lk in links if lk["id"] == instruction["id"])
    assert first["stdout"] == "hi\n" and first["pid"] is None and first["exit_code"] == 0
    assert first["started_at"] == datetime(2026, 11, 24, 10, tzinfo=UTC).timestamp()
    compat.call("PATCH", f"/api/v2/agents/{paw}", {"group": "elsewhere"})


def test_sandcat_profile_with_go_nulls_registers(compat: Server) -> None:
    # Sandcat's GetFullProfile, as Go marshals it with P2P off: nil maps and slices become null.
    profile = {
        "paw": "gonulls",
        "server": compat.url,
        "group": "red",
        "host": "h",
        "contact": "HTTP",
        "username": "u",
        "architecture": "amd64",
        "platform": "linux",
        "location": "./splunkd",
        "pid": 42,
        "ppid": 1,
        "executors": ["sh", "proc"],
        "privilege": "User",
        "exe_name": "splunkd",
        "proxy_receivers": None,
        "origin_link_id": "",
        "deadman_enabled": True,
        "available_contacts": ["HTTP"],
        "host_ip_addrs": None,
        "upstream_dest": compat.url,
    }
    status, reply = beacon(compat, profile)
    assert status == 200 and reply["paw"] == "gonulls" and isinstance(reply["sleep"], int)
    _, agent = compat.call("GET", "/api/v2/agents/gonulls")
    assert agent["executors"] == ["sh", "proc"] and agent["deadman_enabled"] is True


def test_untrusted_agents_get_no_instructions_until_trusted_again(compat: Server) -> None:
    profile = {"paw": "untrust1", "platform": "linux", "executors": ["sh"], "group": "tr"}
    assert beacon(compat, profile)[0] == 200
    op = {"name": "t", "adversary": {"adversary_id": "c2-small"}, "group": "tr"}
    assert compat.call("POST", "/api/v2/operations", op)[0] == 200  # its first link waits for the agent
    assert compat.call("PATCH", "/api/v2/agents/untrust1", {"trusted": False})[0] == 200
    assert json.loads(beacon(compat, profile)[1]["instructions"]) == []
    assert compat.call("PATCH", "/api/v2/agents/untrust1", {"trusted": True})[0] == 200
    (encoded,) = json.loads(beacon(compat, profile)[1]["instructions"])
    assert base64.b64decode(json.loads(encoded)["command"]) == b"echo hello-from-untrust1"
    compat.call("PATCH", "/api/v2/agents/untrust1", {"group": "elsewhere"})


def test_native_paws_cannot_be_borrowed_through_beacon(compat: Server) -> None:
    status, enrolled = compat.call("POST", "/agent/enrol", {"token": ENROL, "host": "h"}, key=None)
    assert status == 200
    status, body = beacon(compat, {"paw": enrolled["paw"], "platform": "linux"})
    assert status == 403 and "native agent" in body["error"]


def test_beacon_is_off_without_caldera_compat(tmp_path: Path) -> None:
    with serving(tmp_path, content=False) as server:
        status, body = beacon(server, {"paw": "x", "platform": "linux"})
        assert status == 404 and "--caldera-compat" in body["error"]
        status, body = server.call("POST", "/file/download", key=None, headers={"file": "x"})
        assert status == 401 and "--caldera-compat" in body["error"]
