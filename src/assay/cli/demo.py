"""`assay demo`: the whole loop on this host in one command.

It starts the server, a local agent, and the watcher (sensor + detection engine) as child processes, runs
the built-in adversary (safe abilities only), shows progress while it runs, prints the validation table,
writes ``assay-report.json`` and, beside it, ``assay-report.md``, ``assay-report.html`` and the ATT&CK
Navigator layer ``assay-layer.json`` (``assay.reports``), and stops everything it started. The abilities'
cleanup runs as the last phase of the operation, through the agent, before anything is stopped.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from assay.cli._progress import run_round
from assay.cli._round import DEFAULT_ADVERSARY, DEFAULT_DB, RoundConfig
from assay.cli._table import print_delta, print_report, print_written
from assay.plugins import hookimpl
from assay.reports import write_reports
from assay.storage import normalize_url
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
    report: Annotated[
        Path,
        typer.Option(
            help="Where to write the JSON report; the Markdown (.md), HTML (.html) and ATT&CK Navigator "
            "layer (assay-layer.json) are written beside it, so its directory is where the reports go."
        ),
    ] = Path("assay-report.json"),
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
    db: Annotated[
        str,
        typer.Option(
            help="Database (a SQLite path or a URL) the round is stored in, with the rounds of earlier runs."
        ),
    ] = DEFAULT_DB,
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
        db_url=normalize_url(db),
        kind="demo",
    )
    started = time.monotonic()
    result = run_round(config, console)
    elapsed = time.monotonic() - started

    console.print()
    print_report(result.report, console)
    data = result.report.to_dict()
    previous = _previous_report(report, console)
    if previous is not None:
        delta = compare(previous, data)
        data["change"] = delta.to_dict()
        print_delta(delta, console)
    written = write_reports(data, report)
    console.print()
    console.print(
        f"sensor: {result.sensor_source}, {result.report.events_total} events "
        f"({result.report.events_dropped} dropped); round took {elapsed:.1f} s"
    )
    print_written(written, console)
    console.print(f"data and logs: {result.data_dir}")
    console.print(f"round: {result.round_id} (stored in {db})")
