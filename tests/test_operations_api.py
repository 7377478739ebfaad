"""Operations through the REST API in Caldera's shapes, against `assay serve` under uvicorn and real agent
processes: facts learned and used, manual approval, potential links, state changes, reports, content created
through the API (kept across a restart), and a link whose agent died."""

from __future__ import annotations

import base64
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serving import Server, agent_process, serving, start_agent, stop

CONTENT = """\
- id: learn-users
  name: Learn users
  tactic: discovery
  technique_id: T1087.001
  safety: safe
  platforms:
    linux:
      sh:
        command: printf 'alice\\nbob o'"'"'neil\\n'
        parsers:
          plugins.stockpile.app.parsers.basic:
            - source: host.user.name
- id: greet
  name: Greet a user
  tactic: discovery
  technique_id: T1033
  safety: safe
  platforms:
    linux:
      sh:
        command: 'echo "hello #{host.user.name}"'
        cleanup: 'echo "bye #{host.user.name}"'
- id: os-kv
  name: OS as key=value
  tactic: discovery
  technique_id: T1082
  safety: safe
  platforms:
    linux:
      python:
        command: |
          print("host.os.name=linux")
        parsers:
          - module: kv
            parserconfigs:
              - source: host.os.name
- id: hang
  name: Hang
  tactic: execution
  technique_id: T1059.004
  safety: safe
  platforms:
    linux:
      sh:
        command: sleep 6
        timeout: 2
"""


def _adversary(adv_id: str, order: list[str]) -> str:
    return json.dumps({"adversary_id": adv_id, "name": adv_id, "atomic_ordering": order})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("ops")
    content = base / "content"
    content.mkdir()
    (content / "abilities.yml").write_text(CONTENT)
    (content / "facts.yml").write_text(_adversary("facts", ["greet", "learn-users", "os-kv"]))
    (content / "manual.yml").write_text(_adversary("manual", ["learn-users", "os-kv"]))
    (content / "hang.yml").write_text(_adversary("hang", ["hang", "os-kv"]))
    with serving(base / "data", "--content", str(content)) as srv:
        yield srv


def _create(server: Server, adversary: str, group: str, **extra: Any) -> dict[str, Any]:
    body = {"name": f"op-{group}", "adversary": {"adversary_id": adversary}, "planner": {"id": "atomic"}}
    return dict(server.ok("POST", "/api/v2/operations", {**body, "group": group, **extra}))


def test_facts_learned_by_one_link_fill_the_next_and_reports_have_caldera_shapes(server: Server) -> None:
    with agent_process(server, "facts") as (_, paw):
        op = _create(server, "facts", "facts", source={"id": ""})
        op = server.wait_for(op["id"])
    chain = op["chain"]
    ran = [
        (lk["ability_id"], lk["plaintext_command"]) for lk in chain if lk["status"] == 0 and not lk["cleanup"]
    ]
    # `greet` waits for host.user.name, runs once per user the moment they are learned; values are escaped.
    assert ran == [
        ("learn-users", "printf 'alice\\nbob o'\"'\"'neil\\n'"),
        ("greet", 'echo "hello alice"'),
        ("greet", 'echo "hello bob o\'neil"'),
        ("os-kv", 'print("host.os.name=linux")'),
    ]
    greets = {lk["stdout"] for lk in chain if lk["ability_id"] == "greet" and not lk["cleanup"]}
    assert greets == {"hello alice\n", "hello bob o'neil\n"}
    cleanups = [lk["plaintext_command"] for lk in chain if lk["cleanup"]]
    assert cleanups == ['echo "bye bob o\'neil"', 'echo "bye alice"']  # newest first
    first = chain[0]
    assert base64.b64decode(first["command"]).decode() == first["plaintext_command"]
    assert first["used"] == [] and chain[1]["used"] == [
        {"trait": "host.user.name", "value": "alice", "name": "host.user.name"}
    ]
    facts = server.ok("GET", f"/api/v2/facts/{op['id']}")["found"]
    assert {(f["trait"], f["value"], f["origin_type"]) for f in facts} == {
        ("host.user.name", "alice", "LEARNED"), ("host.user.name", "bob o'neil", "LEARNED"),
        ("host.os.name", "linux", "LEARNED"),
    }  # fmt: skip
    assert all(f["collected_by"] == [paw] for f in facts)
    result = server.ok("GET", f"/api/v2/operations/{op['id']}/links/{chain[1]['id']}/result")
    assert json.loads(base64.b64decode(result["result"])) == {
        "stdout": "hello alice\n",
        "stderr": "",
        "exit_code": "0",
    }
    report = server.ok("POST", f"/api/v2/operations/{op['id']}/report", {"enable_agent_output": True})
    steps = report["steps"][paw]["steps"]
    assert [s["ability_id"] for s in steps][:4] == ["learn-users", "greet", "greet", "os-kv"]
    assert steps[0]["output"]["stdout"] == "alice\nbob o'neil\n" and steps[0]["pid"] > 0
    assert report["skipped_abilities"] == [{paw: []}] and report["planner"] == "atomic"
    assert server.call("GET", f"/api/v2/operations/{op['id']}/report")[0] == 405  # POST only, as Caldera
    events = server.ok("POST", f"/api/v2/operations/{op['id']}/event-logs", {})
    assert len(events) == len(chain) and "output" not in events[0]
    assert (
        events[0]["ability_metadata"]["ability_id"] == "learn-users" and events[0]["pid"] == chain[0]["pid"]
    )


