"""C2 state kept in the database as it changes (issue 3), against a real `assay serve` killed with SIGKILL:
the agent defaults of `PATCH /api/v2/config/agents`, a deadman task queued for an agent outside any
operation (handed out exactly once across restarts, its result accepted once), and Caldera's
`DELETE /api/v2/agents/{paw}`."""

from __future__ import annotations

import base64
import json
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from c2_helpers import ENROL, Server, start_server, stop, write_content

from assay.storage import C2Records, Database, Store, sqlite_url

CONFIG = {
    "sleep_min": 3,
    "sleep_max": 7,
    "watchdog": 11,
    "untrusted_timer": 40,
    "deadman_abilities": ["c2-echo"],
}


def _restart(server: Server, args: tuple[str, ...]) -> Server:
    """kill -9, then `assay serve` again on the same port and data."""
    stop(server.process, signal.SIGKILL)
    return start_server(server.data_dir, *args, port=server.port)


def _enrol(server: Server, paw: str, *, deadman: bool) -> str:
    status, body = server.call(
        "POST", "/agent/enrol", {"token": ENROL, "paw": paw, "deadman_enabled": deadman}, key=None
    )
    assert status == 200, body
    assert body["paw"] == paw
    return str(body["key"])


def _agent_call(server: Server, path: str, key: str, body: dict[str, Any]) -> tuple[int, Any]:
    return server.call("POST", path, body, key=None, headers={"Authorization": f"Bearer {key}"})


def _beacon(server: Server, key: str) -> list[dict[str, Any]]:
    status, body = _agent_call(server, "/agent/beacon", key, {"wait": 0})
    assert status == 200, body
    return body["instructions"]  # type: ignore[no-any-return]


