"""A flood of idle connections and slowloris clients against a real `assay serve`: authenticated API calls
still answer, slow heads are cut at --head-timeout, and past --max-connections the longest idle connection
gives way (uvicorn alone keeps all of them forever)."""

from __future__ import annotations

import json
import resource
import select
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from c2_helpers import API_KEY, Server, serving


@contextmanager
def _idle_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 512:  # this test process holds them all
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 1024), hard))
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        yield socks
    finally:
        for s in socks:
            s.close()


def _closed_by_server(s: socket.socket) -> bool:
    readable, _, _ = select.select([s], [], [], 0)
    if not readable:
        return False
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


class _Slowloris(threading.Thread):
    """Sends a request head one byte a second; notes when (if ever) the server closes the connection."""

    HEAD = b"GET /api/v2/agents HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"

    def __init__(self, port: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.stop = stop
        self.started = time.monotonic()
        self.closed_after: float | None = None

    def run(self) -> None:
        try:
            for byte in self.HEAD:
                if self.stop.is_set():
                    return
                try:
                    self.sock.send(bytes([byte]))
                except OSError:
                    self.closed_after = time.monotonic() - self.started
                    return
                readable, _, _ = select.select([self.sock], [], [], 1.0)
                if readable and _closed_by_server(self.sock):
                    self.closed_after = time.monotonic() - self.started
                    return
        finally:
            self.sock.close()


def _api_call(server: Server) -> list[object]:
    """An authenticated call that must answer within a few seconds (a timeout here fails the test)."""
    request = urllib.request.Request(server.url + "/api/v2/agents", headers={"KEY": API_KEY})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as response:
        assert response.status == 200
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_idle_flood_and_slowloris_do_not_stop_authenticated_calls(tmp_path: Path) -> None:
    stop = threading.Event()
    with (
        serving(tmp_path, "--head-timeout", "3", content=False) as server,
        _idle_connections(server.port, 500) as idle,
    ):
        lorises = [_Slowloris(server.port, stop) for _ in range(5)]
        for loris in lorises:
            loris.start()
        try:
            time.sleep(1.5)  # the flood is open and the slow heads are trickling
            assert _api_call(server) == []
            assert sum(_closed_by_server(s) for s in idle) == 0  # under the cap: nobody evicted yet
            for loris in lorises:
                loris.join(timeout=15)
            # Cut at the head timeout (3 s), long before their ~230-byte head would have finished.
            assert all(lo.closed_after is not None and lo.closed_after < 8 for lo in lorises), [
                lo.closed_after for lo in lorises
            ]
            time.sleep(2.0)
            assert all(_closed_by_server(s) for s in idle)  # silent connections are cut as well
            assert _api_call(server) == []
        finally:
            stop.set()


def test_past_max_connections_the_longest_idle_give_way(tmp_path: Path) -> None:
    with serving(tmp_path, "--max-connections", "100", "--head-timeout", "60", content=False) as server:
        assert any("at most 100 connections" in line for line in server.lines), server.lines
        with _idle_connections(server.port, 300) as idle:
            time.sleep(1.0)
            assert _api_call(server) == []  # its connection made room for itself
            time.sleep(0.5)
            closed = [_closed_by_server(s) for s in idle]
            # The oldest were evicted (at most 100 open, the API call's included); the newest are still open.
            assert sum(closed) >= 200, sum(closed)
            assert all(closed[:200]) and not any(closed[-50:]), closed
