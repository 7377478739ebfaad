"""The watcher's shipper against a real server: batches stay under the server's request limit however large
the events are: a burst of long command lines is stored, not refused with a 413 that stopped the watcher."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from assay.cli.watch import MAX_BATCH_BYTES, Shipper
from assay.events import Event
from serving import API_KEY, Server, start_server, stop


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("shipper"))
    try:
        yield srv
    finally:
        stop(srv.process)


def test_events_larger_in_all_than_the_server_limit_are_shipped_in_several_requests(
    server: Server, tmp_path: Path
) -> None:
    argv = ["/usr/bin/true", *["x" * 4000] * 100]  # ~400 KB of argv per exec, as a build's long lines
    events = [
        Event.of(
            "exec",
            "ebpf",
            1_800_000_000.0 + i,
            host="shipper-host",
            values={
                "process.pid": 10_000 + i,
                "process.entity_id": f"{10_000 + i}:1",
                "process.args": argv,
                "process.command_line": " ".join(argv),
            },
        )
        for i in range(200)  # ~160 MB of JSON: over the server's 64 MiB telemetry limit in one body
    ]
    shipper = Shipper(server.url, API_KEY, "shipper-host")
    try:
        shipper.add(events, [])
        assert shipper.flush() is True
    finally:
        shipper.close()
    assert shipper.sent_events == 200 and shipper.budget == MAX_BATCH_BYTES
    stored = server.ok("GET", "/api/v2/events?host=shipper-host&limit=10000")
    assert len(stored) == 200
    assert {e["process"]["pid"] for e in stored} == {10_000 + i for i in range(200)}