def test_manual_approval_potential_links_and_state_changes(server: Server) -> None:
    with agent_process(server, "manual") as (_, paw):
        op = _create(server, "manual", "manual", autonomous=0, state="paused")
        op_id = op["id"]
        assert op["autonomous"] == 0 and op["state"] == "paused" and op["chain"] == []
        op = server.ok("PATCH", f"/api/v2/operations/{op_id}", {"state": "running"})
        (pending,) = op["chain"]
        assert pending["status"] == -1 and pending["ability_id"] == "learn-users"
        potential = server.ok("GET", f"/api/v2/operations/{op_id}/potential-links/{paw}")
        assert [p["ability"]["ability_id"] for p in potential] == ["os-kv"]  # learn-users is already planned
        manual = server.ok(
            "POST", f"/api/v2/operations/{op_id}/potential-links",
            {"paw": paw, "executor": {"name": "sh", "command": "echo manual"}},
        )  # fmt: skip
        assert manual["status"] == -1 and manual["ability_id"] == "manual"
        new = base64.b64encode(b"echo approved").decode()
        approved = server.ok(
            "PATCH", f"/api/v2/operations/{op_id}/links/{manual['id']}", {"status": -3, "command": new}
        )
        assert approved["plaintext_command"] == "echo approved"
        # From now on links need no approval and are base64-encoded; links already waiting keep waiting.
        op = server.ok("PATCH", f"/api/v2/operations/{op_id}", {"autonomous": 1, "obfuscator": "base64"})
        assert (op["autonomous"], op["obfuscator"]) == (1, "base64")
        server.ok("PATCH", f"/api/v2/operations/{op_id}/links/{pending['id']}", {"status": -2})
        status, error = server.call(
            "PATCH", f"/api/v2/operations/{op_id}/links/{pending['id']}", {"status": -3}
        )
        assert status == 400 and "finished" in error["error"]
        op = server.wait_for(op_id)
    chain = {lk["ability_id"]: lk for lk in op["chain"] if not lk["cleanup"]}
    assert chain["manual"]["stdout"] == "approved\n" and chain["learn-users"]["status"] == -2
    # os-kv was planned after the switch to base64: the agent ran the encoded form and it worked.
    assert base64.b64decode(chain["os-kv"]["command"]).decode().startswith("exec(__import__('base64')")
    assert chain["os-kv"]["status"] == 0
    assert server.call("PATCH", f"/api/v2/operations/{op_id}", {"state": "running"})[0] == 409
    status, error = server.call("PATCH", f"/api/v2/operations/{op_id}", {"bogus": 1})
    assert status == 422


def test_a_link_whose_agent_died_times_out_on_the_server_and_the_operation_finishes(server: Server) -> None:
    proc, _paw = start_agent(server, "hang")
    try:
        op = _create(server, "hang", "hang", link_grace=1.0, collect_timeout=2.0)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            chain = server.ok("GET", f"/api/v2/operations/{op['id']}")["chain"]
            if chain and chain[0]["collect"] is not None:
                break
            time.sleep(0.05)
        stop(proc, signal.SIGKILL)  # the agent dies with the link running; nothing will report it
        started = time.monotonic()
        op = server.wait_for(op["id"], timeout=30)
        took = time.monotonic() - started
    finally:
        stop(proc)
    hang, after = op["chain"][0], op["chain"][1]
    assert hang["status"] == 124 and "no result from agent" in hang["stderr"]
    assert (
        after["ability_id"] == "os-kv" and after["status"] == -4 and "did not collect" in after["skip_reason"]
    )
    print(
        f"\ndead agent: operation finished {took:.1f} s after the agent was killed (timeout 2 s + grace 1 s)"
    )


