"""Hostile bytes on the wire and in telemetry files: the Caldera beacon decoder and the JSON Lines readers
either decode or raise Assay's own error naming the field (beacon) or file:line (JSON Lines). Never another
exception, never a hang; what they accept can be written back out (a reply, a JSON Lines line)."""

from __future__ import annotations

import base64
import io
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from assay.c2._caldera import PROFILE_FIELDS, decode_beacon, encode_reply
from assay.errors import C2Error, EventError
from assay.events import dumps, iter_jsonl, read_alerts_jsonl, read_jsonl
from fuzz_helpers import mutate, no_hang, says_where, values

SANDCAT = {
    "server": "http://127.0.0.1:8888",
    "group": "red",
    "host": "web-1",
    "paw": "abcdef",
    "username": "www-data",
    "architecture": "amd64",
    "platform": "linux",
    "location": "/tmp/sandcat",
    "pid": "4242",
    "ppid": 1,
    "executors": ["sh", "proc"],
    "privilege": "User",
    "exe_name": "sandcat",
    "proxy_receivers": {"HTTP": ["http://10.0.0.1:8888"]},
    "origin_link_id": "",
    "deadman_enabled": True,
    "available_contacts": ["HTTP"],
    "host_ip_addrs": ["10.0.0.1"],
    "sleep_min": 5,
    "sleep_max": 10,
    "watchdog": 0,
    "results": [
        {
            "id": "link-1",
            "output": base64.b64encode(b"uid=0").decode(),
            "stderr": "",
            "exit_code": "0",
            "status": "0",
            "pid": "99",
            "agent_reported_time": "2026-12-07T04:00:00Z",
        }
    ],
}
KEYS = sorted({*PROFILE_FIELDS, "id", "output", "stderr", "exit_code", "status", "agent_reported_time"})
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def b64(value: Any) -> bytes:
    return base64.b64encode(value if isinstance(value, bytes) else json.dumps(value).encode())


def check_beacon(body: bytes) -> None:
    with no_hang():
        try:
            beacon = decode_beacon(body)
        except C2Error as exc:
            says_where(exc)
            return
        # What was accepted can be answered: the reply carries the paw back.
        reply = json.loads(base64.b64decode(encode_reply(beacon.profile.paw, 5, 0, [])))
        assert reply["paw"] == beacon.profile.paw
        json.dumps(beacon.extras)


def test_the_sandcat_base_decodes() -> None:
    beacon = decode_beacon(b64(SANDCAT))
    assert beacon.profile.paw == "abcdef" and beacon.results and beacon.results[0].stdout == "uid=0"


@SETTINGS
@given(data=st.data())
@example(data=None)
def test_mutated_sandcat_beacons_decode_or_name_the_field(data: Any) -> None:
    doc = SANDCAT if data is None else mutate(data, SANDCAT, KEYS)
    check_beacon(b64(doc))


