"""Links, agents and results: the records an operation is made of.

A link is one ability run (or skipped) on one agent. Its status uses Caldera's numbers so that
Caldera-shaped API responses and reports need no translation. Times are epoch seconds (floats, UTC), like
``Event.timestamp``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from assay.content import Privilege


class LinkStatus(IntEnum):
    """Caldera's link status numbers (caldera ``Link.states``)."""

    HIGH_VIZ = -5  # above the visibility threshold; ignored
    UNTRUSTED = -4  # the agent went untrusted before the link finished
    EXECUTE = -3  # queued, or delivered to the agent (then ``delegated_at`` is set)
    DISCARD = -2  # ignored; Assay also uses it for skipped abilities, with ``skip_reason``
    PAUSE = -1  # manual mode: waiting for approval
    SUCCESS = 0
    ERROR = 1
    TIMEOUT = 124

    @property
    def finished(self) -> bool:
        """Nothing more will happen to the link. Unlike Caldera, ignored (-5) and untrusted (-4) links count:
        an operation never waits for them."""
        return self in _FINISHED

    @property
    def ran(self) -> bool:
        """The agent ran the command (whatever its outcome), so its cleanup is due."""
        return self in _RAN


_FINISHED = frozenset(
    {
        LinkStatus.HIGH_VIZ,
        LinkStatus.UNTRUSTED,
        LinkStatus.DISCARD,
        LinkStatus.SUCCESS,
        LinkStatus.ERROR,
        LinkStatus.TIMEOUT,
    }
)
_RAN = frozenset({LinkStatus.SUCCESS, LinkStatus.ERROR, LinkStatus.TIMEOUT})


class SkipReason(IntEnum):
    """Why an ability was not run on an agent: Caldera's ``reason_id`` numbers in ``skipped_abilities``."""

    PLATFORM = 0
    EXECUTOR = 1
    PRIVILEGE = 2
    FACT_DEPENDENCY = 3
    LINK_IGNORED = 4
    UNTRUSTED = 5
    OPERATION_RUNNING = 6
    OTHER = 7


class OperationState(StrEnum):
    """Caldera's operation states.

    ``running`` plans and hands out links; ``paused`` does neither (results are still taken);
    ``run_one_link`` hands out one link and pauses when its result arrives; ``cleanup`` runs the cleanup of
    every executed ability, newest first; ``finished`` and ``out_of_time`` (cleanup overran its budget) are
    terminal.
    """

    RUNNING = "running"
    RUN_ONE_LINK = "run_one_link"
    PAUSED = "paused"
    CLEANUP = "cleanup"
    OUT_OF_TIME = "out_of_time"
    FINISHED = "finished"


class OriginType(IntEnum):
    """Where a fact came from (Caldera's numbers)."""

    DOMAIN = 0
    SEEDED = 1
    LEARNED = 2
    IMPORTED = 3
    USER = 4


@dataclass(slots=True)
class Fact:
    """A trait with a value; one per (trait, value) in an operation, however often it was learned."""

    trait: str
    value: str
    score: int = 1
    origin_type: OriginType = OriginType.LEARNED
    source: str = ""  # the operation or fact source it came from
    links: list[str] = field(default_factory=list)  # links whose output produced it
    collected_by: list[str] = field(default_factory=list)  # paws
    technique_id: str = ""
    created_at: float = 0.0

    @property
    def key(self) -> tuple[str, str]:
        return (self.trait, self.value)

    @property
    def unique(self) -> str:
        """Caldera's ``unique``: trait followed by value."""
        return self.trait + self.value


@dataclass(frozen=True, slots=True)
class Relationship:
    """``source`` -``edge``-> ``target`` between facts given as (trait, value); edge and target optional."""

    source: tuple[str, str]
    edge: str | None = None
    target: tuple[str, str] | None = None
    score: int = 1
    origin: str = ""  # the link or fact source that made it

    @property
    def key(self) -> tuple[tuple[str, str], str | None, tuple[str, str] | None]:
        return (self.source, self.edge, self.target)


@dataclass(slots=True)
class Agent:
    """An agent as planning sees it, plus what it told the server about itself."""

    paw: str
    host: str = ""
    platform: str = "linux"
    executors: tuple[str, ...] = ("sh",)
    privilege: Privilege = Privilege.USER
    group: str = "red"
    username: str = ""
    architecture: str = ""
    pid: int | None = None
    ppid: int | None = None
    server: str = ""
    location: str = ""
    exe_name: str = ""
    contact: str = "native"
    trusted: bool = True
    created_at: float = 0.0
    last_seen: float = 0.0
    # The id of the sandbox the agent runs in (its profile says), None when it runs on the host. A sandboxed
    # operation plans links only for sandboxed agents.
    sandbox: str | None = None


@dataclass(frozen=True, slots=True)
class Result:
    """What an agent reports for a link it ran."""

    link_id: str
    status: LinkStatus
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    pid: int | None = None
    start_ticks: int | None = None
    started_at: float | None = None  # agent clock, just before the process started
    ended_at: float | None = None  # agent clock, when the process was reaped


@dataclass(slots=True)
class Link:
    id: str
    operation_id: str
    paw: str
    ability_id: str
    technique_id: str
    tactic: str
    executor: str
    command: str
    seq: int = 0
    host: str = ""
    ability_name: str = ""
    technique_name: str = ""
    status: LinkStatus = LinkStatus.EXECUTE
    cleanup: bool = False
    cleanup_of: str | None = None  # the link whose cleanup this is
    timeout: int = 60
    planned_at: float = 0.0  # Caldera's `decide`
    delegated_at: float | None = None  # handed to the agent (Caldera's `collect`)
    started_at: float | None = None  # agent-reported start of the process
    finished_at: float | None = None  # result received (Caldera's `finish`)
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    pid: int | None = None
    start_ticks: int | None = None
    skip_reason: str | None = None
    skip_reason_id: SkipReason | None = None
    facts: dict[str, str] = field(default_factory=dict)  # the facts it used, trait → value (Caldera's `used`)
    plaintext_command: str = ""  # before obfuscation; `command` is what the agent runs
    score: int = 0
    visibility: int = 50
    jitter: int = 0  # seconds between planning and the moment the link may be handed out
    available_at: float | None = None  # planned_at + jitter

    @property
    def finished(self) -> bool:
        return self.status.finished

    @property
    def skipped(self) -> bool:
        return self.skip_reason_id is not None

    @property
    def in_flight(self) -> bool:
        return self.status is LinkStatus.EXECUTE

    @property
    def awaiting_approval(self) -> bool:
        return self.status is LinkStatus.PAUSE

    @property
    def used(self) -> frozenset[tuple[str, str]]:
        return frozenset(self.facts.items())

    @property
    def entity_id(self) -> str | None:
        """``"<pid>:<start ticks>"``, the process identity validation joins telemetry on."""
        if self.pid is None or self.start_ticks is None:
            return None
        return f"{self.pid}:{self.start_ticks}"
