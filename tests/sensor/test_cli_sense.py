"""`assay sense`: the command line, its clean stop on signals, and nothing left after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assay.cli import build_app
from assay.events import Event, dumps, read_jsonl
from assay.sensor._libbpf import program_exists

ASSAY = str(Path(sys.executable).parent / "assay")


def test_sense_replays_a_file(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(dumps(Event.of("exec", "ebpf", float(i), values={"process.pid": i})) + "\n" for i in (1, 2))
    )
    out = tmp_path / "out.jsonl"
    res = CliRunner().invoke(build_app(), ["sense", "-s", "replay", "-i", str(src), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert [e.pid for e in read_jsonl(out)] == [1, 2]
    assert "source replay" in res.output and "wrote 2 events" in res.output


def test_sense_reports_bad_options(tmp_path: Path) -> None:
    res = CliRunner().invoke(build_app(), ["sense", "-s", "nope"])
    assert res.exit_code == 2 and "unknown source 'nope'" in res.output
    res = CliRunner().invoke(build_app(), ["sense", "-s", "replay"])
    assert res.exit_code != 0 and "--input" in res.output


def _start_sense(out: Path, *extra: str) -> tuple[subprocess.Popen[str], dict[str, object]]:
    p = subprocess.Popen(
        [ASSAY, "sense", "-s", "ebpf", "-o", str(out), *extra],
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert p.stderr is not None
    for line in p.stderr:
        if "attached (" in line:
            info = json.loads(line.split("attached (", 1)[1].rsplit(")", 1)[0])
            return p, info
    p.wait(timeout=10)
    raise AssertionError(f"assay sense never attached (rc {p.returncode})")


@pytest.mark.root
@pytest.mark.kernel
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sense_stops_cleanly_on_signals_and_keeps_the_tail(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "events.jsonl"
    p, info = _start_sense(out)
    marker = subprocess.run(["/bin/true", f"assay-marker-{sig.name}"], check=True)
    assert marker.returncode == 0
    p.send_signal(sig)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    events = list(read_jsonl(out))
    # queued when the signal came: written at stop, not lost
    assert any(e.get("process.args") == ["/bin/true", f"assay-marker-{sig.name}"] for e in events)
    ids = info["program_ids"]
    assert isinstance(ids, list) and len(ids) == 5
    assert not _still_loaded(ids), "programs still loaded after a clean stop"


@pytest.mark.root
@pytest.mark.kernel
def test_nothing_is_left_behind_after_sigkill(tmp_path: Path) -> None:
    p, info = _start_sense(tmp_path / "events.jsonl")
    ids = info["program_ids"]
    assert isinstance(ids, list) and ids and all(program_exists(i) for i in ids)
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=10)
    assert not _still_loaded(ids), "BPF programs outlived a SIGKILLed sensor"


def _still_loaded(ids: list[int]) -> list[int]:
    """Programs of `ids` still loaded after a grace period (the kernel frees them after an RCU period)."""
    deadline = time.monotonic() + 10
    while (left := [i for i in ids if program_exists(i)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left
