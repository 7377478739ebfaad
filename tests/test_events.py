from __future__ import annotations

import io

import pytest

from assay.errors import EventError
from assay.events import (
    Action,
    Alert,
    Event,
    Suppression,
    alert_from_dict,
    alert_to_dict,
    dumps,
    entity_id,
    iter_jsonl,
    loads,
    ticks_from_boottime_ns,
)


def _exec_event() -> Event:
    return Event.of(
        Action.EXEC,
        "ebpf",
        1_764_000_000.123456,
        host="h1",
        values={
            "process.pid": 42,
            "process.entity_id": entity_id(42, 1234),
            "process.args": ["sh", "-c", "id"],
            "process.parent.pid": 1,
            "process.parent.entity_id": entity_id(1, 1),
            "process.ancestry": [entity_id(1, 1)],
        },
    )


def test_roundtrip_nests_on_the_wire_and_flattens_in_memory() -> None:
    ev = _exec_event()
    line = dumps(ev)
    assert '"event":{"action":"exec","source":"ebpf"}' in line
    assert '"parent":{"pid":1,"entity_id":"1:1"}' in line
    back = loads(line)
    assert back.fields["process.args"] == ["sh", "-c", "id"]
    assert back.timestamp == pytest.approx(ev.timestamp, abs=1e-6)
    assert back.lineage == ("42:1234", "1:1")


def test_epoch_timestamps_are_accepted() -> None:
    ev = loads('{"@timestamp": 12.5, "event": {"action": "exit"}}')
    assert ev.timestamp == 12.5 and ev.action == "exit"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ('{"event": {"action": "exec"}}', "missing '@timestamp'"),
        ('{"@timestamp": "yesterday", "event": {"action": "exec"}}', "neither ISO 8601"),
        ('{"@timestamp": 1}', "missing 'event.action'"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_bad_lines_name_file_and_line(line: str, message: str) -> None:
    stream = io.StringIO(dumps(_exec_event()) + "\n\n" + line + "\n")
    with pytest.raises(EventError) as info:
        list(iter_jsonl(stream, "events.jsonl"))
    assert message in str(info.value)
    assert str(info.value).startswith("events.jsonl:3: ")


def test_entity_id_matches_proc_stat_ticks() -> None:
    # The kernel prints start_boottime / (NSEC_PER_SEC / USER_HZ) in /proc/PID/stat.
    assert ticks_from_boottime_ns(123_456_789_012) == 12_345
    with open("/proc/self/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    assert int(fields[19]) > 0  # field 22 overall; the format the agent and sensor both use


def test_alert_roundtrip_keeps_suppression_and_lineage() -> None:
    alert = Alert.for_events(
        rule_id="r1",
        title="t",
        level="high",
        techniques=["T1059.004"],
        events=[_exec_event()],
        suppressed_by=Suppression("pkg-managers", "apt runs maintainer scripts"),
    )
    back = alert_from_dict(alert_to_dict(alert))
    assert back.lineage == ("42:1234", "1:1")
    assert back.suppressed_by == Suppression("pkg-managers", "apt runs maintainer scripts")
    assert back.events[0].fields["process.args"] == ["sh", "-c", "id"]
