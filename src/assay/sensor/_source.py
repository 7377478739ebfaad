"""What every telemetry source shares: the lifecycle, self-noise filtering, counters and loss records.

A source is used from one thread::

    with open_source("auto", host="web1", self_noise=noise) as source:   # start() on enter, stop() on exit
        while running:
            for event in source.poll(timeout=0.05):
                ...

``stop()`` may also be called from another thread (a signal handler's): it waits for a running ``poll()``.
It detaches first, then collects what was still queued (and the final loss count); one more ``poll()`` after
``stop()`` returns that tail, so a clean shutdown loses nothing.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, ClassVar

from assay.errors import SensorError
from assay.events import Action, Event
from assay.sensor._noise import SelfNoise


def loss_event(
    source: str,
    host: str | None,
    count: int,
    window_start: float,
    window_end: float,
    **extra: Any,
) -> Event:
    """A ``loss`` record: ``count`` events this source could not deliver between the two times."""
    fields: dict[str, Any] = {
        "loss.count": int(count),
        "loss.window.start": float(window_start),
        "loss.window.end": float(max(window_end, window_start)),
    }
    fields.update(extra)
    return Event.of(Action.LOSS, source, max(window_end, window_start), host=host, values=fields)


class Source(ABC):
    """Base of every source. Subclasses implement ``_start``, ``_poll`` and ``_stop``."""

    name: ClassVar[str] = ""
    #: True once a finite source (replay) has delivered everything; live sources never finish.
    finished: bool = False

    def __init__(self, host: str, self_noise: SelfNoise | None = None, reason: str = "") -> None:
        self.host = host
        self.noise = (self_noise or SelfNoise()).with_self()
        self.reason = reason or f"{self.name} requested"
        self._lock = threading.RLock()
        self._state = "new"
        self._tail: list[Event] = []
        self.counts: dict[str, int] = {"events": 0, "dropped": 0, "filtered_self": 0, "loss_events": 0}

    # --- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._state != "new":
                raise SensorError(f"{self.name} source cannot start: it is {self._state}")
            try:
                self._start()
            except BaseException:
                self._state = "stopped"
                self._stop()
                raise
            self._state = "running"

    def poll(self, timeout: float = 0.05) -> list[Event]:
        """The events that arrived, waiting up to ``timeout`` seconds for some. Loss records included."""
        with self._lock:
            if self._state == "stopped":
                batch, self._tail = self._tail, []
            elif self._state != "running":
                return []
            else:
                batch = self._poll(max(0.0, timeout))
        if not batch:
            return batch
        out = self._filter(batch)
        filtered = len(batch) - len(out)
        self.counts["filtered_self"] += filtered
        self.counts["events"] += len(out)
        return out

    def stop(self) -> None:
        with self._lock:
            if self._state == "stopped":
                return
            was_running = self._state == "running"
            self._state = "stopped"
            tail = self._stop()
            if was_running:
                self._tail.extend(tail)

    @property
    def running(self) -> bool:
        return self._state == "running"

    def stats(self) -> dict[str, int]:
        """At least ``events`` (delivered) and ``dropped`` (lost before delivery, as loss events report)."""
        with self._lock:
            out = dict(self.counts)
            out.update(self._extra_stats())
        return out

    def __enter__(self) -> Source:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- for subclasses ---------------------------------------------------------------------------------
    def _filter(self, batch: list[Event]) -> list[Event]:
        """Drop self-noise; sources that filter pids in the kernel override this with a cheaper check."""
        drops = self.noise.drops
        return [e for e in batch if not drops(e)]

    def _loss(self, count: int, start: float, end: float, **extra: Any) -> Event:
        self.counts["dropped"] += count
        self.counts["loss_events"] += 1
        return loss_event(self.name, self.host, count, start, end, **extra)

    def _extra_stats(self) -> dict[str, int]:
        return {}

    @abstractmethod
    def _start(self) -> None: ...

    @abstractmethod
    def _poll(self, timeout: float) -> list[Event]: ...

    @abstractmethod
    def _stop(self) -> list[Event]:
        """Detach and release everything; return what was still queued (including a final loss record)."""
