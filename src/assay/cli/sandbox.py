"""`assay sandbox run -- CMD...`: one command in a throw-away sandbox (for manual use and tests).

The same :class:`assay.sandbox.Sandbox` that ``assay demo --sandbox`` starts the agent in: fresh mount, pid,
net, uts and ipc namespaces, an overlay of the host's file tree whose writes vanish at exit, the capabilities
in :data:`assay.sandbox.DROPPED_CAPABILITIES` out of reach. ``--server-port P`` gives the command one path
to ``127.0.0.1:P`` on the host (the Assay server); nothing else on the host's network is reachable.
"""

from __future__ import annotations

import os
import signal
from typing import Annotated

import typer

from assay.plugins import hookimpl
from assay.sandbox import DROPPED_CAPABILITIES, Sandbox, SandboxError

app = typer.Typer(
    help="Run commands in Assay's throw-away sandbox (namespaces + overlay).", no_args_is_help=True
)


@hookimpl
def register_commands(app: typer.Typer) -> None:
    app.add_typer(_app, name="sandbox")


_app = app


@app.command("run", context_settings={"allow_interspersed_args": False})
def run(
    command: Annotated[list[str], typer.Argument(help="The command and its arguments (after --).")],
    server_port: Annotated[
        int | None,
        typer.Option(help="Relay 127.0.0.1:PORT inside to 127.0.0.1:PORT on the host (the server)."),
    ] = None,
    sandbox_id: Annotated[str | None, typer.Option("--id", help="Sandbox id (default: generated).")] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", help="NAME=VALUE for the command (repeatable).")
    ] = None,
) -> None:
    """Run COMMAND in a fresh sandbox; exit with its exit code (128 + signal when it was killed)."""
    if os.geteuid() != 0:
        typer.echo("assay sandbox needs root (mount, pid and network namespaces, pivot_root)", err=True)
        raise typer.Exit(2)
    extra: dict[str, str] = {}
    for item in env or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            typer.echo(f"--env {item!r}: expected NAME=VALUE", err=True)
            raise typer.Exit(2)
        extra[name] = value
    sandbox = Sandbox(list(command), server_port=server_port, env=extra)
    if sandbox_id:
        sandbox.sandbox_id = sandbox_id
    # SIGTERM to this launcher ends the sandbox (and everything in it), then the launcher itself. The handler
    # only passes the signal on: the main thread's wait() then returns and the finally cleans up (waiting in
    # the handler would deadlock on the Popen's wait lock, which the interrupted wait() holds).
    signal.signal(signal.SIGTERM, lambda signum, frame: sandbox.signal(signal.SIGTERM))
    try:
        sandbox.start()
        code = sandbox.wait()
    except SandboxError as exc:
        typer.echo(f"sandbox: {exc}", err=True)
        raise typer.Exit(125) from exc
    finally:
        sandbox.close()
    raise typer.Exit(code if code >= 0 else 128 - code)


@app.command("capabilities")
def capabilities() -> None:
    """List the capabilities no process inside the sandbox can hold."""
    for name, number in DROPPED_CAPABILITIES.items():
        typer.echo(f"{number:3d} {name}")
