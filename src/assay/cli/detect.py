"""`assay detect`: run the detection engine offline over a JSON Lines file of events."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import IO, Annotated

import typer

from assay.plugins import hookimpl


@hookimpl
def register_commands(app: typer.Typer) -> None:
    app.command("detect")(detect)


def detect(
    events: Annotated[Path, typer.Option("--events", help="Events, JSON Lines ('-' for standard input).")],
    output: Annotated[Path, typer.Option("--output", help="Alerts, JSON Lines ('-' for standard output).")],
    rules: Annotated[
        list[Path] | None, typer.Option("--rules", help="Rule file or directory; repeat for more.")
    ] = None,
    allowlists: Annotated[
        list[Path] | None, typer.Option("--allowlist", help="Allowlist YAML; repeat for more.")
    ] = None,
    builtin: Annotated[
        bool,
        typer.Option("--builtin/--no-builtin", help="Also load the built-in rules and default allowlists."),
    ] = True,
) -> None:
    """Run Sigma rules (and correlations) over recorded events and write the alerts they raise.

    Suppressed matches are written too, flagged `suppressed_by`. At the end of the input every open
    correlation window is closed, so count conditions with an upper bound are decided."""
    from assay.detection import Engine
    from assay.errors import AssayError
    from assay.events import dumps_alert, iter_jsonl

    engine = Engine.load(rule_paths=rules or [], allowlist_paths=allowlists or [], include_builtin=builtin)
    for err in engine.errors:
        typer.echo(f"warning: {err}", err=True)
    if not any(r.supported for r in engine.rules):
        typer.echo("error: no supported rule loaded", err=True)
        raise typer.Exit(code=2)
    counts: Counter[str] = Counter()
    n_events = 0
    out: IO[str] = sys.stdout if str(output) == "-" else output.open("w", encoding="utf-8")
    try:
        src: IO[str] = sys.stdin if str(events) == "-" else events.open(encoding="utf-8")
        try:
            for event in iter_jsonl(src, str(events)):
                n_events += 1
                for alert in engine.process(event):
                    counts["suppressed" if alert.suppressed else "alerts"] += 1
                    out.write(dumps_alert(alert) + "\n")
            for alert in engine.flush(float("inf")):
                counts["suppressed" if alert.suppressed else "alerts"] += 1
                out.write(dumps_alert(alert) + "\n")
        except AssayError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from exc
        except OSError as exc:
            typer.echo(f"error: cannot read {events}: {exc.strerror}", err=True)
            raise typer.Exit(code=2) from exc
        finally:
            if src is not sys.stdin:
                src.close()
    finally:
        if out is not sys.stdout:
            out.close()
    typer.echo(
        f"{n_events} events, {counts['alerts']} alerts, {counts['suppressed']} suppressed "
        f"({sum(r.supported for r in engine.rules)} rules)",
        err=True,
    )
