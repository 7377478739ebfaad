"""Validation's inputs as storage keeps them: stored links → :class:`LinkRecord`, plus the round's telemetry.

Typed by protocols, not by the storage and emulation classes, so validation stays importable without them
and any store with these two methods (a database, a test fake) can feed it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from assay.events import Alert, Event
from assay.validation._records import LinkRecord
from assay.validation._report import RoundReport, validate


class StoredLink(Protocol):
    """The fields of an emulation link that validation reads (``assay.emulation.Link`` has them)."""

    # Read-only properties: protocol attributes would be invariant, and Link.status is a LinkStatus (an int).
    @property
    def id(self) -> str: ...

    @property
    def ability_id(self) -> str: ...

    @property
    def ability_name(self) -> str: ...

    @property
    def technique_id(self) -> str: ...

    @property
    def tactic(self) -> str: ...

    @property
    def command(self) -> str: ...

    @property
    def status(self) -> int: ...

    @property
    def host(self) -> str: ...

    @property
    def paw(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    @property
    def start_ticks(self) -> int | None: ...

    @property
    def exit_code(self) -> int | None: ...

    @property
    def delegated_at(self) -> float | None: ...

    @property
    def started_at(self) -> float | None: ...

    @property
    def finished_at(self) -> float | None: ...

    @property
    def cleanup(self) -> bool: ...

    @property
    def skip_reason(self) -> str | None: ...

    @property
    def stderr(self) -> str: ...

    @property
    def skip_reason_id(self) -> int | None: ...


class RoundStore(Protocol):
    def links(self, operation_id: str) -> Sequence[StoredLink]: ...

    def telemetry_for_operation(
        self, operation_id: str, margin: float = ...
    ) -> tuple[list[Event], list[Alert]]: ...


def link_record(link: StoredLink) -> LinkRecord:
    return LinkRecord(
        link_id=link.id,
        ability_id=link.ability_id,
        technique_id=link.technique_id,
        command=link.command,
        status=int(link.status),
        ability_name=link.ability_name,
        tactic=link.tactic,
        host=link.host or None,
        paw=link.paw,
        pid=link.pid,
        start_ticks=link.start_ticks,
        exit_code=link.exit_code,
        delegated=link.delegated_at,
        started=link.started_at,
        finished=link.finished_at,
        cleanup=link.cleanup,
        skip_reason=link.skip_reason,
        stderr=link.stderr,
        skip_reason_id=None if link.skip_reason_id is None else int(link.skip_reason_id),
    )


def round_inputs(
    store: RoundStore, operation_id: str, margin: float = 2.0
) -> tuple[list[LinkRecord], list[Event], list[Alert]]:
    """The links of an operation and the events and alerts recorded while it ran (± ``margin`` seconds)."""
    links = [link_record(lk) for lk in store.links(operation_id)]
    events, alerts = store.telemetry_for_operation(operation_id, margin=margin)
    return links, events, alerts


def operation_report(
    store: RoundStore,
    operation_id: str,
    *,
    name: str,
    state: str,
    mapped_techniques: Collection[str],
    consumed_actions: Collection[str],
) -> RoundReport:
    """An operation's links classified now from what storage holds (a round no report was stored for)."""
    links, events, alerts = round_inputs(store, operation_id)
    return validate(
        links,
        events,
        alerts,
        mapped_techniques=mapped_techniques,
        consumed_actions=consumed_actions,
        meta={"operation_id": operation_id, "name": name, "state": state},
    )
