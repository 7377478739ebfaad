"""Values the C2 core hands around: instructions, agent timing, result outcomes, audit entries.

Pure dataclasses (no I/O, no web framework): :mod:`assay.storage` stores the last two kinds as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from assay.errors import C2Error, Source

# Bounds on what an operator (or a Caldera profile) may set. Caldera accepted ``sleep_min -5`` and sent it to
# the agent (issue 4); a day is longer than any purple-team round, and beyond it a value is a typo.
MAX_SLEEP = 86_400
MAX_WATCHDOG = 30 * 86_400
UNTRUSTED_TIMER = 90  # Caldera: an agent is dead after sleep_max + this many seconds of silence


@dataclass(frozen=True, slots=True)
class Instruction:
    """One command for an agent; ``command`` is plain text, contacts encode it as their protocol wants."""

    id: str
    operation_id: str
    executor: str
    command: str
    timeout: int
    cleanup: bool
    payloads: tuple[str, ...] = ()
    uploads: tuple[str, ...] = ()
    deadman: bool = False
    delete_payload: bool = True
    sleep: int = 0  # Caldera's link jitter: seconds the agent waits after starting it


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """What an operator can change about an agent (Caldera's ``PATCH /api/v2/agents/{paw}``)."""

    sleep_min: int
    sleep_max: int
    watchdog: int
    pending_kill: bool = False
    profile: Mapping[str, Any] = field(default_factory=dict)  # Caldera profile fields kept as given
    kill_delivered: bool = False  # the pending kill reached the agent (it stopped): its status is ``dead``


@dataclass(frozen=True, slots=True)
class AgentDefaults:
    """Caldera's ``conf/agents.yml``: timing for agents that bring none (``PATCH /api/v2/config/agents``)."""

    sleep_min: int = 30
    sleep_max: int = 60
    watchdog: int = 0
    untrusted_timer: int = UNTRUSTED_TIMER
    deadman_abilities: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "sleep_min": self.sleep_min,
            "sleep_max": self.sleep_max,
            "watchdog": self.watchdog,
            "untrusted_timer": self.untrusted_timer,
            "deadman_abilities": list(self.deadman_abilities),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentDefaults:
        """From :meth:`to_dict` as stored; a key missing (a row older than a field) keeps its default."""
        base = cls()
        return cls(
            sleep_min=int(data.get("sleep_min", base.sleep_min)),
            sleep_max=int(data.get("sleep_max", base.sleep_max)),
            watchdog=int(data.get("watchdog", base.watchdog)),
            untrusted_timer=int(data.get("untrusted_timer", base.untrusted_timer)),
            deadman_abilities=tuple(str(a) for a in data.get("deadman_abilities", ())),
        )


class ResultState(StrEnum):
    ACCEPTED = "accepted"  # recorded now
    DUPLICATE = "duplicate"  # this link already had a result (a re-send after a reconnect): nothing changed
    REJECTED = "rejected"  # not a link this agent may report (unknown, or another agent's)


@dataclass(frozen=True, slots=True)
class ResultOutcome:
    link_id: str
    state: ResultState
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit record. ``kind``: ``dispatch`` (a command handed to an agent), ``api`` (a state-changing
    API call and the key that made it), ``approval`` (an operator trusted an agent, or approved, discarded or
    rewrote a link), ``enrol``, ``register``, ``agent`` (a PATCH, a kill or a delete), ``config`` (a changed
    server-wide agent default)."""

    at: float
    kind: str
    principal: str | None = None
    operation_id: str | None = None
    link_id: str | None = None
    paw: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "kind": self.kind,
            "principal": self.principal,
            "operation_id": self.operation_id,
            "link_id": self.link_id,
            "paw": self.paw,
            "data": dict(self.data),
        }


class Refused(C2Error):
    """A request a contact refuses, with the HTTP status that says why (400 unless told)."""

    def __init__(self, message: str, source: Source | None = None, *, status: int = 400) -> None:
        super().__init__(message, source)
        self.status = status
