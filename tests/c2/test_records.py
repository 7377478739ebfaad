"""Assay's own resources on a real server, read from storage: events, alerts, sensor, rules, rounds."""

from __future__ import annotations

from pathlib import Path

from c2_helpers import ENROL, SRC, no_proxy, run_operation, serving, stop, system_python, wait_for


def test_rounds_telemetry_and_rules_are_served_from_storage(tmp_path: Path) -> None:
    import subprocess

    with serving(tmp_path) as server:
        event = {
            "@timestamp": 1.0,
            "event": {"action": "exec", "source": "replay"},
            "host": {"name": "h1"},
            "process": {"pid": 7, "entity_id": "7:1", "args": ["id"]},
        }
        loss = {
            "@timestamp": 2.0,
            "event": {"action": "loss", "source": "ebpf"},
            "host": {"name": "h1"},
            "loss": {"count": 5, "window": {"start": 1.0, "end": 2.0}},
        }
        alert = {
            "id": "a1",
            "@timestamp": 1.5,
            "rule": {"id": "r1", "title": "t", "level": "high"},
            "techniques": ["T1082"],
            "process": {"entity_id": "7:1", "pid": 7, "lineage": ["7:1"]},
        }
        assert (
            server.call("POST", "/api/v2/telemetry", {"events": [event, loss], "alerts": [alert]})[0] == 200
        )
        status, events = server.call("GET", "/api/v2/events?action=exec&limit=10")
        assert status == 200 and [e["process"]["pid"] for e in events] == [7]
        _, alerts = server.call("GET", "/api/v2/alerts?rule_id=r1")
        assert [a["id"] for a in alerts] == ["a1"]
        _, sensor = server.call("GET", "/api/v2/sensor")
        assert sensor["events_dropped"] == 5 and sensor["alerts"] == {"raised": 1}
        assert {"source": "replay", "host": "h1", "events": 1, "last_event_at": 1.0} in sensor["sources"]
        status, rules = server.call("GET", "/api/v2/rules")
        assert status == 200 and len(rules) > 10 and all("id" in r for r in rules)

        env = {**no_proxy(), "PYTHONPATH": str(SRC)}
        cmd = [
            system_python(),
            "-m",
            "assay.agent",
            "--server",
            server.url,
            "--enrol-token",
            ENROL,
            "--group",
            "rd",
        ]
        agent = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path
        )
        try:
            wait_for(lambda: server.call("GET", "/api/v2/agents")[1], what="the agent")
            op = run_operation(server, "c2-small", "rd")
        finally:
            stop(agent)
        _, rounds = server.call("GET", "/api/v2/rounds")
        (mine,) = [r for r in rounds if r["id"] == op["id"]]
        assert mine["state"] == "finished" and mine["techniques"] == ["T1033", "T1082"] and mine["links"] == 2
        status, report = server.call("GET", f"/api/v2/rounds/{op['id']}")
        assert status == 200
        assert report["summary"]["in_profile"] == 2 and report["meta"]["operation_id"] == op["id"]
        assert {t["technique_id"] for t in report["techniques"]} == {"T1033", "T1082"}
        assert server.call("GET", "/api/v2/rounds/nope")[0] == 404
