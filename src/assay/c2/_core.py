"""The transport-agnostic beacon core: agents, their keys and timing, and the hand-over of work.

Contacts (the native held-request contact, Caldera's ``/beacon``) are thin adapters that decode a request,
call the core, and encode its answer. Operations live in :class:`~assay.emulation.OperationService`; the core
asks it what an agent should run and hands it what came back.

Cost per beacon is what makes a server scale (Caldera scans every agent on every beacon; issue 4):

- agents are found by paw and by key digest in dicts, never by a scan;
- a beacon of a known agent whose profile did not change writes nothing: last-seen times are kept in memory
  and written in batches (:meth:`BeaconCore.flush_seen`);
- the operation service is asked for work only when it may have some: when it said so (``notify``), or when
  an operation is live and this agent has not been asked for a while (a safety net for work that appears
  without a notification). An idle beacon touches no lock another thread holds.

Every change that matters (a new agent, a dispatched command, a result, a task queued for an agent outside
any operation, the server-wide agent defaults, a deleted agent, a kill and whether it reached its agent) is
written through the :class:`Ledger` before the call returns; a restarted core starts from what the ledger
holds.
"""

from __future__ import annotations

import random
import re
import secrets
import string
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from assay.c2._auth import digest, new_secret
from assay.c2._model import (
    MAX_SLEEP,
    MAX_WATCHDOG,
    AgentDefaults,
    AgentSettings,
    AuditEntry,
    Instruction,
    Refused,
    ResultOutcome,
    ResultState,
)
from assay.content import Library
from assay.emulation import (
    Agent,
    Link,
    LinkStatus,
    Operation,
    OperationService,
    OperationState,
    Result,
    agent_globals,
    fill,
)
from assay.errors import C2Error, EmulationError, Source

_PAW_CHARS = re.compile(r"[^\w.\-]")
SWEEP_INTERVAL = 5.0  # seconds between unprompted looks for work per agent while an operation is live
MAX_AGENTS = (
    100_000  # registration refuses more: unauthenticated Caldera registration must not exhaust memory
)
# What a Caldera agent that beacons without the enrolment token gets (``assay serve --caldera-unenrolled``):
# ``untrusted``: registered and listed, but no command and no result is taken until an operator trusts it;
# ``refuse``: a 403, nothing stored; ``trusted``: Caldera's own behaviour (anyone reaching the port runs it).
UNENROLLED_POLICIES = ("untrusted", "refuse", "trusted")
ENROLLED = "enrolled"  # in an agent's stored profile: it presented the enrolment token


class Ledger(Protocol):
    """Where the core writes what it changes (``assay.api`` wires the store; :class:`MemoryLedger`: tests)."""

    def save_agent(self, agent: Agent, key_digest: str | None = None) -> None: ...
    def register_agent(
        self,
        agent: Agent,
        key_digest: str | None,
        settings: AgentSettings | None,
        tasks: Iterable[tuple[str, Instruction]],
        now: float,
    ) -> None: ...
    def agents(self) -> list[Agent]: ...
    def agent_key_digest(self, paw: str) -> str | None: ...
    def link(self, link_id: str) -> Link | None: ...
    def save_links(self, links: Iterable[Link]) -> None: ...
    def save_result(self, result: Result, paw: str, received_at: float, *, accepted: bool) -> None: ...
    def save_settings(self, paw: str, settings: AgentSettings, now: float) -> None: ...
    def settings(self) -> dict[str, AgentSettings]: ...
    def touch(self, last_seen: Mapping[str, float]) -> None: ...
    def audit(self, entries: Iterable[AuditEntry]) -> None: ...
    def open_tasks(self) -> list[tuple[str, Instruction, bool]]: ...
    def deliver_tasks(self, task_ids: Iterable[str], now: float) -> None: ...
    def finish_task(self, result: Result, paw: str, received_at: float) -> None: ...
    def task_owner(self, task_id: str) -> tuple[str, bool] | None: ...
    def delete_agent(self, paw: str) -> bool: ...
    def save_agent_defaults(self, defaults: AgentDefaults, now: float) -> None: ...
    def agent_defaults(self) -> AgentDefaults | None: ...


