"""The eBPF source's poll() without a kernel: a ring image in memory and fake drop counters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from assay.sensor import EbpfSource

from .records import exit_rec, ring_image


@pytest.fixture
def source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[EbpfSource, list[int], dict[str, int]]:
    src = EbpfSource("h1", snapshot=False, sensitive_paths=(), proc=tmp_path)  # an empty /proc
    reads: list[int] = []
    dropped = {"n": 0}

    def read_drops() -> list[tuple[int, int, int, list[int], int]]:
        reads.append(dropped["n"])
        return [(0, dropped["n"], 10**9, [0, 0, 0, dropped["n"], 0], dropped.get("pending", 0))]

    monkeypatch.setattr(src, "_read_drops", read_drops)
    src._ncpu, src._cpu_dropped, src._by_type_dropped, src._pending_full = 1, [0], [[0] * 5], [0]
    return src, reads, dropped


def loss(events: list[Any]) -> int:
    return sum(e["loss.count"] for e in events if e.action == "loss")


def test_drop_counters_are_read_when_the_ring_could_have_dropped(
    source: tuple[EbpfSource, list[int], dict[str, int]],
) -> None:
    src, reads, dropped = source
    src._ring = ring_image([(exit_rec(0), 0)], 1 << 20)
    assert len(src._poll(0)) == 1 and len(reads) == 1  # the first poll always reads
    src._ring = ring_image([(exit_rec(0, pid=200 + i), 0) for i in range(50)], 1 << 20)
    assert len(src._poll(0)) == 50 and len(reads) == 1  # a 1 MiB ring 6 KiB full cannot have refused one
    # 40 KiB waiting in a 64 KiB ring: a full exec record may not have fit, so the counters are read
    dropped["n"] = 7
    src._ring = ring_image([(exit_rec(0, pid=300 + i), 0) for i in range(340)], 64 << 10)
    events = src._poll(0)
    assert len(reads) == 2 and loss(events) == 7
    dropped["n"] = 9
    assert loss(src._poll(0, final=True)) == 2 and len(reads) == 3  # stop() always reads: the final count


def test_drop_counters_are_read_at_least_once_a_second(
    source: tuple[EbpfSource, list[int], dict[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, reads, dropped = source
    now = [1000.0]
    monkeypatch.setattr("assay.sensor._ebpf.time.monotonic", lambda: now[0])
    src._ring = ring_image([], 1 << 20)
    src._poll(0)
    src._poll(0)
    assert len(reads) == 1
    now[0] += 1.5
    dropped["n"] = 1  # cannot happen with this ring; read anyway, and reported
    assert loss(src._poll(0)) == 1 and len(reads) == 2
