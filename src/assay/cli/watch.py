"""`assay watch`: the host side of a round: sensor → detection engine → server (or files).

It is the thin edge that joins packages which never import each other (DESIGN §2): `assay.sensor` produces
events, `assay.detection` turns them into alerts, and this module ships both to the server's telemetry
endpoint in batches (or writes JSON Lines files), so validation can read them from storage.

Nothing is dropped silently: events the server did not accept are kept and re-sent, and if the backlog
exceeds its bound the overflow is counted and shipped as a `loss` record, exactly as a kernel drop would be.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Annotated, Any

import httpx
import typer

from assay.errors import AssayError, ConfigError
from assay.events import Action, Alert, Event, alert_to_dict, dumps, dumps_alert, event_to_dict
from assay.plugins import hookimpl

BATCH_SECONDS = 0.25
MAX_BACKLOG = 200_000  # events held while the server is unreachable before they count as lost
HEARTBEAT_SECONDS = 1.0  # how often the watcher says what span it covered (validation's COVERAGE_SLACK)
MAX_BATCH = 10_000  # events (and alerts) per request, at most
# ... and at most this much JSON: an exec with a long argv is tens of kilobytes, so a count alone once made a
# 109 MB request the server (64 MiB limit) refused, and the watcher stopped.
MAX_BATCH_BYTES = 8 * 1024 * 1024


@hookimpl
def register_commands(app: typer.Typer) -> None:
    app.command("watch")(watch)


MIN_BATCH_BYTES = 64 * 1024


def _take(
    records: Sequence[Any], encode: Callable[[Any], dict[str, Any]], budget: int, *, at_least_one: bool = True
) -> list[str]:
    """The JSON of the oldest records that fit in ``budget`` bytes (at most ``MAX_BATCH``; the first one
    always, when ``at_least_one``, so a batch is never empty while records wait)."""
    out: list[str] = []
    size = 0
    for record in records[:MAX_BATCH]:
        text = json.dumps(encode(record))
        if size + len(text) + 1 > budget and (out or not at_least_one):
            break
        out.append(text)
        size += len(text) + 1
    return out


class Shipper:
    """Sends batches of events and alerts to ``POST /api/v2/telemetry`` and keeps what failed."""

    def __init__(self, server: str, api_key: str, host: str) -> None:
        self._client = httpx.Client(base_url=server.rstrip("/"), headers={"KEY": api_key}, timeout=10.0)
        self._host = host
        self._events: list[Event] = []
        self._alerts: list[Alert] = []
        self.sent_events = 0
        self.sent_alerts = 0
        self.overflow = 0
        self.rejected = 0
        self.last_error: str | None = None
        self.budget = MAX_BATCH_BYTES

    def add(self, events: Sequence[Event], alerts: Sequence[Alert]) -> None:
        self._events.extend(events)
        self._alerts.extend(alerts)
        excess = len(self._events) - MAX_BACKLOG
        if excess > 0:
            # Keep the newest; account for the oldest as loss rather than forgetting them.
            dropped = self._events[:excess]
            del self._events[:excess]
            self.overflow += excess
            self._events.insert(
                0,
                Event.of(
                    Action.LOSS,
                    "ship",
                    time.time(),
                    host=self._host,
                    values={
                        "loss.count": excess,
                        "loss.window.start": dropped[0].timestamp,
                        "loss.window.end": dropped[-1].timestamp,
                    },
                ),
            )

    def flush(self) -> bool:
        while self._events or self._alerts:
            if not self._flush_batch():
                return False
        return True

    def _flush_batch(self) -> bool:
        """Ship the oldest events and alerts, at most ``MAX_BATCH`` of each and about ``budget`` bytes of
        JSON in all (at least one record): a full backlog (200,000 events, ~130 MB) would be over the
        server's request limit in one body. A 413 halves the budget and tries again."""
        for _attempt in range(8):
            events = _take(self._events, event_to_dict, self.budget)
            used = sum(len(e) + 1 for e in events)
            alerts = _take(self._alerts, alert_to_dict, self.budget - used, at_least_one=not events)
            body = '{"events":[' + ",".join(events) + '],"alerts":[' + ",".join(alerts) + "]}"
            try:
                resp = self._client.post(
                    "/api/v2/telemetry", content=body, headers={"Content-Type": "application/json"}
                )
            except httpx.HTTPError as exc:
                self.last_error = f"server unreachable: {exc}"
                return False
            if resp.status_code == 422 and self._drop_rejected(resp):
                continue  # the server named the bad records; resend the rest
            if resp.status_code == 413 and self.budget > MIN_BATCH_BYTES:
                self.budget //= 2  # the server's limit is lower than ours: smaller batches from now on
                continue
            if 400 <= resp.status_code < 500:
                raise AssayError(f"server rejected telemetry ({resp.status_code}): {resp.text[:500]}")
            if resp.status_code >= 500:
                self.last_error = f"server error {resp.status_code}"
                return False
            self.sent_events += len(events)
            self.sent_alerts += len(alerts)
            del self._events[: len(events)]
            del self._alerts[: len(alerts)]
            self.last_error = None
            return True
        return False

    def _drop_rejected(self, resp: httpx.Response) -> bool:
        """Remove the records a 422 names (``events[3]``, ``alerts[0]``), each reported; False if none."""
        try:
            details = resp.json().get("details") or []
        except ValueError:
            return False
        bad: dict[str, set[int]] = {"events": set(), "alerts": set()}
        for item in details:
            kind, _, rest = str(item.get("index", "")).partition("[")
            if kind in bad and rest.rstrip("]").isdigit():
                bad[kind].add(int(rest.rstrip("]")))
                typer.echo(f"telemetry record rejected by the server: {item}", err=True)
        if not bad["events"] and not bad["alerts"]:
            return False
        self._events = [e for i, e in enumerate(self._events) if i not in bad["events"]]
        self._alerts = [a for i, a in enumerate(self._alerts) if i not in bad["alerts"]]
        self.rejected += len(bad["events"]) + len(bad["alerts"])
        return True

    def close(self) -> None:
        self._client.close()


