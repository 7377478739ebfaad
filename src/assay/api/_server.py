"""Running the app under uvicorn on a socket bound here, so ``--port 0`` works and the real port is known."""

from __future__ import annotations

import resource
import socket
import sys

import uvicorn

from assay.api._app import create_app
from assay.api._http import HEAD_TIMEOUT, MAX_CONNECTIONS, guarded_protocol
from assay.api._state import API_KEY, ENROL_TOKEN, ServerConfig, open_state
from assay.api._tls import TlsFiles
from assay.errors import ConfigError


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


FD_RESERVE = 128  # descriptors kept for the database, payload files, logs: never handed to connections
FD_WANTED = 65536


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE toward the hard one (Debian's soft default, 1024, would cap the server
    near 1,000 connections: 2,000 agents need more); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FD_WANTED if hard == resource.RLIM_INFINITY else min(hard, FD_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass  # keep the limit we have; max_connections below follows it
    return FD_WANTED if soft == resource.RLIM_INFINITY else soft


def serve(
    config: ServerConfig,
    host: str = "127.0.0.1",
    port: int = 8888,
    log_level: str = "warning",
    tls: TlsFiles | None = None,
    max_connections: int = MAX_CONNECTIONS,
    head_timeout: float = HEAD_TIMEOUT,
) -> None:
    """Start the server and block. Prints generated secrets once, then ``listening on URL``."""
    if max_connections < 1 or head_timeout <= 0:
        raise ConfigError(
            f"--max-connections must be at least 1 (got {max_connections}) and --head-timeout above 0 "
            f"(got {head_timeout})"
        )
    # Past the descriptor limit accept() fails and nobody, authenticated or not, gets in: stay below it.
    max_connections = min(max_connections, max(1, raise_fd_limit() - FD_RESERVE))
    sock = bind(host, port)
    state = open_state(config)
    app = create_app(config, state)
    out = sys.stdout
    if API_KEY in state.generated:
        out.write(f"assay serve: generated API key (shown once, stored hashed): {state.generated[API_KEY]}\n")
    if ENROL_TOKEN in state.generated:
        out.write(
            f"assay serve: generated agent enrolment token (shown once, stored hashed): "
            f"{state.generated[ENROL_TOKEN]}\n"
        )
    for error in state.content.errors:
        out.write(f"assay serve: content error: {error}\n")
    actual = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    out.write(
        f"assay serve: database {state.store.db.backend}, {len(state.content.library.abilities)} abilities\n"
    )
    if config.caldera_compat:
        policy = {
            "untrusted": "registered untrusted (no command until an operator trusts it)",
            "refuse": "refused",
            "trusted": "TRUSTED: anyone who can reach this port can run commands through it",
        }[config.caldera_unenrolled]
        out.write(
            "assay serve: --caldera-compat: Caldera's /beacon and /file/* contacts are ON; Sandcat enrols "
            f"with -server http://HOST:PORT/enrol/<token>; an agent without the token is {policy}\n"
        )
    scheme = "https" if tls else "http"
    if tls is not None:
        made = "generated self-signed certificate" if tls.generated else "certificate"
        out.write(f"assay serve: TLS {made} {tls.cert} (key {tls.key})\n")
        out.write(f"assay serve: TLS certificate sha256 {tls.fingerprint}\n")
        token = state.generated.get(ENROL_TOKEN, "<enrol-token>")
        out.write(
            "assay serve: deploy an agent (it pins this certificate): assay agent deploy-command "
            f"--server https://HOST:{actual} --tls-pin {tls.fingerprint} --enrol-token {token}\n"
        )
    out.write(
        f"assay serve: at most {max_connections} connections (the longest idle gives way); "
        f"a request head must arrive within {head_timeout:g}s\n"
    )
    out.write(f"assay serve: listening on {scheme}://{shown}:{actual}\n")
    out.flush()
    # Held beacons would otherwise delay a stop by up to their wait: give open requests 2 s, then close.
    # The stdlib asyncio loop, not uvloop: under 2,000 agents beaconing back to back, uvloop stopped accepting
    # new connections (1,800 of 2,000 agents never got an answer); asyncio served all of them, fairly
    # (bench/beacons.py). httptools parses HTTP.
    config_ = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
        loop="asyncio",
        # httptools, one write per response, bounded connections and head timeout (see _http). Not
        # limit_concurrency: it answers 503 to everyone once idle connections fill it.
        http=guarded_protocol(head_timeout, max_connections),
        backlog=4096,
        timeout_keep_alive=75,  # agents keep one connection open between beacons
        proxy_headers=False,  # nothing sits in front of it; X-Forwarded-* from a local agent is not trusted
        server_header=False,
        ssl_certfile=str(tls.cert) if tls else None,
        ssl_keyfile=str(tls.key) if tls else None,
    )
    server = uvicorn.Server(config_)
    server.run(sockets=[sock])
