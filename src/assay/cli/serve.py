"""`assay serve`: the server (REST API, agent contacts, storage) under uvicorn, on loopback by default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from assay.errors import AssayError
from assay.plugins import hookimpl


@hookimpl
def register_commands(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    host: Annotated[str, typer.Option(help="Address to bind; loopback unless told otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free port, printed at start).")] = 8888,
    db: Annotated[
        str | None,
        typer.Option(help="Database URL (default: SQLite file in the data dir); postgresql://... works."),
    ] = None,
    data_dir: Annotated[Path, typer.Option(help="Where the SQLite database and server files live.")] = Path(
        ".assay"
    ),
    api_key: Annotated[
        str | None,
        typer.Option(envvar="ASSAY_API_KEY", help="Admin API key (default: generated on first start)."),
    ] = None,
    enrol_token: Annotated[
        str | None,
        typer.Option(
            envvar="ASSAY_ENROL_TOKEN", help="Agent enrolment token (default: generated on first start)."
        ),
    ] = None,
    content: Annotated[
        list[Path] | None, typer.Option(help="Extra ability/adversary files or directories to load.")
    ] = None,
    caldera_compat: Annotated[
        bool,
        typer.Option(
            "--caldera-compat",
            help="Also serve Caldera's /beacon and /file/* contacts, so Caldera agents "
            "(Sandcat) work unchanged. Off by default: anyone reaching the port could register an agent.",
        ),
    ] = False,
    caldera_unenrolled: Annotated[
        str,
        typer.Option(
            help="What a Caldera agent beaconing without the enrolment token gets: 'untrusted' (listed, "
            "no command, no result taken until an operator trusts it), 'refuse' (403, nothing stored) or "
            "'trusted' (Caldera's behaviour: anyone reaching the port can run it). With the token "
            "(Sandcat: -server http://HOST:PORT/enrol/TOKEN) an agent is trusted.",
        ),
    ] = "untrusted",
    payload_dir: Annotated[
        list[Path] | None,
        typer.Option(help="Extra directories of payloads agents may download (after <data-dir>/payloads)."),
    ] = None,
    tls: Annotated[
        bool,
        typer.Option(
            "--tls",
            help="Serve HTTPS. Without --tls-cert/--tls-key: a self-signed certificate generated on first "
            "use under the data dir; agents pin its sha256 (printed at start).",
        ),
    ] = False,
    tls_cert: Annotated[Path | None, typer.Option(help="Your own PEM certificate (implies --tls).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The key of --tls-cert (PEM).")] = None,
    max_connections: Annotated[
        int,
        typer.Option(
            help="Open connections at most; past it the longest idle one is closed (bounded by the fd limit)."
        ),
    ] = 4096,
    head_timeout: Annotated[
        float, typer.Option(help="Seconds a client has to send a request's head (slowloris bound).")
    ] = 10.0,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Run the Assay server: REST API v2 (OpenAPI at /api/docs), agent contacts, storage."""
    from assay.api import ServerConfig
    from assay.api import serve as run

    config = ServerConfig(
        data_dir=data_dir,
        db_url=db,
        api_key=api_key or None,
        enrol_token=enrol_token or None,
        content_paths=list(content or []),
        caldera_compat=caldera_compat,
        caldera_unenrolled=caldera_unenrolled,
        payload_dirs=list(payload_dir or []),
    )
    try:
        files = None
        if tls or tls_cert is not None or tls_key is not None:
            from assay.api._tls import load

            files = load(tls_cert, tls_key, data_dir, host)
        run(
            config,
            host=host,
            port=port,
            log_level=log_level,
            tls=files,
            max_connections=max_connections,
            head_timeout=head_timeout,
        )
    except AssayError as exc:
        typer.echo(f"assay serve: {exc}", err=True)
        raise typer.Exit(code=2) from exc
