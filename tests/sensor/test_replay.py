"""The replay source and open_source's choices."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.errors import SensorError
from assay.events import Event, dumps
from assay.sensor import SelfNoise, open_source


def write(path: Path, events: list[Event], extra: str = "") -> Path:
    path.write_text("".join(dumps(e) + "\n" for e in events) + extra)
    return path


def test_replay_delivers_events_and_applies_self_noise(tmp_path: Path) -> None:
    evs = [Event.of("exec", "ebpf", 1.0 + i, host="h", values={"process.pid": 100 + i}) for i in range(5)]
    f = write(tmp_path / "e.jsonl", evs)
    src = open_source("replay", self_noise=SelfNoise(ignore_pids={102}), path=f)
    assert src.name == "replay" and "replay" in src.reason
    got: list[Event] = []
    with src:
        while not src.finished:
            got.extend(src.poll(0))
    assert [e.pid for e in got] == [100, 101, 103, 104]
    assert got[0] == evs[0]
    assert src.stats()["events"] == 4 and src.stats()["filtered_self"] == 1


def test_replay_stops_at_a_bad_line_with_file_and_line(tmp_path: Path) -> None:
    f = write(tmp_path / "bad.jsonl", [Event.of("exec", "ebpf", 1.0)], extra="{not json}\n")
    src = open_source("replay", path=f)
    src.start()
    with pytest.raises(SensorError, match=r"bad.jsonl:2"):
        while not src.finished:
            src.poll(0)
    src.stop()


def test_unknown_source_and_missing_file_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SensorError, match="unknown source 'nope'"):
        open_source("nope")
    with pytest.raises(SensorError, match="not found"):
        open_source("replay", path=tmp_path / "missing.jsonl")