@dataclass
class MemoryLedger:
    """In-memory :class:`Ledger` and :class:`~assay.emulation.OperationLedger`; tests need no database."""

    agent_rows: dict[str, tuple[Agent, str | None]] = field(default_factory=dict)
    operation_rows: dict[str, OperationState] = field(default_factory=dict)
    link_rows: dict[str, Link] = field(default_factory=dict)
    result_rows: list[tuple[Result, str, float, bool]] = field(default_factory=list)
    settings_rows: dict[str, AgentSettings] = field(default_factory=dict)
    seen_rows: dict[str, float] = field(default_factory=dict)
    audit_rows: list[AuditEntry] = field(default_factory=list)
    # task id -> [paw, instruction, delivered_at, finished_at]
    task_rows: dict[str, list[Any]] = field(default_factory=dict)
    defaults_row: AgentDefaults | None = None
    agent_writes: int = 0

    def save_agent(self, agent: Agent, key_digest: str | None = None) -> None:
        old = self.agent_rows.get(agent.paw)
        self.agent_writes += 1
        self.agent_rows[agent.paw] = (
            replace(agent),
            key_digest if key_digest is not None else (old[1] if old else None),
        )

    def register_agent(
        self,
        agent: Agent,
        key_digest: str | None,
        settings: AgentSettings | None,
        tasks: Iterable[tuple[str, Instruction]],
        now: float,
    ) -> None:
        self.save_agent(agent, key_digest)
        if settings is not None:
            self.save_settings(agent.paw, settings, now)
        for _ability, task in tasks:
            self.task_rows[task.id] = [agent.paw, task, None, None]

    def agents(self) -> list[Agent]:
        return [replace(a) for a, _ in self.agent_rows.values()]

    def agent_key_digest(self, paw: str) -> str | None:
        row = self.agent_rows.get(paw)
        return row[1] if row else None

    def link(self, link_id: str) -> Link | None:
        return self.link_rows.get(link_id)

    def save_operation(self, op: Operation, links: Iterable[Link] = (), **_facts: object) -> None:
        self.operation_rows[op.id] = op.state
        self.save_links(links)

    def save_links(self, links: Iterable[Link]) -> None:
        for link in links:
            self.link_rows[link.id] = link

    def save_result(
        self,
        result: Result,
        paw: str,
        received_at: float,
        *,
        accepted: bool,
        operation: Operation | None = None,
        links: Iterable[Link] = (),
        **_facts: object,
    ) -> None:
        self.result_rows.append((result, paw, received_at, accepted))
        if operation is not None:
            self.operation_rows[operation.id] = operation.state
        self.save_links(links)

    def save_settings(self, paw: str, settings: AgentSettings, now: float) -> None:
        self.settings_rows[paw] = settings

    def settings(self) -> dict[str, AgentSettings]:
        return dict(self.settings_rows)

    def touch(self, last_seen: Mapping[str, float]) -> None:
        self.seen_rows.update(last_seen)

    def audit(self, entries: Iterable[AuditEntry]) -> None:
        self.audit_rows.extend(entries)

    def open_tasks(self) -> list[tuple[str, Instruction, bool]]:
        return [(r[0], r[1], r[2] is not None) for r in self.task_rows.values() if r[3] is None]

    def deliver_tasks(self, task_ids: Iterable[str], now: float) -> None:
        for task_id in task_ids:
            self.task_rows[task_id][2] = now

    def finish_task(self, result: Result, paw: str, received_at: float) -> None:
        self.result_rows.append((result, paw, received_at, True))
        row = self.task_rows[result.link_id]
        row[2] = row[2] if row[2] is not None else received_at
        row[3] = received_at

    def task_owner(self, task_id: str) -> tuple[str, bool] | None:
        row = self.task_rows.get(task_id)
        return (row[0], row[3] is not None) if row else None

    def delete_agent(self, paw: str) -> bool:
        found = self.agent_rows.pop(paw, None) is not None
        self.settings_rows.pop(paw, None)
        self.task_rows = {k: r for k, r in self.task_rows.items() if r[0] != paw}
        return found

    def save_agent_defaults(self, defaults: AgentDefaults, now: float) -> None:
        self.defaults_row = defaults

    def agent_defaults(self) -> AgentDefaults | None:
        return self.defaults_row


def clean_paw(paw: str | None) -> str:
    """Caldera's rule: characters outside ``[\\w.-]`` are dropped; empty → 6 random lowercase letters."""
    cleaned = _PAW_CHARS.sub("", paw or "")[:64]
    return cleaned or "".join(secrets.choice(string.ascii_lowercase) for _ in range(6))


