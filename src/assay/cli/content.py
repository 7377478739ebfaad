"""`assay content check PATH... [--json]`: validate Caldera and Atomic Red Team content files.

Directories are walked for ``.yml``/``.yaml``. Without ``--json`` it prints, per kind, how many loaded, then
each error and warning with its ``file:line``. It exits 1 when any file or item failed to load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from assay.plugins import hookimpl

content_app = typer.Typer(
    help="Abilities, adversaries, fact sources and Atomic Red Team tests.", no_args_is_help=True
)


@hookimpl
def register_commands(app: typer.Typer) -> None:
    app.add_typer(content_app, name="content")


def _where(item: dict[str, object]) -> str:
    file, line = item.get("file"), item.get("line")
    if file is None:
        return ""
    return f"{file}:{line}: " if line else f"{file}: "


@content_app.command("check")
def check(
    paths: Annotated[list[Path], typer.Argument(help="Files or directories to check.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the machine-readable report.")] = False,
) -> None:
    """Load every content file under PATHS and report what loaded and what did not, with file:line."""
    from assay.content import check_paths

    result, data = check_paths(paths)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        counts = result.loaded
        typer.echo(f"files read: {result.files}")
        for kind in ("abilities", "atomic tests", "adversaries", "sources", "objectives", "planners"):
            typer.echo(f"{kind}: {counts.get(kind, 0)} loaded")
        typer.echo(f"Linux abilities Assay can run: {data['counts']['linux_abilities']}")
        for skip in data["skips"]:
            typer.echo(f"skip: {_where(skip)}{skip['kind']} {skip['id']} ({skip['name']}): {skip['reason']}")
        for adversary in data["adversaries"]:
            if adversary["missing_abilities"]:
                missing = ", ".join(adversary["missing_abilities"])
                typer.echo(
                    f"adversary {adversary['id']} ({adversary['name']}) names missing abilities: {missing}"
                )
        for warning in data["warnings"]:
            typer.echo(f"warning: {_where(warning)}{warning['message']}")
        for error in data["errors"]:
            typer.echo(f"error: {_where(error)}{error['message']}", err=True)
        errors, warnings, skips = len(data["errors"]), len(data["warnings"]), len(data["skips"])
        typer.echo(f"{errors} error(s), {warnings} warning(s), {skips} skip(s)")
    if data["errors"]:
        raise typer.Exit(code=1)