def test_content_created_through_the_api_is_validated_and_kept_across_a_restart(tmp_path: Path) -> None:
    ability = {
        "ability_id": "api-made",
        "name": "Made through the API",
        "tactic": "discovery",
        "technique_id": "T1082",
        "safety": "safe",
        "executors": [{"name": "sh", "platform": "linux", "command": "uname -s"}],
    }
    with serving(tmp_path / "data") as srv:
        assert srv.ok("POST", "/api/v2/abilities", ability)["ability_id"] == "api-made"
        assert srv.call("POST", "/api/v2/abilities", ability)[0] == 409
        status, error = srv.call(
            "POST", "/api/v2/abilities", {**ability, "ability_id": "x", "technique_id": "nope"}
        )
        assert status == 400 and "technique_id" in error["detail"]
        srv.ok("PATCH", "/api/v2/abilities/api-made", {"name": "Renamed"})
        adv = srv.ok(
            "POST", "/api/v2/adversaries", {"name": "api adversary", "atomic_ordering": ["api-made"]}
        )
        src = srv.ok(
            "POST", "/api/v2/sources", {"id": "src1", "name": "s", "facts": [{"trait": "a", "value": "b"}]}
        )
        assert src["facts"] == [{"trait": "a", "name": "a", "value": "b", "score": 1}]
        builtin = srv.ok("GET", "/api/v2/abilities")[0]["ability_id"]
        assert srv.call("DELETE", f"/api/v2/abilities/{builtin}")[0] == 409  # from a file: change the file
        planners = {p["name"] for p in srv.ok("GET", "/api/v2/planners")}
        assert planners == {"atomic", "batch", "buckets", "look_ahead", "guided"}
        assert {o["name"] for o in srv.ok("GET", "/api/v2/obfuscators")} == {"plain-text", "base64"}
    with serving(tmp_path / "data") as srv:
        assert srv.ok("GET", "/api/v2/abilities/api-made")["name"] == "Renamed"
        assert srv.ok("GET", f"/api/v2/adversaries/{adv['adversary_id']}")["atomic_ordering"] == ["api-made"]
        assert srv.ok("GET", "/api/v2/sources/src1")["name"] == "s"
        assert srv.call("DELETE", "/api/v2/abilities/api-made")[0] == 204
        assert srv.call("GET", "/api/v2/abilities/api-made")[0] == 404
        srv.ok("POST", "/api/v2/facts", {"trait": "global.note", "value": "kept"})
        assert srv.ok("GET", "/api/v2/facts?trait=global.note")["found"][0]["value"] == "kept"
        updated = srv.ok(
            "PATCH", "/api/v2/facts", {"criteria": {"trait": "global.note"}, "updates": {"value": "v2"}}
        )
        assert [f["value"] for f in updated["updated"]] == ["v2"]
        assert srv.ok("GET", "/api/v2/facts?trait=global.note")["found"][0]["value"] == "v2"
        assert len(srv.ok("DELETE", "/api/v2/facts", {"trait": "global.note"})["removed"]) == 1
        rel = {
            "source": {"trait": "host.user", "value": "alice"},
            "edge": "has_home",
            "target": {"trait": "dir", "value": "/home/a"},
        }
        assert srv.ok("POST", "/api/v2/relationships", rel)["added"][0]["edge"] == "has_home"
        found = srv.ok("GET", "/api/v2/relationships?edge=has_home")["found"]
        assert [r["target"]["value"] for r in found] == ["/home/a"]
        patch = {"criteria": {"edge": "has_home"}, "updates": {"target": {"trait": "dir", "value": "/srv/a"}}}
        assert srv.ok("PATCH", "/api/v2/relationships", patch)["updated"][0]["target"]["value"] == "/srv/a"
        assert [
            r["target"]["value"] for r in srv.ok("GET", "/api/v2/relationships?edge=has_home")["found"]
        ] == ["/srv/a"]
        assert len(srv.ok("DELETE", "/api/v2/relationships", {"edge": "has_home"})["removed"]) == 1
        assert srv.ok("GET", "/api/v2/relationships?edge=has_home")["found"] == []