def check_timing(sleep_min: int, sleep_max: int, watchdog: int, where: str = "") -> None:
    """Reject negative, reversed or absurd timing, naming the field (Caldera sent ``sleep_min -5`` on)."""
    for name, value, top in (
        ("sleep_min", sleep_min, MAX_SLEEP),
        ("sleep_max", sleep_max, MAX_SLEEP),
        ("watchdog", watchdog, MAX_WATCHDOG),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise C2Error(f"must be an integer number of seconds, got {value!r}", Source(field=where + name))
        if not 0 <= value <= top:
            raise C2Error(f"must be between 0 and {top} seconds, got {value}", Source(field=where + name))
    if sleep_min > sleep_max:
        raise C2Error(
            f"sleep_min ({sleep_min}) is greater than sleep_max ({sleep_max})",
            Source(field=where + "sleep_min"),
        )


# Fields a beacon may change on a known agent (Caldera overwrites all but group, origin_link_id, contacts).
_PROFILE_FIELDS = (
    "host",
    "platform",
    "executors",
    "privilege",
    "username",
    "architecture",
    "pid",
    "ppid",
    "server",
    "location",
    "exe_name",
    "contact",
    "sandbox",
)


class BeaconCore:
    """Agents, their keys and timing, and the hand-over of work. Public methods are safe from any thread."""

    def __init__(
        self,
        ledger: Ledger,
        operations: OperationService,
        *,
        clock: Callable[[], float] = time.time,
        defaults: AgentDefaults | None = None,
        on_ready: Callable[[str], None] = lambda paw: None,
        unenrolled: str = "untrusted",
    ) -> None:
        if unenrolled not in UNENROLLED_POLICIES:
            raise C2Error(f"must be one of {', '.join(UNENROLLED_POLICIES)}, got {unenrolled!r}")
        self.unenrolled = unenrolled
        self.ledger = ledger
        self.operations = operations
        self.clock = clock
        # Defaults changed through the API outlive a restart; the configured ones apply until then.
        self.defaults = ledger.agent_defaults() or defaults or AgentDefaults()
        self.on_ready = on_ready  # wakes a held native beacon
        self._lock = threading.RLock()
        self.agents: dict[str, Agent] = {a.paw: a for a in ledger.agents()}
        self.settings: dict[str, AgentSettings] = ledger.settings()
        self._paw_by_key: dict[str, str] = {}
        self._key_of: dict[str, str] = {}  # paw -> digest of its current key (native agents only)
        for paw in self.agents:
            key = ledger.agent_key_digest(paw)
            if key:
                self._paw_by_key[key] = paw
                self._key_of[paw] = key
        # Every known agent may have work left from before a restart: its first beacon looks.
        self._maybe_work: set[str] = set(self.agents)
        self._last_look: dict[str, float] = {}
        self._unsaved_seen: dict[str, float] = {}
        self._tasks: dict[str, list[Instruction]] = {}  # queued agent tasks outside operations (deadman)
        self._task_ids: dict[str, str] = {}  # task id -> paw, for every task without a result
        for paw, task, delivered in ledger.open_tasks():
            if paw not in self.agents:
                continue
            if not delivered:  # queued before a restart: still to hand out, once
                self._tasks.setdefault(paw, []).append(task)
            self._task_ids[task.id] = paw  # delivered before a restart: its result is still welcome

    # -- notifications from the operation service --------------------------------------------------------
    def notify(self, paw: str) -> None:
        """The operation service has new work for ``paw`` (any thread)."""
        self._maybe_work.add(paw)
        self.on_ready(paw)

    def may_have_work(self, paw: str) -> bool:
        """Cheap and lock-free: whether :meth:`beacon` could hand ``paw`` anything now."""
        if paw in self._maybe_work or paw in self._tasks:
            return True
        if not self.operations.operations:
            return False
        return self.clock() - self._last_look.get(paw, 0.0) >= SWEEP_INTERVAL

    # -- agents --------------------------------------------------------------------------------------------
    def _settings_for(self, paw: str) -> AgentSettings:
        found = self.settings.get(paw)
        if found is None:
            d = self.defaults
            found = AgentSettings(d.sleep_min, d.sleep_max, d.watchdog)
        return found

    def _check_capacity(self, paw: str) -> None:
        if paw not in self.agents and len(self.agents) >= MAX_AGENTS:
            raise Refused(
                f"agent limit reached ({MAX_AGENTS}); cannot register another", Source(agent=paw), status=429
            )

    def enrol(self, profile: Agent, *, deadman: bool = False) -> tuple[Agent, str]:
        """(Re-)register a native agent; returns it and a new per-agent key (only its digest is kept)."""
        now = self.clock()
        with self._lock:
            profile.paw = clean_paw(profile.paw)
            self._check_capacity(profile.paw)
            old = self.agents.get(profile.paw)
            profile.created_at = old.created_at if old else now
            profile.last_seen = now
            if old is not None:
                profile.trusted = old.trusted  # re-enrolling does not lift an operator's distrust
            key = new_secret()
            key_digest = digest(key)
            settings = self.settings.get(profile.paw)
            if settings is not None and settings.kill_delivered:  # a kill still pending goes out anew
                settings = replace(settings, kill_delivered=False)
            else:
                settings = None
            tasks = self._deadman_tasks(profile) if deadman else []
            self.ledger.register_agent(profile, key_digest, settings, tasks, now)  # all or nothing
            if settings is not None:
                self.settings[profile.paw] = settings
            self._queue_tasks(profile.paw, tasks)
            stale = self._key_of.get(profile.paw)
            if stale is not None:
                self._paw_by_key.pop(stale, None)  # re-enrolment revokes the previous key
            self.agents[profile.paw] = profile
            self._paw_by_key[key_digest] = profile.paw
            self._key_of[profile.paw] = key_digest
            self._maybe_work.add(profile.paw)
            self.ledger.audit([AuditEntry(now, "enrol", paw=profile.paw, data={"host": profile.host})])
        self.operations.agent_joined(profile)
        return profile, key

    def register(
        self,
        profile: Agent,
        extras: Mapping[str, Any],
        timing: Mapping[str, int],
        present: Collection[str] = _PROFILE_FIELDS,
        enrolled: bool = False,
    ) -> Agent:
        """A Caldera beacon: register an unknown paw, or update a known one.

        ``enrolled``: the beacon carried the enrolment token. A new agent without it is handled by the
        ``unenrolled`` policy; an agent that once presented it must present it on every beacon (a paw is no
        secret); an unenrolled agent that presents it becomes enrolled and trusted.

        A known agent changes only in the fields the beacon carried (a result beacon carries a trimmed
        profile; Caldera, too, leaves absent fields alone). Writes only when something changed. ``extras``
        are Caldera profile fields stored as given; ``timing`` holds ``sleep_min``/``sleep_max``/``watchdog``
        a registration may set (already bounds-checked).
        """
        now = self.clock()
        with self._lock:
            paw = profile.paw
            old = self.agents.get(paw)
            if old is not None and self.is_native(paw):
                raise Refused(
                    "this paw belongs to an enrolled native agent; it beacons with its key only",
                    Source(agent=paw),
                    status=403,
                )
            if old is None:
                if not enrolled and self.unenrolled == "refuse":
                    raise Refused(
                        "an unenrolled Caldera agent is refused: beacon to /enrol/<token>/beacon (Sandcat: "
                        "-server http://HOST:PORT/enrol/<token>) or with 'Authorization: Bearer <token>'",
                        Source(agent=paw),
                        status=403,
                    )
                self._check_capacity(paw)
                profile.created_at = profile.last_seen = now
                profile.contact = profile.contact or "HTTP"
                profile.trusted = enrolled or self.unenrolled == "trusted"
                d = self.defaults
                settings = AgentSettings(
                    int(timing.get("sleep_min", d.sleep_min)),
                    int(timing.get("sleep_max", d.sleep_max)),
                    int(timing.get("watchdog", d.watchdog)),
                    profile={**extras, ENROLLED: enrolled},
                )
                if settings.sleep_min > settings.sleep_max:  # only one of them given: keep them ordered
                    settings = replace(settings, sleep_max=settings.sleep_min)
                tasks = self._deadman_tasks(profile) if extras.get("deadman_enabled") is True else []
                self.ledger.register_agent(profile, None, settings, tasks, now)  # all or nothing
                self.agents[paw] = profile
                self.settings[paw] = settings
                self._queue_tasks(paw, tasks)
                self._maybe_work.add(paw)
                self.ledger.audit(
                    [
                        AuditEntry(
                            now,
                            "register",
                            paw=paw,
                            data={"host": profile.host, ENROLLED: enrolled, "trusted": profile.trusted},
                        )
                    ]
                )
                agent = profile
                joined = True
            else:
                bound = self.enrolled(paw)
                if bound and not enrolled:
                    raise Refused(
                        f"agent {paw} enrolled with the token; a beacon without it is refused",
                        Source(agent=paw),
                        status=403,
                    )
                joined = False
                if enrolled and not bound:  # an unenrolled agent presents the token: enrolled and trusted
                    s = self._settings_for(paw)
                    new = replace(s, profile={**s.profile, ENROLLED: True})
                    old.trusted = True
                    self.ledger.save_settings(paw, new, now)
                    self.settings[paw] = new
                    self.ledger.save_agent(old)
                    self._maybe_work.add(paw)
                    self.ledger.audit([AuditEntry(now, "enrol", paw=paw, data={"host": old.host})])
                    joined = True
                changed = [
                    f for f in _PROFILE_FIELDS if f in present and getattr(old, f) != getattr(profile, f)
                ]
                for name in changed:
                    setattr(old, name, getattr(profile, name))
                old.last_seen = now
                if changed:
                    self.ledger.save_agent(old)
                else:
                    self._unsaved_seen[paw] = now
                agent = old
        if joined:
            self.operations.agent_joined(agent)
        return agent

    def enrolled(self, paw: str) -> bool:
        """Lock-free: whether Caldera agent ``paw`` presented the enrolment token (then it must, always)."""
        s = self.settings.get(paw)
        return s is not None and s.profile.get(ENROLLED) is True

    def is_native(self, paw: str) -> bool:
        """Whether ``paw`` has a per-agent key (enrolled natively): Caldera beacons may not speak for it."""
        return paw in self._key_of

    def unchanged(self, profile: Agent, present: Collection[str] = _PROFILE_FIELDS) -> bool:
        """Lock-free: ``profile`` is a known Caldera agent's, unchanged (then :meth:`seen` suffices)."""
        old = self.agents.get(profile.paw)
        if old is None or profile.paw in self._key_of:
            return False
        return all(getattr(old, f) == getattr(profile, f) for f in _PROFILE_FIELDS if f in present)

    def agent_for_key(self, key: str) -> Agent:
        paw = self._paw_by_key.get(digest(key))
        if paw is None:
            raise C2Error("unknown agent key (enrol again)")
        return self.agents[paw]

    def seen(self, paw: str) -> None:
        """Record a beacon in memory; :meth:`flush_seen` writes the times in one batch."""
        now = self.clock()
        agent = self.agents.get(paw)
        if agent is not None:
            agent.last_seen = now
            self._unsaved_seen[paw] = now

    def flush_seen(self) -> int:
        """Write every last-seen time changed since the previous flush; returns how many."""
        with self._lock:
            batch, self._unsaved_seen = self._unsaved_seen, {}
        if batch:
            try:
                self.ledger.touch(batch)
            except Exception:
                with self._lock:  # keep them for the next flush; the caller logs the error
                    for paw, seen in batch.items():
                        self._unsaved_seen.setdefault(paw, seen)
                raise
        return len(batch)

    def status(self, agent: Agent) -> str:
        """Caldera's ``alive`` / ``dead`` / ``pending kill``."""
        settings = self._settings_for(agent.paw)
        if settings.pending_kill:
            return "dead" if settings.kill_delivered else "pending kill"
        silent = self.clock() - agent.last_seen
        return "dead" if silent > settings.sleep_max + self.defaults.untrusted_timer else "alive"

    def settings_of(self, paw: str) -> AgentSettings:
        return self._settings_for(paw)

    def timing(self, paw: str) -> tuple[int, int]:
        """``(sleep, watchdog)`` for a Caldera reply: sleep drawn in [sleep_min, sleep_max] per beacon."""
        s = self._settings_for(paw)
        if s.pending_kill:
            self.kill_delivered(paw)
            return 3, 1  # Caldera's kill: the agent's watchdog ends its loop at its next check
        return random.randint(s.sleep_min, s.sleep_max), s.watchdog

    def kill_pending(self, paw: str) -> bool:
        return self._settings_for(paw).pending_kill

    def kill_delivered(self, paw: str) -> None:
        """The pending kill is in the reply about to leave: stored once (a restart keeps ``dead``)."""
        if self._settings_for(paw).kill_delivered:
            return  # every later beacon of a killed agent writes nothing
        with self._lock:
            s = self.settings.get(paw)
            if s is None or not s.pending_kill or s.kill_delivered:
                return
            new = replace(s, kill_delivered=True)
            self.ledger.save_settings(paw, new, self.clock())
            self.settings[paw] = new

    def update_agent(self, paw: str, changes: Mapping[str, Any], principal: str | None = None) -> Agent:
        """Caldera's PATCH: ``sleep_min``, ``sleep_max``, ``watchdog``, ``group``, ``trusted``; validated."""
        now = self.clock()
        with self._lock:
            agent = self.agents.get(paw)
            if agent is None:
                raise Refused("no such agent", Source(agent=paw), status=404)
            s = self._settings_for(paw)
            new = replace(
                s,
                sleep_min=changes.get("sleep_min", s.sleep_min),
                sleep_max=changes.get("sleep_max", s.sleep_max),
                watchdog=changes.get("watchdog", s.watchdog),
            )
            check_timing(new.sleep_min, new.sleep_max, new.watchdog)
            new = replace(new, profile=self._directives_patch(agent, new.profile, changes))
            if "group" in changes:
                agent.group = str(changes["group"])
            if "trusted" in changes:
                agent.trusted = bool(changes["trusted"])
                if agent.trusted:
                    self._maybe_work.add(paw)
            self.ledger.save_agent(agent)
            self.ledger.save_settings(paw, new, now)
            self.settings[paw] = new
            entries = [AuditEntry(now, "agent", principal=principal, paw=paw, data={"patch": dict(changes)})]
            if changes.get("trusted") is True:  # an operator lets this agent take commands: an approval
                entries.append(
                    AuditEntry(now, "approval", principal=principal, paw=paw, data={"trusted": True})
                )
            self.ledger.audit(entries)
        if agent.trusted:
            self.operations.agent_joined(agent)  # a changed group may join running operations
        return agent

    @staticmethod
    def _directives_patch(
        agent: Agent, profile: Mapping[str, Any], changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Caldera's ``pending_contact`` and ``executor_change``, kept with the agent's profile fields until
        a reply carries them. Removing an executor takes it off the agent at once (as Caldera does), so
        planning stops choosing it."""
        out = dict(profile)
        if "pending_contact" in changes:
            out["pending_contact"] = str(changes["pending_contact"])
        change = changes.get("executor_change")
        if change is not None:
            change = dict(change)
            if change.get("executor") not in agent.executors:
                raise Refused(
                    f"agent has no executor {change.get('executor')!r} (it has {list(agent.executors)})",
                    Source(agent=agent.paw, field="executor_change.executor"),
                    status=422,
                )
            if change.get("action") == "remove":
                agent.executors = tuple(e for e in agent.executors if e != change["executor"])
            out["executor_change"] = change
        return out

    def directives(self, paw: str) -> dict[str, Any]:
        """What the next Caldera reply carries besides instructions: ``new_contact`` while the agent's
        ``pending_contact`` differs from its contact, and a pending ``executor_change`` (then cleared: it is
        sent once, as Caldera's ``assign_pending_executor_change``)."""
        agent = self.agents.get(paw)
        s = self.settings.get(paw)
        if agent is None or s is None or not s.profile:
            return {}
        out: dict[str, Any] = {}
        pending = s.profile.get("pending_contact")
        if pending and pending != agent.contact:
            out["new_contact"] = pending
        if s.profile.get("executor_change"):
            with self._lock:
                s = self._settings_for(paw)
                change = s.profile.get("executor_change")
                if change:
                    out["executor_change"] = change
                    new = replace(s, profile={k: v for k, v in s.profile.items() if k != "executor_change"})
                    self.ledger.save_settings(paw, new, self.clock())
                    self.settings[paw] = new
        return out

    def has_directives(self, paw: str) -> bool:
        s = self.settings.get(paw)
        return bool(
            s and s.profile and (s.profile.get("pending_contact") or s.profile.get("executor_change"))
        )

    def kill(self, paw: str, principal: str | None = None) -> Agent:
        """Caldera's kill: the agent stops at its next beacon (native: told to stop; Caldera: watchdog 1)."""
        now = self.clock()
        with self._lock:
            agent = self.agents.get(paw)
            if agent is None:
                raise Refused("no such agent", Source(agent=paw), status=404)
            new = replace(
                self._settings_for(paw),
                pending_kill=True,
                kill_delivered=False,
                sleep_min=3,
                sleep_max=3,
                watchdog=1,
            )
            self.ledger.save_settings(paw, new, now)
            self.settings[paw] = new
            self.ledger.audit([AuditEntry(now, "agent", principal=principal, paw=paw, data={"kill": True})])
        self.on_ready(paw)  # a held native beacon answers at once
        return agent

    def delete_agent(self, paw: str, principal: str | None = None) -> Agent:
        """Caldera's ``DELETE /api/v2/agents/{paw}``: the agent, its settings, key and queued tasks go.

        Its links, results and audit rows stay (they record what ran). An agent that beacons again afterwards
        registers anew (a Caldera agent at its next beacon; a native one enrols again, its key now unknown).
        """
        now = self.clock()
        with self._lock:
            agent = self.agents.get(paw)
            if agent is None:
                raise Refused("no such agent", Source(agent=paw), status=404)
            self.ledger.delete_agent(paw)
            del self.agents[paw]
            self.settings.pop(paw, None)
            key = self._key_of.pop(paw, None)
            if key is not None:
                self._paw_by_key.pop(key, None)
            self._tasks.pop(paw, None)
            self._task_ids = {t: p for t, p in self._task_ids.items() if p != paw}
            self._maybe_work.discard(paw)
            self._last_look.pop(paw, None)
            self._unsaved_seen.pop(paw, None)
            self.ledger.audit([AuditEntry(now, "agent", principal=principal, paw=paw, data={"delete": True})])
        self.on_ready(paw)  # a held native beacon answers at once (and learns its key is gone)
        return agent

    def update_defaults(self, changes: Mapping[str, Any], principal: str | None = None) -> AgentDefaults:
        """Caldera's ``PATCH /api/v2/config/agents``, validated and stored before it applies."""
        now = self.clock()
        with self._lock:
            d = self.defaults
            new = replace(
                d,
                sleep_min=changes.get("sleep_min", d.sleep_min),
                sleep_max=changes.get("sleep_max", d.sleep_max),
                watchdog=changes.get("watchdog", d.watchdog),
                untrusted_timer=changes.get("untrusted_timer", d.untrusted_timer),
                deadman_abilities=tuple(changes.get("deadman_abilities", d.deadman_abilities)),
            )
            check_timing(new.sleep_min, new.sleep_max, new.watchdog)
            if not 0 <= new.untrusted_timer <= MAX_WATCHDOG:
                raise C2Error(
                    f"must be between 0 and {MAX_WATCHDOG} seconds, got {new.untrusted_timer}",
                    Source(field="untrusted_timer"),
                )
            self.ledger.save_agent_defaults(new, now)
            self.defaults = new
            entry = AuditEntry(now, "config", principal=principal, data={"agents": dict(changes)})
            self.ledger.audit([entry])
        return new

    # -- agent tasks outside operations (Caldera's deadman abilities) ---------------------------------------
    def _deadman_tasks(self, agent: Agent) -> list[tuple[str, Instruction]]:
        """The deadman abilities for ``agent`` as ``(ability_id, task)``; the caller stores them with the
        agent (:meth:`Ledger.register_agent`) before they can be handed out."""
        library: Library = self.operations.library
        tasks: list[tuple[str, Instruction]] = []
        for ability_id in self.defaults.deadman_abilities:
            ability = library.abilities.get(ability_id)
            if ability is None:
                continue
            executors = {e.name: e for e in ability.executors_for(agent.platform)}
            chosen = next((executors[n] for n in agent.executors if n in executors), None)
            if chosen is None:
                continue
            command, _missing = fill(chosen.command, agent_globals(agent))
            task = Instruction(
                id=f"deadman-{new_secret()[:16]}",
                operation_id="",
                executor=chosen.name,
                command=command,
                timeout=chosen.timeout,
                cleanup=False,
                payloads=tuple(chosen.payloads),
                deadman=True,
            )
            tasks.append((ability_id, task))
        return tasks

    def _queue_tasks(self, paw: str, tasks: Iterable[tuple[str, Instruction]]) -> None:
        """Queue stored tasks in memory, to be handed out at ``paw``'s next beacon."""
        for _ability_id, task in tasks:
            self._tasks.setdefault(paw, []).append(task)
            self._task_ids[task.id] = paw

    # -- work ----------------------------------------------------------------------------------------------
    def beacon(self, paw: str) -> list[Instruction]:
        """Hand out everything waiting for ``paw``, exactly once (delivery is recorded before returning).

        An untrusted agent, or one being killed, gets nothing.
        """
        now = self.clock()
        agent = self.agents.get(paw)
        if agent is None:
            raise Refused("unknown agent", Source(agent=paw), status=404)
        agent.last_seen = now
        self._unsaved_seen[paw] = now
        self._maybe_work.discard(paw)  # before looking, so a notification in between is not lost
        self._last_look[paw] = now
        if not agent.trusted or self._settings_for(paw).pending_kill:
            return []
        with self._lock:
            tasks = self._tasks.pop(paw, [])
            if tasks:
                try:  # recorded as delivered before they leave: after a restart they are not handed out again
                    self.ledger.deliver_tasks([t.id for t in tasks], now)
                except Exception:
                    self._tasks[paw] = [*tasks, *self._tasks.get(paw, [])]  # still queued; the caller reports
                    raise
        links = self.operations.take(paw, now)
        out = [*tasks, *(self._instruction(lk, agent) for lk in links)]
        handed = {lk.id: lk.delegated_at or now for lk in links}  # the time recorded on the link
        if out:
            self.ledger.audit(
                AuditEntry(
                    handed.get(i.id, now),
                    "dispatch",
                    principal=f"agent:{paw}",
                    operation_id=i.operation_id or None,
                    link_id=i.id,
                    paw=paw,
                    data={
                        "executor": i.executor,
                        "command": i.command,
                        "cleanup": i.cleanup,
                        "deadman": i.deadman,
                        "contact": agent.contact,
                    },
                )
                for i in out
            )
        return out

    def _instruction(self, link: Link, agent: Agent) -> Instruction:
        payloads: tuple[str, ...] = ()
        uploads: tuple[str, ...] = ()
        delete_payload = True
        ability = self.operations.library.abilities.get(link.ability_id)
        if ability is not None and not link.cleanup:  # Caldera: cleanup links carry no payloads
            delete_payload = ability.delete_payload
            for executor in ability.executors_for(agent.platform):
                if executor.name == link.executor:
                    payloads, uploads = tuple(executor.payloads), tuple(executor.uploads)
                    break
        return Instruction(
            link.id,
            link.operation_id,
            link.executor,
            link.command,
            link.timeout,
            link.cleanup,
            payloads=payloads,
            uploads=uploads,
            delete_payload=delete_payload,
        )

    def submit(self, paw: str, results: Sequence[Result]) -> list[ResultOutcome]:
        """Record results (the next links are planned at once); a re-sent result is a duplicate, no error.

        An unknown or untrusted agent (unenrolled, or distrusted by an operator) writes no result at all:
        whoever beacons with a paw it does not own must not complete that paw's links."""
        now = self.clock()
        agent = self.agents.get(paw)
        if agent is None or not agent.trusted:
            why = "unknown agent" if agent is None else f"agent {paw} is not trusted: its results are refused"
            return [ResultOutcome(r.link_id, ResultState.REJECTED, why) for r in results]
        outcomes: list[ResultOutcome] = []
        for result in results:
            with self._lock:
                ours = self._task_ids.get(result.link_id) == paw
                if ours:
                    del self._task_ids[result.link_id]  # under the lock: a concurrent re-send is a duplicate
            if ours:
                try:
                    self.ledger.finish_task(result, paw, now)
                except Exception:
                    with self._lock:  # not recorded: the agent's re-send is still welcome
                        self._task_ids[result.link_id] = paw
                    raise
                outcomes.append(ResultOutcome(result.link_id, ResultState.ACCEPTED))
                continue
            try:
                accepted = self.operations.submit(paw, result, now)
                state = ResultState.ACCEPTED if accepted else ResultState.DUPLICATE
                outcomes.append(ResultOutcome(result.link_id, state))
            except EmulationError as exc:
                outcomes.append(self._late_result(paw, result, now, exc))
        return outcomes

    def _late_result(self, paw: str, result: Result, now: float, exc: EmulationError) -> ResultOutcome:
        """A result for a link no live operation holds: its operation ended (or the server restarted) while
        the agent ran it, or the agent is re-sending after a reconnect. The stored link decides."""
        stored = self.ledger.link(result.link_id)
        if stored is None:
            task = self.ledger.task_owner(result.link_id)
            if task is not None and task == (paw, True):  # a task result sent again (after a reconnect)
                return ResultOutcome(result.link_id, ResultState.DUPLICATE)
        if stored is None or stored.paw != paw:
            return ResultOutcome(result.link_id, ResultState.REJECTED, str(exc))
        if stored.status is not LinkStatus.EXECUTE:
            return ResultOutcome(result.link_id, ResultState.DUPLICATE)
        # The agent did run it: keep what it reports rather than lose it (the operation does not resume
        # because of it; it only completes the record).
        stored.status = result.status
        stored.exit_code = result.exit_code
        stored.stdout, stored.stderr = result.stdout, result.stderr
        stored.pid, stored.start_ticks = result.pid, result.start_ticks
        stored.started_at = result.started_at
        stored.finished_at = now
        stored.delegated_at = stored.delegated_at or now
        self.ledger.save_links([stored])
        self.ledger.save_result(result, paw, now, accepted=True)
        return ResultOutcome(
            result.link_id, ResultState.ACCEPTED, "recorded on a link of an operation not running"
        )

    # -- operations (the agents the core knows join them) ----------------------------------------------------
    def start_operation(
        self,
        *,
        name: str,
        adversary_id: str,
        planner_id: str = "atomic",
        group: str = "",
        auto_close: bool = True,
    ) -> Operation:
        with self._lock:
            agents = list(self.agents.values())
        return self.operations.start_operation(
            name=name,
            adversary_id=adversary_id,
            agents=agents,
            planner_id=planner_id,
            group=group,
            auto_close=auto_close,
        )
