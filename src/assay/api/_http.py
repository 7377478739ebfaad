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
