"""Run a :class:`LocalRound` under a progress bar: what `assay demo` and `assay validate` show while the
operation runs (the same bar, the same failure message with the logs' location)."""

from __future__ import annotations

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

from assay.cli._round import LocalRound, RoundConfig, RoundResult
from assay.cli._round import Progress as RoundProgress
from assay.errors import AssayError


def run_round(config: RoundConfig, console: Console) -> RoundResult:
    """The round's result; on failure, say why and where the logs are, and exit 1."""
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
    return result
