"""`assay sense`: run the sensor alone and write its events as JSON Lines.

    assay sense --source auto --output events.jsonl --duration 30

It says on stderr which source it chose and why, stops cleanly on SIGINT/SIGTERM (detaching first, then
writing what was still queued and the final loss count), and ends with the source's counters.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from types import FrameType
from typing import IO, Annotated

import typer

from assay.errors import AssayError
from assay.events import Event, dumps
from assay.plugins import hookimpl


@hookimpl
def register_commands(app: typer.Typer) -> None:
    app.command("sense")(sense)


def _endpoint(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise typer.BadParameter(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def sense(
    source: Annotated[
        str, typer.Option("--source", "-s", help="auto | ebpf | audit | proc_connector | replay")
    ] = "auto",
    output: Annotated[
        str, typer.Option("--output", "-o", help="JSON Lines file to write ('-': stdout)")
    ] = "-",
    duration: Annotated[
        float, typer.Option("--duration", "-d", help="seconds to run (0: until SIGINT/SIGTERM)")
    ] = 0.0,
    input_file: Annotated[
        Path | None, typer.Option("--input", "-i", help="JSON Lines file to replay (--source replay)")
    ] = None,
    ignore_pid: Annotated[
        list[int] | None, typer.Option("--ignore-pid", help="drop everything this process does")
    ] = None,
    agent_pid: Annotated[
        list[int] | None, typer.Option("--agent-pid", help="drop only this process's connections to --server")
    ] = None,
    server: Annotated[
        list[str] | None, typer.Option("--server", help="HOST:PORT of the Assay server")
    ] = None,
    sensitive_paths: Annotated[
        Path | None, typer.Option("--sensitive-paths", help="file of sensitive paths (one per line)")
    ] = None,
    ring_mb: Annotated[
        int, typer.Option("--ring-mb", help="eBPF ring buffer size in MiB (power of two)")
    ] = 8,
    host: Annotated[str | None, typer.Option("--host", help="host name to put in events")] = None,
    audit_wait: Annotated[
        float, typer.Option("--audit-wait", help="seconds to wait for another audit daemon to let go")
    ] = 0.0,
) -> None:
    """Watch this host and write normalized events (loss records included) as JSON Lines."""
    from assay.sensor import SelfNoise, open_source
    from assay.sensor._sensitive import load_path_list

    try:
        noise = SelfNoise(ignore_pid or (), agent_pid or (), [_endpoint(s) for s in server or ()])
        options: dict[str, object] = {"ring_bytes": ring_mb << 20, "wait_for_owner": audit_wait}
        if sensitive_paths is not None:
            options["sensitive_paths"] = load_path_list(str(sensitive_paths))
        if source == "replay":
            if input_file is None:
                raise typer.BadParameter("--source replay needs --input FILE")
            options = {"path": input_file}
        src = open_source(source, host=host, self_noise=noise, **options)
    except AssayError as exc:
        typer.echo(f"assay sense: {exc}", err=True)
        raise typer.Exit(code=2) from exc

    stop = False

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    old = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    written = 0
    try:
        with open(output, "w", encoding="utf-8") if output != "-" else nullcontext(sys.stdout) as out:
            src.start()
            typer.echo(f"assay sense: source {src.name}: {src.reason}", err=True)
            typer.echo(f"assay sense: attached ({json.dumps(_attach_info(src))})", err=True)
            deadline = time.monotonic() + duration if duration > 0 else None
            while not stop and not src.finished and (deadline is None or time.monotonic() < deadline):
                written += _write(out, src.poll(timeout=0.05))
            src.stop()
            written += _write(out, src.poll(timeout=0))
    except AssayError as exc:
        src.stop()
        typer.echo(f"assay sense: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    finally:
        src.stop()
        for sig, handler in old.items():
            signal.signal(sig, handler)
    typer.echo(f"assay sense: wrote {written} events; {json.dumps(src.stats(), sort_keys=True)}", err=True)


def _attach_info(src: object) -> dict[str, object]:
    info: dict[str, object] = {}
    for key in ("load_seconds", "attach_seconds", "snapshot_size", "program_ids"):
        value = getattr(src, key, None)
        if value is not None:
            info[key] = round(value, 4) if isinstance(value, float) else value
    return info


def _write(out: IO[str], events: list[Event]) -> int:
    n = 0
    for ev in events:
        out.write(dumps(ev))
        out.write("\n")
        n += 1
    if n:
        out.flush()
    return n
