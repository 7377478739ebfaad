"""Authenticated API latency, idle and under attack-shaped load, side by side from the same run and server.

One `assay serve --caldera-compat` on loopback. An operator's client calls ``GET /api/v2/agents`` with the
API key, a fresh TCP connection per call (so the accept path under the flood is measured too), sequentially,
from its own thread. First with the server idle (the baseline), then while (a) N simulated Caldera agents
beacon back to back (bench/beacons.py's generator) and (b) 2,000 idle TCP connections are held open: each
sends nothing, and when the server cuts it (--head-timeout) it connects again at once, so the 2,000 stay.
It prints p50/p99/max latency, errors and the ratio to idle, with the flood's beacons/s and reconnects.

The load generator is this process, on the same cores as the server: the figures are an upper bound.

    .venv/bin/python bench/api_under_load.py [--agents 500] [--idle 2000] [--duration 10]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import resource
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from beacons import KEY, TOKEN, Load, SimulatedAgent, profile, start_assay


@dataclass
class Probe:
    """The operator's client: sequential authenticated calls, each on a new connection."""

    port: int
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    def call(self) -> None:
        started = time.perf_counter()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            conn.request("GET", "/api/v2/agents", headers={"KEY": KEY})
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status != 200:
                self.errors += 1
                return
        except (OSError, http.client.HTTPException):
            self.errors += 1
            return
        self.latencies.append(time.perf_counter() - started)

    def run_for(self, seconds: float, pause: float = 0.02) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.call()
            time.sleep(pause)

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.latencies)
        n = len(ordered)
        nan = float("nan")
        return {
            "calls": n,
            "errors": self.errors,
            "p50": ordered[n // 2] if n else nan,
            "p99": ordered[min(n - 1, int(n * 0.99))] if n else nan,
            "max": ordered[-1] if n else nan,
        }


class IdleClient(asyncio.Protocol):
    """Connects and sends nothing; reconnects when the server closes it (a flood that does not give up)."""

    def __init__(self, flood: IdleFlood) -> None:
        self.flood = flood

    def connection_lost(self, exc: Exception | None) -> None:
        self.flood.open -= 1
        if not self.flood.stopping:
            self.flood.reconnects += 1
            asyncio.get_running_loop().create_task(self.flood.connect())


@dataclass
class IdleFlood:
    port: int
    open: int = 0
    reconnects: int = 0
    failures: int = 0
    stopping: bool = False
    transports: list[asyncio.BaseTransport] = field(default_factory=list)

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_connection(lambda: IdleClient(self), "127.0.0.1", self.port)
        except OSError:
            self.failures += 1
            return
        self.open += 1
        self.transports.append(transport)

    def close(self) -> None:
        self.stopping = True
        for transport in self.transports:
            transport.close()


async def loaded(port: int, agents: int, idle: int, probe: Probe, duration: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    load = Load()
    flood = IdleFlood(port)
    beaconing = []
    for i in range(agents):
        body = profile(i)
        request = (
            f"POST /enrol/{TOKEN}/beacon HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        transport, _ = await loop.create_connection(
            lambda i=i, request=request: SimulatedAgent(i, load, request), "127.0.0.1", port
        )
        beaconing.append(transport)
    for start in range(0, idle, 200):  # in batches, so the accept backlog is not what is measured
        await asyncio.gather(*(flood.connect() for _ in range(start, min(idle, start + 200))))
    deadline = time.monotonic() + 60
    while load.registered < agents and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    held_at_start = flood.open
    load.measuring = True
    started = time.perf_counter()
    await asyncio.to_thread(probe.run_for, duration)
    load.measuring = False
    elapsed = time.perf_counter() - started
    held_at_end = flood.open
    load.stop = True
    flood.close()
    for transport in beaconing:
        transport.close()
    await asyncio.sleep(0.5)
    return {
        "beacons_per_s": len(load.latencies) / elapsed,
        "beacon_errors": load.errors,
        "idle_held": min(held_at_start, held_at_end),
        "idle_reconnects": flood.reconnects,
        "idle_connect_failures": flood.failures,
    }


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, wanted), hard))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=500, help="simulated agents beaconing back to back")
    parser.add_argument("--idle", type=int, default=2000, help="idle TCP connections held open")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    args = parser.parse_args()
    raise_fd_limit(args.agents + args.idle + 1024)
    with tempfile.TemporaryDirectory(prefix="assay-bench-") as tmp:
        server = start_assay(Path(tmp) / "data")
        try:
            idle_probe = Probe(server.port)
            for _ in range(20):
                idle_probe.call()  # warm: first use of the key (slow hash), imports, caches
            idle_probe = Probe(server.port)
            idle_probe.run_for(args.duration)
            phases = []
            for agents, idle in ((0, args.idle), (args.agents, 0), (args.agents, args.idle)):
                probe = Probe(server.port)
                flood = asyncio.run(loaded(server.port, agents, idle, probe, args.duration))
                phases.append((agents, idle, probe.summary(), flood))
        finally:
            server.stop()
    base = idle_probe.summary()
    print(
        "\nauthenticated API latency (GET /api/v2/agents, new connection per call), "
        f"{args.duration:.0f} s each; ratios to the idle server"
    )
    print(
        f"{'phase':>38} {'calls':>6} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'p50 x':>6} {'p99 x':>6}"
    )
    rows = [("idle server (baseline)", base)]
    rows += [(f"{a} agents beaconing + {i} idle conns", r) for a, i, r, _ in phases]
    for name, r in rows:
        print(
            f"{name:>38} {r['calls']:>6.0f} {r['errors']:>6.0f} {r['p50'] * 1000:>8.2f} "
            f"{r['p99'] * 1000:>8.2f} {r['max'] * 1000:>8.1f} {r['p50'] / base['p50']:>6.1f} "
            f"{r['p99'] / base['p99']:>6.1f}"
        )
    for agents, idle, _, flood in phases:
        print(
            f"load {agents} agents + {idle} idle: {flood['beacons_per_s']:.0f} beacons/s "
            f"({flood['beacon_errors']:.0f} errors); {flood['idle_held']:.0f} idle connections held, "
            f"{flood['idle_reconnects']:.0f} reconnects after the server cut them, "
            f"{flood['idle_connect_failures']:.0f} connects refused"
        )


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
