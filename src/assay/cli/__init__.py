"""The `assay` command line. Each command group lives in its own module and registers itself through the
``register_commands`` plugin hook (see :mod:`assay.plugins`)."""

from __future__ import annotations

import typer

from assay import __version__


def build_app() -> typer.Typer:
    from assay.plugins import plugin_manager

    app = typer.Typer(
        name="assay",
        help="Emulate ATT&CK techniques on Linux, watch them with a kernel sensor and Sigma, "
        "and prove which were detected.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.command("version")
    def version() -> None:
        """Print Assay's version."""
        typer.echo(__version__)

    plugin_manager().hook.register_commands(app=app)
    return app


def main() -> None:
    build_app()()
