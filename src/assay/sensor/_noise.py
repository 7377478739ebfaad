"""Self-noise: what Assay itself does on the host, kept out of the event stream (architecture §3).

- the sensor's own process: always (its reads, its map updates, its output file);
- ``ignore_pids`` (the server): everything they do;
- ``agent_pids``: only their connections to ``server_endpoints`` (the beacons). Everything else an agent
  does, and everything its command children do, stays visible: that is the attack being measured.

An endpoint whose address is unspecified (``0.0.0.0``, ``::``) matches any address on that port, since a
server bound to all interfaces is reached through loopback or any local address.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from assay.errors import ConfigError
from assay.events import Action, Event
from assay.sensor._net import normalize_ip

_ANY = {"0.0.0.0", "::"}


@dataclass(frozen=True)
class SelfNoise:
    ignore_pids: frozenset[int] = field(default_factory=frozenset)
    agent_pids: frozenset[int] = field(default_factory=frozenset)
    server_endpoints: frozenset[tuple[str, int]] = field(default_factory=frozenset)

    def __init__(
        self,
        ignore_pids: Iterable[int] = (),
        agent_pids: Iterable[int] = (),
        server_endpoints: Iterable[tuple[str, int]] = (),
    ) -> None:
        eps: set[tuple[str, int]] = set()
        for ep in server_endpoints:
            try:
                host, port = ep
                eps.add((normalize_ip(str(host)), int(port)))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"server endpoint {ep!r} is not (ip, port)") from exc
        object.__setattr__(self, "ignore_pids", frozenset(int(p) for p in ignore_pids))
        object.__setattr__(self, "agent_pids", frozenset(int(p) for p in agent_pids))
        object.__setattr__(self, "server_endpoints", frozenset(eps))

    def with_self(self, pid: int | None = None) -> SelfNoise:
        """The same rules, plus the calling process (the sensor) among the ignored ones."""
        return SelfNoise(self.ignore_pids | {pid or os.getpid()}, self.agent_pids, self.server_endpoints)

    def _is_server(self, ip: object, port: object) -> bool:
        if not isinstance(ip, str) or not isinstance(port, int):
            return False
        ip = normalize_ip(ip)
        return any(p == port and (h == ip or h in _ANY) for h, p in self.server_endpoints)

    def drops(self, event: Event) -> bool:
        """True when the event is Assay's own doing and must not reach detection."""
        f = event.fields
        pid = f.get("process.pid")
        if pid in self.ignore_pids:
            return True
        if f.get("event.action") == Action.FORK and f.get("process.parent.pid") in self.ignore_pids:
            return True  # the fork is the ignored parent's doing; the child itself stays visible
        if pid in self.agent_pids and f.get("event.action") == Action.CONNECT:
            return self._is_server(f.get("destination.ip"), f.get("destination.port"))
        return False