def _open_tasks(url: str) -> list[tuple[str, str, bool]]:
    db = Database(url)
    try:
        return [(paw, task.id, delivered) for paw, task, delivered in C2Records(db).open_tasks()]
    finally:
        db.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_config_and_a_queued_deadman_task_survive_kill_9_and_the_task_runs_once(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    db_args = ("--db", request.getfixturevalue("postgres_url")) if backend == "postgres" else ()
    url = db_args[1] if db_args else sqlite_url(tmp_path / "data")
    args = ("--content", str(write_content(tmp_path)), *db_args)
    server = start_server(tmp_path / "data", *args)
    try:
        status, config = server.call("PATCH", "/api/v2/config/agents", CONFIG)
        assert status == 200 and {k: config[k] for k in CONFIG} == CONFIG
        key = _enrol(server, "dmpaw", deadman=True)  # the task is queued; the agent has not beaconed

        server = _restart(server, args)
        _, config = server.call("GET", "/api/v2/config/agents")
        assert {k: config[k] for k in CONFIG} == CONFIG  # kept, not the built-in 30/60
        _, agent = server.call("GET", "/api/v2/agents/dmpaw")
        assert (agent["sleep_min"], agent["sleep_max"], agent["watchdog"]) == (3, 7, 11)
        (task,) = _beacon(server, key)  # queued before the kill: still handed out
        assert task["deadman"] is True and task["command"] == "echo hello-from-dmpaw"
        assert _beacon(server, key) == []
        assert _open_tasks(url) == [("dmpaw", task["id"], True)]

        server = _restart(server, args)  # delivered, no result yet
        assert _beacon(server, key) == []  # never handed out twice
        result = {"id": task["id"], "status": 0, "exit_code": 0, "stdout": "hello-from-dmpaw\n"}
        status, outcome = _agent_call(server, "/agent/results", key, {"results": [result]})
        assert status == 200 and outcome["accepted"] == [task["id"]], outcome

        server = _restart(server, args)  # the agent re-sends after a reconnect
        status, outcome = _agent_call(server, "/agent/results", key, {"results": [result]})
        assert status == 200 and outcome["duplicates"] == [task["id"]], outcome
        assert _open_tasks(url) == []
        _, trail = server.call("GET", "/api/v2/audit?paw=dmpaw&kind=dispatch")
        assert [e["link_id"] for e in trail] == [task["id"]]  # dispatched once in all
    finally:
        stop(server.process)
    store = Store.open(url, migrate=False)
    try:
        (stored,) = store.results(task["id"])
        assert stored["accepted"] and stored["stdout"] == "hello-from-dmpaw\n" and stored["paw"] == "dmpaw"
    finally:
        store.close()


def _caldera_beacon(server: Server, profile: dict[str, Any]) -> dict[str, Any]:
    raw = base64.b64encode(json.dumps(profile).encode())
    status, body = server.call(
        "POST", f"/enrol/{ENROL}/beacon", raw=raw, key=None, headers={"Content-Type": "text/plain"}
    )
    assert status == 200, body
    return json.loads(base64.b64decode(body))  # type: ignore[no-any-return]


def test_delete_agent_removes_record_settings_and_tasks_and_the_agent_may_come_back(tmp_path: Path) -> None:
    args = ("--content", str(write_content(tmp_path)), "--caldera-compat")
    url = sqlite_url(tmp_path / "data")
    server = start_server(tmp_path / "data", *args)
    try:
        status, missing = server.call("DELETE", "/api/v2/agents/nosuchpaw")
        assert status == 404 and "nosuchpaw" in missing["error"]
        assert server.call("PATCH", "/api/v2/config/agents", {"deadman_abilities": ["c2-echo"]})[0] == 200

        # A native agent with a deadman task handed out, a changed watchdog, and a beacon held open.
        key = _enrol(server, "natpaw", deadman=True)
        assert server.call("PATCH", "/api/v2/agents/natpaw", {"watchdog": 99})[0] == 200
        (task,) = _beacon(server, key)
        assert task["deadman"] is True and _open_tasks(url) == [("natpaw", task["id"], True)]
        held: list[tuple[int, Any]] = []
        holder = threading.Thread(
            target=lambda: held.append(_agent_call(server, "/agent/beacon", key, {"wait": 60}))
        )
        holder.start()
        status, body = server.call("DELETE", "/api/v2/agents/natpaw")
        assert status == 204 and body is None
        holder.join(timeout=30)  # answered at once, not after its 60 s
        assert held and held[0][0] == 401, held  # the agent's cue to enrol again
        assert server.call("GET", "/api/v2/agents/natpaw")[0] == 404
        assert server.call("DELETE", "/api/v2/agents/natpaw")[0] == 404
        assert _open_tasks(url) == []  # its task went with it: a late result is no longer taken
        assert _agent_call(server, "/agent/beacon", key, {"wait": 0})[0] == 401  # and its key
        _enrol(server, "natpaw", deadman=False)  # what the agent does on a 401: registered anew
        _, again = server.call("GET", "/api/v2/agents/natpaw")
        assert again["watchdog"] == 0  # the deleted agent's settings did not come back

        # A Caldera agent: deleted with its queued task, re-registered by its next beacon.
        profile = {"paw": "calpaw", "platform": "linux", "executors": ["sh"], "group": "del",
                   "deadman_enabled": True, "results": []}  # fmt: skip
        _caldera_beacon(server, profile)  # registers; a beacon with results gets no instructions
        assert [p for p, _, d in _open_tasks(url) if not d] == ["calpaw"]
        assert server.call("PATCH", "/api/v2/agents/calpaw", {"sleep_min": 1, "sleep_max": 1})[0] == 200
        status, _ = server.call("DELETE", "/api/v2/agents/calpaw")
        assert status == 204 and _open_tasks(url) == []

        server = _restart(server, args)  # the deletion is in the database, not only in memory
        assert server.call("GET", "/api/v2/agents/calpaw")[0] == 404
        reply = _caldera_beacon(server, {k: v for k, v in profile.items() if k != "results"})
        assert reply["paw"] == "calpaw"
        (fresh,) = (json.loads(i) for i in json.loads(reply["instructions"]))  # a new deadman task
        assert fresh["deadman"] is True
        _, back = server.call("GET", "/api/v2/agents/calpaw")
        assert back["group"] == "del" and back["sleep_max"] == 60  # anew, with the server's defaults
        _, trail = server.call("GET", "/api/v2/audit?paw=calpaw&kind=agent")
        assert {"delete": True} in [e["data"] for e in trail]
    finally:
        stop(server.process)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_delivered_kill_survives_kill_9_and_the_agent_stays_dead(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    db_args = ("--db", request.getfixturevalue("postgres_url")) if backend == "postgres" else ()
    args = ("--content", str(write_content(tmp_path)), "--caldera-compat", *db_args)
    server = start_server(tmp_path / "data", *args)
    try:
        profile = {"paw": "killpaw", "platform": "linux", "executors": ["sh"], "group": "kill"}
        _caldera_beacon(server, profile)
        assert server.call("PATCH", "/api/v2/agents/killpaw", {"watchdog": 40})[0] == 200
        status, killed = server.call("POST", "/api/v2/agents/kill/killpaw")
        assert status == 200 and killed["status"] == "pending kill" and killed["pending_kill"]

        server = _restart(server, args)  # before the agent beaconed: the kill is still to deliver
        _, agent = server.call("GET", "/api/v2/agents/killpaw")
        assert agent["status"] == "pending kill"
        reply = _caldera_beacon(server, profile)
        assert (reply["sleep"], reply["watchdog"]) == (3, 1)  # the kill: the agent stops
        _, agent = server.call("GET", "/api/v2/agents/killpaw")
        assert agent["status"] == "dead"

        server = _restart(server, args)  # after delivery: the agent stopped and stays dead
        _, agent = server.call("GET", "/api/v2/agents/killpaw")
        assert agent["status"] == "dead" and agent["pending_kill"]
    finally:
        stop(server.process)
