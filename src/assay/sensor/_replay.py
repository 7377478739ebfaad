"""Replay: events from a JSON Lines file (one recorded by ``assay sense --output``, or written by hand).

It is the source for tests and demos without root, and for re-running detection on recorded telemetry.
Events come back as recorded; self-noise rules still apply. A malformed line stops the replay with an
error naming file:line, after the good lines before it were delivered.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from assay.errors import EventError, SensorError
from assay.errors import Source as Where
from assay.events import Event, read_jsonl
from assay.sensor._noise import SelfNoise
from assay.sensor._source import Source


class ReplaySource(Source):
    name = "replay"

    def __init__(
        self,
        host: str,
        self_noise: SelfNoise | None = None,
        reason: str = "",
        *,
        path: str | Path | None = None,
        events: Iterable[Event] | None = None,
        batch: int = 4096,
    ) -> None:
        super().__init__(host, self_noise, reason or (f"replaying {path}" if path else "replaying events"))
        if (path is None) == (events is None):
            raise SensorError("replay needs exactly one of a file path or an iterable of events")
        self.path = Path(path) if path is not None else None
        if self.path is not None and not self.path.is_file():
            raise SensorError("replay file not found", Where(file=str(self.path)))
        self._events = events
        self._iter: Iterator[Event] | None = None
        self._batch = max(1, batch)
        self.finished = False

    def _start(self) -> None:
        self._iter = read_jsonl(self.path) if self.path is not None else iter(self._events or ())

    def _poll(self, timeout: float) -> list[Event]:
        if self._iter is None:
            return []
        out: list[Event] = []
        try:
            for ev in self._iter:
                out.append(ev)
                if len(out) >= self._batch:
                    break
            else:
                self.finished = True
                self._iter = None
        except EventError as exc:
            self.finished = True
            self._iter = None
            raise SensorError(f"replay stopped: {exc.message}", exc.source) from exc
        return out

    def _stop(self) -> list[Event]:
        self._iter = None
        return []
