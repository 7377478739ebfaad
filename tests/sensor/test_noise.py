"""Self-noise: the sensor, the server and the agent's beacons stay out; the agent's children stay in."""

from __future__ import annotations

import os

import pytest

from assay.errors import ConfigError
from assay.events import Event
from assay.sensor import SelfNoise


def ev(action: str, pid: int, **fields: object) -> Event:
    return Event.of(action, "synthetic", 0.0, values={"process.pid": pid, **fields})


NOISE = SelfNoise(ignore_pids={10}, agent_pids={20}, server_endpoints={("127.0.0.1", 8888)})


def test_ignored_processes_are_dropped_entirely() -> None:
    assert NOISE.drops(ev("exec", 10))
    assert NOISE.drops(ev("fork", 11, **{"process.parent.pid": 10}))  # the server's fork
    assert not NOISE.drops(ev("exec", 11, **{"process.parent.pid": 10}))  # its child's own exec


def test_agent_beacons_are_dropped_but_not_its_other_traffic_or_children() -> None:
    beacon = {"destination.ip": "127.0.0.1", "destination.port": 8888}
    assert NOISE.drops(ev("connect", 20, **beacon))
    assert NOISE.drops(ev("connect", 20, **{"destination.ip": "::ffff:127.0.0.1", "destination.port": 8888}))
    assert not NOISE.drops(ev("connect", 20, **{"destination.ip": "127.0.0.1", "destination.port": 9999}))
    assert not NOISE.drops(ev("connect", 21, **beacon))  # a command child connecting to the server: visible
    assert not NOISE.drops(ev("exec", 20))


def test_wildcard_server_address_matches_any_local_address() -> None:
    n = SelfNoise(agent_pids={5}, server_endpoints={("0.0.0.0", 80)})
    assert n.drops(ev("connect", 5, **{"destination.ip": "10.0.0.1", "destination.port": 80}))


def test_with_self_adds_the_calling_process() -> None:
    assert SelfNoise().with_self().drops(ev("exec", os.getpid()))


def test_bad_endpoint_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="not \\(ip, port\\)"):
        SelfNoise(server_endpoints=[("127.0.0.1", "http")])  # type: ignore[list-item]
