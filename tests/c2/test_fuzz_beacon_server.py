"""Fuzzed beacons against a real server: a 200, or a 4xx whose error names the field, never a 5xx and never
a dead server. The decoder's own fuzzing (tests/test_fuzz_wire.py) runs many more cases in-process."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from c2_helpers import Server, serving
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from assay.c2._caldera import PROFILE_FIELDS
from fuzz_helpers import mutate

BASE = {
    "paw": "fuzzed",
    "platform": "linux",
    "host": "h",
    "executors": ["sh"],
    "sleep_min": 1,
    "sleep_max": 2,
}
KEYS = sorted({*PROFILE_FIELDS, "id", "output", "status", "exit_code"})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("fuzz-beacon"), "--caldera-compat") as srv:
        yield srv


def b64(value: Any) -> bytes:
    return base64.b64encode(value if isinstance(value, bytes) else json.dumps(value).encode())


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
@example(data=None)
def test_fuzzed_beacons_never_get_a_5xx(server: Server, data: Any) -> None:
    if data is None:
        bodies = [
            b64(b"[" * 100_000),
            b64(b'{"proxy_chain": ' + b"[" * 900 + b"]" * 900 + b"}"),
            b64({"": 1}),
        ]
    else:
        bodies = [b64(mutate(data, BASE, KEYS)), data.draw(st.binary(max_size=64))]
    for body in bodies:
        status, reply = server.call(
            "POST", "/beacon", raw=body, key=None, headers={"Content-Type": "text/plain"}
        )
        assert status < 500, (body[:200], status, reply)
        if status >= 400:
            assert isinstance(reply, dict) and reply["error"], reply
    assert server.process.poll() is None
