"""The sandbox's one network path: TCP on loopback ↔ a unix socket, relayed byte for byte.

Inside, the sandbox's network namespace has only its own loopback. The server's port is reached through
two relays and a unix socket bound read-only into the sandbox's ``/run/assay``:

    agent → 127.0.0.1:PORT (sandbox loopback) → [inside relay, sandbox init] → unix socket
          → [host relay, launcher] → 127.0.0.1:PORT (host loopback, the server)

A unix socket crosses network namespaces (it is a file), and the host relay connects to one fixed address
only, so nothing else on the host is reachable. Threads, not asyncio: a relay carries a handful of
connections (beacons), and the sandbox init must stay a plain, single-purpose process.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from contextlib import suppress

_CHUNK = 65536


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(_CHUNK):
            dst.sendall(data)
    except OSError:
        pass  # the other side went away: closing both below ends the pair; nothing to report
    finally:
        with suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _pair(a: socket.socket, b: socket.socket) -> None:
    t = threading.Thread(target=_pump, args=(b, a), daemon=True)
    t.start()
    _pump(a, b)
    t.join()
    a.close()
    b.close()


class Relay:
    """Accept on ``listener``; for every connection, ``connect()`` the other side and copy both ways."""

    def __init__(self, listener: socket.socket, connect: Callable[[], socket.socket]) -> None:
        self.listener = listener
        self.connect = connect
        self._thread = threading.Thread(target=self._serve, daemon=True, name="assay-sandbox-relay")

    def start(self) -> Relay:
        self._thread.start()
        return self

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # listener closed: the relay stops
            try:
                upstream = self.connect()
            except OSError:
                client.close()  # the server is gone; the client sees its connection closed
                continue
            threading.Thread(target=_pair, args=(client, upstream), daemon=True).start()

    def close(self) -> None:
        with suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


def tcp_to_unix(port: int, socket_path: str) -> Relay:
    """Inside: listen on 127.0.0.1:port, forward to the unix socket."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)

    def connect() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(socket_path)
        return s

    return Relay(listener, connect)


def unix_to_tcp(socket_path: str, port: int) -> Relay:
    """Host side: listen on the unix socket, forward to 127.0.0.1:port (the server) and nowhere else."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(64)

    def connect() -> socket.socket:
        s = socket.create_connection(("127.0.0.1", port), timeout=10.0)
        s.settimeout(None)  # a beacon is held open for up to a minute: no read timeout on the relay
        return s

    return Relay(listener, connect)
