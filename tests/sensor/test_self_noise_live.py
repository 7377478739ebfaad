"""Self-noise on the live kernel: the server's activity and the agent's beacons are dropped, while what the
agent's commands do stays visible. The "server" and "agent" are small processes of the test's own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from assay.sensor import EbpfSource, SelfNoise

pytestmark = [pytest.mark.root, pytest.mark.kernel]


def test_server_and_beacons_are_dropped_and_agent_children_kept() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.setblocking(False)
    # the "agent": waits for a go, beacons to the server, then runs a command that also connects there
    agent_code = textwrap.dedent(
        f"""
        import socket, subprocess, sys
        sys.stdin.readline()
        socket.create_connection(("127.0.0.1", {port})).close()
        subprocess.run([sys.executable, "-c",
                        "import socket; socket.create_connection(('127.0.0.1', {port})).close()"])
        """
    )
    agent = subprocess.Popen([sys.executable, "-c", agent_code], stdin=subprocess.PIPE, text=True)
    busy = subprocess.Popen(
        ["/bin/sh", "-c", "read x; /bin/true ignored-server-work"], stdin=subprocess.PIPE, text=True
    )
    noise = SelfNoise(ignore_pids={busy.pid}, agent_pids={agent.pid}, server_endpoints={("127.0.0.1", port)})
    src = EbpfSource(os.uname().nodename, noise, sensitive_paths=(), snapshot=False)
    src.start()
    events = []
    try:
        assert agent.stdin is not None and busy.stdin is not None
        agent.stdin.write("go\n")
        agent.stdin.close()
        busy.stdin.write("go\n")
        busy.stdin.close()
        deadline = time.monotonic() + 20
        while (agent.poll() is None or busy.poll() is None) and time.monotonic() < deadline:
            events += src.poll(0.02)
            try:
                server.accept()[0].close()
            except BlockingIOError:
                pass
        for _ in range(5):
            events += src.poll(0.02)
    finally:
        src.stop()
        server.close()
    connects = [e for e in events if e.action == "connect" and e.get("destination.port") == port]
    assert not [e for e in connects if e.pid == agent.pid], "the agent's beacon was not dropped"
    child = [e for e in connects if e.get("process.parent.pid") == agent.pid]
    assert child, "the agent's command connecting to the server must stay visible"
    assert not [e for e in events if e.pid == busy.pid], "an ignored process's own events leaked"
    assert src.stats()["filtered_self"] >= 1  # the beacon, dropped in Python (the ignored pid: in the kernel)