class FileSink:
    """Writes events and alerts as JSON Lines, for offline use (`assay detect`, replay)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._events: IO[str] = (directory / "events.jsonl").open("a", encoding="utf-8")
        self._alerts: IO[str] = (directory / "alerts.jsonl").open("a", encoding="utf-8")

    def add(self, events: Sequence[Event], alerts: Sequence[Alert]) -> None:
        for e in events:
            self._events.write(dumps(e) + "\n")
        for a in alerts:
            self._alerts.write(dumps_alert(a) + "\n")

    def flush(self) -> None:
        self._events.flush()
        self._alerts.flush()

    def close(self) -> None:
        self._events.close()
        self._alerts.close()


def _heartbeat(source: str, host: str, start: float, end: float) -> Event:
    values = {"sensor.covered.start": start, "sensor.covered.end": end}
    return Event.of(Action.SENSOR, source, end, host=host, values=values)


def _endpoint(server: str) -> tuple[str, int]:
    url = httpx.URL(server)
    host = url.host or "127.0.0.1"
    try:
        ip = socket.gethostbyname(host)
    except OSError as exc:
        raise ConfigError(f"cannot resolve server host {host!r}: {exc}") from exc
    return ip, url.port or (443 if url.scheme == "https" else 80)


def watch(
    server: Annotated[str | None, typer.Option(help="Server URL to ship telemetry to.")] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="ASSAY_API_KEY", help="API key for the server.")
    ] = None,
    source: Annotated[str, typer.Option(help="auto, ebpf, audit, proc_connector or replay.")] = "auto",
    rules: Annotated[
        list[Path] | None, typer.Option("--rules", help="Extra Sigma rule files or directories.")
    ] = None,
    allowlist: Annotated[list[Path] | None, typer.Option("--allowlist", help="Allowlist YAML files.")] = None,
    builtin_rules: Annotated[bool, typer.Option(help="Load the built-in rules.")] = True,
    ignore_pid: Annotated[
        list[int] | None, typer.Option("--ignore-pid", help="Drop all activity of this pid.")
    ] = None,
    agent_pid: Annotated[
        list[int] | None, typer.Option("--agent-pid", help="Drop only this agent's beacons to the server.")
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option(help="Also write events.jsonl and alerts.jsonl here.")
    ] = None,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    ready_file: Annotated[
        Path | None, typer.Option(help="Write the chosen source here once attached.")
    ] = None,
) -> None:
    """Watch this host: kernel telemetry through the detection engine, shipped to the server."""
    from assay.detection import Engine
    from assay.sensor import SelfNoise, open_source

    if server is None and output_dir is None:
        raise typer.BadParameter("give --server, --output-dir, or both")
    if server is not None and not api_key:
        raise typer.BadParameter("--api-key (or ASSAY_API_KEY) is required with --server")

    host = socket.gethostname()
    engine = Engine.load(
        rule_paths=list(rules or []), allowlist_paths=list(allowlist or []), include_builtin=builtin_rules
    )
    for err in engine.errors:
        typer.echo(f"warning: {err}", err=True)
    endpoints = {_endpoint(server)} if server else set()
    noise = SelfNoise(
        ignore_pids=set(ignore_pid or ()), agent_pids=set(agent_pid or ()), server_endpoints=endpoints
    )
    sensor = open_source(source, host=host, self_noise=noise)
    shipper = Shipper(server, api_key or "", host) if server else None
    sink = FileSink(output_dir) if output_dir else None

    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    sensor.start()
    typer.echo(
        f"watching {host} with source {sensor.name} ({sensor.reason}); {len(engine.rules)} rules", err=True
    )
    if ready_file:
        ready_file.write_text(json.dumps({"source": sensor.name, "reason": sensor.reason}))
    deadline = time.monotonic() + duration if duration else None
    next_ship = time.monotonic() + BATCH_SECONDS
    pending_events: list[Event] = []
    pending_alerts: list[Alert] = []
    covered_from = time.time()  # attached: from here on, what the kernel sees reaches us
    try:
        while True:
            final = stopping or (deadline is not None and time.monotonic() >= deadline)
            polled_to = time.time()  # what happened before this poll began is in the batch (or a loss)
            batch = sensor.poll(timeout=0.05)
            for event in batch:
                pending_alerts.extend(engine.process(event))
            pending_events.extend(batch)
            if final:
                # stop() detaches first and keeps what the kernel still held plus the final loss count;
                # one more poll() returns them, so nothing the sensor saw is left behind.
                sensor.stop()
                tail = sensor.poll(timeout=0.0)
                for event in tail:
                    pending_alerts.extend(engine.process(event))
                pending_events.extend(tail)
                pending_alerts.extend(engine.flush(time.time() + 3600.0))  # close every open window
            now = time.monotonic()
            if final or now >= next_ship:
                wall = time.time()
                if final or polled_to - covered_from >= HEARTBEAT_SECONDS:
                    # A heartbeat per second, so a killed watcher leaves a visible end; on the way out,
                    # stop() and the last poll took all the kernel held, so the span runs to now.
                    end = wall if final else polled_to
                    pending_events.append(_heartbeat(sensor.name, host, covered_from, end))
                    covered_from = end
                pending_alerts.extend(engine.flush(wall))
                if sink:
                    sink.add(pending_events, pending_alerts)
                    sink.flush()
                if shipper:
                    shipper.add(pending_events, pending_alerts)
                    if not shipper.flush() and final:
                        # One last chance: the server may be finishing its own shutdown.
                        time.sleep(0.5)
                        shipper.flush()
                pending_events, pending_alerts = [], []
                next_ship = now + BATCH_SECONDS
            if final:
                break
    finally:
        sensor.stop()  # idempotent: already stopped on the normal path
        stats = sensor.stats()
        if sink:
            sink.close()
        summary = f"source {sensor.name}: {stats}"
        if shipper:
            summary += f"; shipped {shipper.sent_events} events, {shipper.sent_alerts} alerts"
            if shipper.last_error:
                summary += f"; NOT shipped ({shipper.last_error})"
            if shipper.rejected:
                summary += f"; {shipper.rejected} records rejected by the server (listed above)"
            if shipper.overflow:
                summary += f"; {shipper.overflow} events lost to backlog overflow (reported as loss)"
            shipper.close()
        typer.echo(summary, err=True)
