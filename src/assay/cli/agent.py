"""`assay agent`: run the agent, build it as a zipapp, print a one-line deploy command for another host."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from assay.plugins import hookimpl

agent_app = typer.Typer(
    help="The Assay agent: run it, build it as a zipapp, deploy it.", no_args_is_help=True
)


@hookimpl
def register_commands(app: typer.Typer) -> None:
    app.add_typer(agent_app, name="agent")


@agent_app.command("build")
def build(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the zipapp.")] = Path(
        "assay-agent.pyz"
    ),
) -> None:
    """Write assay-agent.pyz: the stdlib-only agent as one file that python3 (3.9+) runs anywhere."""
    from assay.agent._build import build_zipapp

    digest = build_zipapp(output)
    typer.echo(f"{output} ({output.stat().st_size} bytes, sha256 {digest})")
    typer.echo(f"run it: python3 {output} --server URL --enrol-token TOKEN")


_FETCH = (
    "import sys,urllib.request as u;"
    'r=u.Request(sys.argv[1],headers={"Authorization":"Bearer "+sys.argv[2]});'
    "sys.stdout.buffer.write(u.urlopen(r,timeout=60).read())"
)


# With a pinned certificate: no CA store, no host name check; the connection is dropped before the request
# (which carries the token) is sent unless the certificate's sha256 is the pin.
_FETCH_PINNED = (
    "import sys,ssl,hashlib,http.client as h,urllib.parse as p;"
    "u=p.urlsplit(sys.argv[1]);c=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT);c.check_hostname=False;"
    "c.verify_mode=ssl.CERT_NONE;k=h.HTTPSConnection(u.hostname,u.port or 443,context=c,timeout=60);"
    "k.connect();f=hashlib.sha256(k.sock.getpeercert(True)).hexdigest();"
    'f==sys.argv[3] or sys.exit("assay: the server certificate has sha256 "+f+'
    '", not the pinned "+sys.argv[3]);'
    'k.request("GET",u.path,headers={"Authorization":"Bearer "+sys.argv[2]});r=k.getresponse();'
    'r.status==200 or sys.exit("assay: fetching the agent: HTTP %d"%r.status);'
    "sys.stdout.buffer.write(r.read())"
)


def deploy_line(
    server: str,
    token: str,
    group: str,
    path: str = "assay-agent.pyz",
    *,
    foreground: bool = False,
    tls_pin: str | None = None,
) -> str:
    """One shell line: fetch the zipapp from the server with python3 alone (no curl needed), then start it
    (in the background, detached; or in the foreground, replacing the shell). With ``tls_pin`` both the
    fetch and the agent trust only the server certificate with that SHA-256."""
    server = server.rstrip("/")
    q = shlex.quote
    url = q(server + "/agent/assay-agent.pyz")
    if tls_pin:
        fetch = f"python3 -c {q(_FETCH_PINNED)} {url} {q(token)} {q(tls_pin)} > {q(path)}"
    else:
        fetch = f"python3 -c {q(_FETCH)} {url} {q(token)} > {q(path)}"
    start = f"env ASSAY_ENROL_TOKEN={q(token)} python3 {q(path)} --server {q(server)} --group {q(group)}"
    if tls_pin:
        start += f" --tls-pin {q(tls_pin)}"
    if foreground:
        return f"{fetch} && exec {start}"
    return f"{fetch} && nohup {start} >/dev/null 2>&1 &"


@agent_app.command("deploy-command")
def deploy_command(
    server: Annotated[str, typer.Option(help="The server URL as the target host reaches it.")],
    enrol_token: Annotated[
        str,
        typer.Option(envvar="ASSAY_ENROL_TOKEN", help="The enrolment token (printed once by assay serve)."),
    ],
    group: Annotated[str, typer.Option(help="The agent's group.")] = "red",
    foreground: Annotated[
        bool, typer.Option("--foreground", help="Run the agent in the foreground instead of detaching it.")
    ] = False,
    tls_pin: Annotated[
        str | None,
        typer.Option(
            help="SHA-256 fingerprint of the server's TLS certificate (printed by assay serve --tls); "
            "the fetch and the agent trust that certificate only."
        ),
    ] = None,
) -> None:
    """Print a one-line command that downloads the agent from the server and starts it on another host."""
    from assay.agent._agent import normalise_pin

    if not server.startswith(("http://", "https://")):
        typer.echo("assay agent deploy-command: --server must be an http:// or https:// URL", err=True)
        raise typer.Exit(code=2)
    pin: str | None = None
    if tls_pin is not None:
        if not server.startswith("https://"):
            typer.echo("assay agent deploy-command: --tls-pin needs an https:// --server URL", err=True)
            raise typer.Exit(code=2)
        try:
            pin = normalise_pin(tls_pin)
        except ValueError as exc:
            typer.echo(f"assay agent deploy-command: {exc}", err=True)
            raise typer.Exit(code=2) from exc
    typer.echo(deploy_line(server, enrol_token, group, foreground=foreground, tls_pin=pin))


@agent_app.command(
    "run",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def run(ctx: typer.Context) -> None:
    """Run the agent here (same options as python3 -m assay.agent; --help lists them)."""
    from assay.agent import main

    raise typer.Exit(code=main(list(ctx.args)))
