"""`assay demo`: the whole loop on this host in one command.

It starts the server, a local agent, and the watcher (sensor + detection engine) as child processes, runs
the built-in adversary (safe abilities only), shows progress while it runs, prints the validation table,
writes ``assay-report.json``, and stops everything it started. The abilities' cleanup runs as the last phase
of the operation, through the agent, before anything is stopped.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from assay.cli._round import DEFAULT_ADVERSARY, LocalRound, RoundConfig
from assay.cli._round import Progress as RoundProgress
from assay.cli._table import print_delta, print_report
from assay.errors import AssayError
from assay.plugins import hookimpl
from assay.validation import compare


def _previous_report(path: Path, console: Console) -> dict[str, Any] | None:
    """The report of the previous round, if one was written here and is readable (else say why, go on)."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        console.print(f"[yellow]previous report {path} is unreadable ({exc}); no comparison[/]")
        return None
    return data if isinstance(data, dict) and isinstance(data.get("techniques"), list) else None


@hookimpl
def register_commands(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    adversary: Annotated[str, typer.Option(help="Adversary profile to run.")] = DEFAULT_ADVERSARY,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where the round keeps its database and logs (default: .assay/rounds/<time>)."),
    ] = None,
    report: Annotated[Path, typer.Option(help="Where to write the JSON report.")] = Path("assay-report.json"),
    source: Annotated[str, typer.Option(help="Sensor source: auto, ebpf, audit or proc_connector.")] = "auto",
    content: Annotated[
        list[Path] | None, typer.Option("--content", help="Extra abilities and adversaries.")
    ] = None,
    rules: Annotated[list[Path] | None, typer.Option("--rules", help="Extra Sigma rules.")] = None,
    sandbox: Annotated[
        bool,
        typer.Option(
            "--sandbox",
            help="Run the agent, so every ability, in a throw-away sandbox (namespaces + overlay; README).",
        ),
    ] = False,
) -> None:
    """Run the built-in adversary against this host and print what was detected, and why not."""
    console = Console()
    if os.geteuid() != 0:
        console.print(
            "[red]assay demo needs root:[/] the sensor loads eBPF programs (CAP_BPF, CAP_PERFMON), "
            "or falls back to audit/proc connector (CAP_NET_ADMIN)."
        )
        raise typer.Exit(2)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    config = RoundConfig(
        data_dir=(data_dir or Path(".assay") / "rounds" / stamp).resolve(),
        adversary_id=adversary,
        content_paths=list(content or []),
        rule_paths=list(rules or []),
        source=source,
        group="demo",
        sandbox=sandbox,
    )
    started = time.monotonic()
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("starting server, agent and sensor", total=None)

        def show(p: RoundProgress) -> None:
            what = f"{p.state}: {p.current}" if p.current else p.state
            progress.update(task, description=what, total=max(p.total, 1), completed=p.finished)

        try:
            result = LocalRound(config, on_progress=show).run()
        except AssayError as exc:
            progress.stop()
            console.print(f"[red]round failed:[/] {exc}")
            console.print(f"logs: {config.data_dir}")
            raise typer.Exit(1) from exc
        progress.update(task, description="done")
    elapsed = time.monotonic() - started

    console.print()
    print_report(result.report, console)
    data = result.report.to_dict()
    previous = _previous_report(report, console)
    if previous is not None:
        delta = compare(previous, data)
        data["change"] = delta.to_dict()
        print_delta(delta, console)
    report.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    console.print()
    console.print(
        f"sensor: {result.sensor_source}, {result.report.events_total} events "
        f"({result.report.events_dropped} dropped); round took {elapsed:.1f} s"
    )
    console.print(f"report: {report.resolve()}   data and logs: {result.data_dir}")
