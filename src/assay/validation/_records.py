"""What validation reads: link records (from emulation) and the outcome vocabulary (DESIGN §6)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from assay.events import entity_id


class Outcome(StrEnum):
    DETECTED = "detected"
    MISSED_SUPPRESSED = "missed_suppressed"
    MISSED_NO_RULE = "missed_no_rule"
    MISSED_NO_TELEMETRY = "missed_no_telemetry"
    INCONCLUSIVE = "inconclusive"
    NOT_EXECUTED = "not_executed"


class NotRun(StrEnum):
    """Why a link is ``not_executed``, as a code a report can be filtered and counted by (the text beside it
    says the rest)."""

    PLATFORM = "platform"  # no executor for the agent's platform
    EXECUTOR = "executor"  # the agent has none of the ability's executors
    PRIVILEGE = "privilege"  # needs root, the agent is a user
    MISSING_FACTS = "missing_facts"  # a variable no fact could fill, or a requirement never met
    PREREQUISITE = "prerequisite"  # an Atomic prerequisite unmet (or needing the network to get)
    SAFETY = "safety"  # the ability's class may not run here (see its safety reason)
    SANDBOX = "sandbox"  # a sandboxed operation and an agent outside the sandbox
    UNTRUSTED = "untrusted"  # the agent was untrusted
    FAILED_COMMAND = "failed_command"  # it ran and exited non-zero
    TIMEOUT = "timeout"  # no result within its timeout
    NOT_FINISHED = "not_finished"  # queued, delivered or paused, never finished
    IGNORED = "ignored"  # above the operation's visibility, or discarded by the user
    NO_PID = "no_pid"  # it ran, but the agent reported no process to attribute telemetry to
    OTHER = "other"


# When a technique ran through several links, the most informative outcome wins.
TECHNIQUE_PRECEDENCE: tuple[Outcome, ...] = (
    Outcome.DETECTED,
    Outcome.MISSED_SUPPRESSED,
    Outcome.MISSED_NO_RULE,
    Outcome.MISSED_NO_TELEMETRY,
    Outcome.INCONCLUSIVE,
    Outcome.NOT_EXECUTED,
)

# Caldera's link status numbers (caldera-formats.md §C).
STATUS_SUCCESS = 0
STATUS_ERROR = 1
STATUS_TIMEOUT = 124
_STATUS_NAMES = {
    -5: "above the visibility threshold (ignored)",
    -4: "agent became untrusted before the link finished",
    -3: "queued or delivered, never finished",
    -2: "discarded",
    -1: "paused, awaiting approval",
    0: "success",
    1: "failed",
    124: "timed out",
}


def status_name(status: int | None) -> str:
    if status is None:
        return "never became a link"
    return _STATUS_NAMES.get(status, f"status {status}")


@dataclass(frozen=True, slots=True)
class LinkRecord:
    """One link as emulation stored it. Times are epoch seconds.

    ``start_ticks`` comes from agents that report it (Assay's own); with only a ``pid`` (a Caldera agent),
    the root process is found among the events by pid within the link's run.
    """

    link_id: str
    ability_id: str
    technique_id: str
    command: str
    status: int | None
    ability_name: str = ""
    tactic: str = ""
    host: str | None = None
    paw: str | None = None
    pid: int | None = None
    start_ticks: int | None = None
    exit_code: int | None = None
    delegated: float | None = None
    started: float | None = None
    finished: float | None = None
    cleanup: bool = False
    skip_reason: str | None = None
    stderr: str = ""
    skip_reason_id: int | None = None  # Caldera's reason id of a skip (emulation's SkipReason)

    @property
    def root_entity_id(self) -> str | None:
        if self.pid is None or self.pid <= 0 or self.start_ticks is None:
            return None
        return entity_id(self.pid, self.start_ticks)

    @property
    def window(self) -> tuple[float, float] | None:
        """When this link's process could have run: from delegation (or start) to finish."""
        begin = self.started if self.started is not None else self.delegated
        if begin is None or self.finished is None:
            return None
        return (min(begin, self.finished), self.finished)
