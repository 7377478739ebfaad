"""`assay demo`: the whole loop on this host in one command (filled in by the integration work)."""

from __future__ import annotations

import typer

from assay.plugins import hookimpl


@hookimpl
def register_commands(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo() -> None:
    """Run the built-in adversary against this host and print the validation table."""
    raise typer.Exit(code=2)