DEEP = [
    b64(b"[" * 100_000),  # json.loads raised RecursionError
    b64(b'{"proxy_receivers": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001),
    b64(
        b'{"proxy_chain": ' + b"[" * 900 + b"]" * 900 + b"}"
    ),  # under json's bound, over json.dumps' in the check
    b64(b'{"paw": "x", "results": [{"id": "l", "output": ' + b"[" * 50 + b"]" * 50 + b"}]}"),
]


@pytest.mark.parametrize("body", DEEP, ids=["array", "object", "proxy_chain", "result"])
def test_deeply_nested_beacons_are_refused_by_field(body: bytes) -> None:
    with pytest.raises(C2Error) as caught:
        decode_beacon(body)
    says_where(caught.value)
    assert "deeper than" in caught.value.message or "must be" in caught.value.message


@SETTINGS
@given(body=st.binary(max_size=200) | st.text(max_size=200).map(lambda t: base64.b64encode(t.encode())))
@example(body=b64(b"[" * 3000))
@example(body=b64(b'{"paw": "\\u0000\\ud800"}'))
@example(body=b" \n\t")
@example(body=b64({"": None}))  # an unknown field with an empty name: an error naming no field
def test_arbitrary_beacon_bytes_decode_or_name_the_field(body: bytes) -> None:
    check_beacon(body)


@SETTINGS
@given(profile=st.dictionaries(st.sampled_from(KEYS), values, max_size=8))
def test_profiles_of_arbitrary_values_decode_or_name_the_field(profile: dict[str, Any]) -> None:
    check_beacon(b64(profile))


EVENT = {
    "@timestamp": "2026-11-24T22:32:01.123456Z",
    "event": {"action": "exec", "source": "ebpf"},
    "process": {"pid": 42, "args": ["sh", "-c", "id"], "parent": {"pid": 1}},
    "host": {"name": "h"},
}
ALERT = {
    "id": "a1",
    "@timestamp": "2026-11-24T22:32:01Z",
    "rule": {"id": "r1", "title": "t", "level": "high", "file": "x.yml"},
    "techniques": ["T1059"],
    "host": {"name": "h"},
    "process": {"entity_id": "e", "pid": 42, "lineage": ["sh"]},
    "suppressed_by": None,
    "events": [EVENT],
}
_files = itertools.count()


def check_jsonl(tmp: Path, lines: list[bytes]) -> None:
    path = tmp / f"events{next(_files)}.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    for read in (read_jsonl, read_alerts_jsonl):
        with no_hang():
            try:
                for item in read(path):
                    if read is read_jsonl:
                        dumps(item)  # an accepted event can be written back
            except EventError as exc:
                says_where(exc, str(path))
                assert exc.source is not None and exc.source.line is not None
                assert 1 <= exc.source.line <= path.read_bytes().count(b"\n")


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jsonl")


JSONL = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@JSONL
@given(data=st.data(), base=st.sampled_from([EVENT, ALERT]))
@example(data=None, base={**EVENT, "@timestamp": float("nan")})
@example(data=None, base={**EVENT, "@timestamp": "1e400"})
@example(data=None, base={**EVENT, "@timestamp": 10**400})
@example(data=None, base={**ALERT, "rule": ["r1"]})
@example(data=None, base={**ALERT, "process": "p"})
def test_mutated_events_and_alerts_read_or_say_file_and_line(tmp: Path, data: Any, base: Any) -> None:
    doc = (
        base
        if data is None
        else mutate(data, base, ["@timestamp", "event", "action", "rule", "id", "events"])
    )
    check_jsonl(tmp, [json.dumps(EVENT).encode(), json.dumps(doc).encode()])


@JSONL
@given(lines=st.lists(st.binary(max_size=60) | st.text(max_size=60).map(str.encode), max_size=4))
@example(lines=[b"[" * 100_000])
@example(lines=[b'{"a": ' * 900 + b"1" + b"}" * 900])
@example(lines=[json.dumps(EVENT).encode(), b"\xff\xfe"])
def test_arbitrary_lines_read_or_say_file_and_line(tmp: Path, lines: list[bytes]) -> None:
    check_jsonl(tmp, lines)


def test_a_line_without_end_is_refused_without_reading_it_whole(tmp: Path) -> None:
    path = tmp / "one-line.jsonl"
    with path.open("wb") as fh:
        fh.write(b'{"x": "')
        fh.truncate(40 * 1024 * 1024)  # sparse: 40 MB of NUL bytes, no newline
    with pytest.raises(EventError) as caught:
        list(read_jsonl(path))
    assert "longer than" in caught.value.message and str(caught.value).startswith(f"{path}:1:")


def test_iter_jsonl_reads_text_streams_too() -> None:
    (event,) = iter_jsonl(io.StringIO(json.dumps(EVENT) + "\n\n"), "stdin")
    assert event.action == "exec"
    with pytest.raises(EventError, match=r"^stdin:2: "):
        list(iter_jsonl(io.StringIO(json.dumps(EVENT) + "\n" + "[" * 5000 + "\n"), "stdin"))
