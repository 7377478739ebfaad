"""uvicorn's httptools protocol, with each response's head and first body bytes sent in one write.

uvicorn writes a response's status line and headers on ``http.response.start`` and the body on
``http.response.body``: two ``send()`` system calls and two TCP segments per response, which the client must
also wake up for twice. Under 2,000 agents beaconing back to back that second write was the largest single
cost in the server's profile (``bench/beacons.py``). This protocol hands uvicorn a transport that holds a
response head back until the next write (the body, possibly empty), then sends both together.

Only a response head is held: the first write of a request/response cycle that is a status line other than
``1xx`` (a ``100 Continue`` goes out at once, or a client waiting for it would stall). The next write,
whatever it is, releases it, and so does closing the connection. If uvicorn's internals change so that the
cycle cannot be seen, nothing is held and responses go out exactly as uvicorn writes them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _CoalescingTransport:
    """Delegates everything to the real transport; holds a response head until the next write."""

    def __init__(self, inner: asyncio.Transport, protocol: HttpToolsProtocol) -> None:
        self._inner = inner
        self._protocol = protocol
        self._held = b""
        self._headed: object = None  # the cycle whose head was seen

    def write(self, data: bytes | bytearray | memoryview) -> None:
        cycle = getattr(self._protocol, "cycle", None)
        if (
            cycle is not None
            and cycle is not self._headed
            and not self._held
            and bytes(data[:9]) == b"HTTP/1.1 "
            and bytes(data[9:10]) != b"1"
        ):
            self._headed = cycle
            self._held = bytes(data)
            return
        if self._held:
            data, self._held = self._held + bytes(data), b""
        self._inner.write(data)

    def close(self) -> None:
        if self._held:
            self._inner.write(self._held)
            self._held = b""
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_CoalescingTransport(transport, self))  # type: ignore[arg-type]


# -- connection limits -----------------------------------------------------------------------------------
# uvicorn arms no timer on a new connection, and a request head's bytes each cancel the keep-alive timer:
# a client that connects and sends nothing, or one header byte a second (slowloris), holds its connection
# and file descriptor forever. uvicorn's own bound (limit_concurrency) answers 503 to every request once
# that many connections are open, idle ones included, so a flood of idle connections would stop the API.
# The protocol below bounds both instead: a request head must be complete within ``head_timeout`` of the
# connection opening (or of its first byte, on a kept-alive connection), and when more than
# ``max_connections`` are open, the connection idle longest (waiting for a head, never mid-request) is
# closed to make room: a flood evicts itself, and a client that sends its request at once is not affected.
HEAD_TIMEOUT = 10.0
MAX_CONNECTIONS = 4096


class GuardedHttpToolsProtocol(CoalescingHttpToolsProtocol):
    head_timeout: float = HEAD_TIMEOUT
    max_connections: int = MAX_CONNECTIONS

    _head_timer: asyncio.TimerHandle | None = None
    _idle_since: float = 0.0
    _served: int = 0  # request heads completed on this connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._idle_since = self.loop.time()
        self._arm_head_timer()
        if len(self.connections) > self.max_connections:  # cheap test first; closing ones still count here
            self._evict()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # the next request on a kept-alive connection: its head is timed too
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        self._served += 1
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        self._idle_since = self.loop.time()
        super().on_response_complete()

    def _idle(self) -> bool:
        """Waiting for a request head: no request of this connection is being read or answered."""
        cycle = getattr(self, "cycle", None)
        return self._head_timer is not None or cycle is None or bool(cycle.response_complete)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        cycle = getattr(self, "cycle", None)
        if cycle is not None and not cycle.response_complete:
            self._arm_head_timer()  # a pipelined head behind a response still going out: wait for it
            return
        if not self.transport.is_closing():
            self.transport.close()

    def _evict(self) -> None:
        """Close the connection idle longest, preferring one that never completed a request head."""
        # A closed transport leaves ``connections`` only at connection_lost, on a later loop turn.
        live = [c for c in self.connections if not c.transport.is_closing()]
        if len(live) <= self.max_connections:
            return
        candidates = [
            c for c in live if isinstance(c, GuardedHttpToolsProtocol) and c is not self and c._idle()
        ]
        if not candidates:
            return  # every other connection is mid-request: nothing is idle to give way
        victim = min(candidates, key=lambda c: (c._served > 0, c._idle_since))
        victim._cancel_head_timer()
        if not victim.transport.is_closing():
            victim.transport.close()


def guarded_protocol(head_timeout: float, max_connections: int) -> type[GuardedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, with these limits."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"head_timeout": head_timeout, "max_connections": max_connections},
    )
