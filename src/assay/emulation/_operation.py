"""The operation state machine, driven by events (a result, an agent, a user's request, a deadline).

Every method takes the current time and returns the links it created or changed, so that the caller (the
:class:`~assay.emulation.OperationService`) can persist them and hand new ones to agents at once. The next
link is planned inside the result's own call: there is no polling interval anywhere. Time-based rules
(a link's jitter, a link whose result never came, a cleanup that overruns its budget) are deadlines: the
service sleeps until :meth:`Operation.next_deadline` and then calls :meth:`Operation.on_time`.

All decisions derive from the links, facts and the few fields recorded so far, so an operation rebuilt from
storage continues where it was.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from assay.content import (
    BASIC_SOURCE_ID,
    DEFAULT_OBJECTIVE,
    Ability,
    Adjustment,
    Adversary,
    FactRule,
    Objective,
    Safety,
)
from assay.emulation._facts import FactBase, merge_all
from assay.emulation._learning import learn
from assay.emulation._linking import Run, Skip, cleanup_command, generate, prerequisite_failure
from assay.emulation._model import (
    Agent,
    Fact,
    Link,
    LinkStatus,
    OperationState,
    OriginType,
    Relationship,
    Result,
    SkipReason,
)
from assay.emulation._obfuscators import obfuscator
from assay.emulation._parsers import parse
from assay.emulation._planning import Planner
from assay.errors import EmulationError, Source

IdFactory = Callable[[], str]
CLEANUP_BASE_BUDGET = 180.0  # Caldera's cleanup allowance: 180 s + 30 s per cleanup link
CLEANUP_PER_LINK = 30.0
_SETTABLE = frozenset({"running", "paused", "run_one_link", "finished", "cleanup"})


@dataclass(frozen=True, slots=True)
class Change:
    """What one result changed: the link, the facts learned or updated, the new relationships."""

    link: Link
    facts: list[Fact]
    relationships: list[Relationship]


@dataclass(slots=True)
class Operation:
    id: str
    name: str
    adversary: Adversary
    planner: Planner
    abilities: Mapping[str, Ability] = field(default_factory=dict)
    group: str = ""
    auto_close: bool = True
    state: OperationState = OperationState.RUNNING
    created_at: float = 0.0
    finished_at: float | None = None
    agents: dict[str, Agent] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)
    knowledge: FactBase = field(default_factory=FactBase)
    close_requested: bool = False
    autonomous: bool = True
    obfuscator: str = "plain-text"
    jitter: tuple[int, int] = (0, 0)
    visibility: int = 50
    max_safety: Safety = Safety.SAFE
    # Runs in the sandbox (`--sandbox`): only on sandboxed agents, and then abilities of every class may run
    # (the sandbox contains them); on the host, `max_safety` decides and destructive never runs.
    sandbox: bool = False
    source_id: str = BASIC_SOURCE_ID
    rules: tuple[FactRule, ...] = ()
    adjustments: tuple[Adjustment, ...] = ()
    link_grace: float = 30.0  # seconds past a link's timeout before the server stops waiting for its result
    collect_timeout: float = 300.0  # seconds a ready link waits for its agent to collect it
    cleanup_deadline: float | None = None
    planner_state: dict[str, Any] = field(default_factory=dict)
    # Caldera's objective: the operation closes (cleanup, then finished) as soon as all its goals are met.
    objective: Objective = DEFAULT_OBJECTIVE
    # A planner definition's stopping conditions: (trait, value) facts that close the operation too.
    stopping_conditions: tuple[tuple[str, str], ...] = ()
    use_learning_parsers: bool = True
    end_reason: str = ""  # why planning stopped early: "objective met: ...", "stopping condition: ..."
    rng: random.Random = field(default_factory=random.Random, repr=False)
    # Not persisted: after a server restart, links in flight get a fresh grace from the restart time, so
    # the time the server was down never counts against an agent.
    resumed_at: float = 0.0
    # Not persisted: links whose agent was told they are ready (a restart tells again, which is harmless).
    announced: set[str] = field(default_factory=set, repr=False)
    # Derived from `links` as they are appended: planning does not rescan every link for every ability.
    _planned: Counter[tuple[str, str, frozenset[tuple[str, str]]]] = field(
        default_factory=Counter, repr=False
    )
    _planned_pairs: set[tuple[str, str]] = field(default_factory=set, repr=False)
    _skipped_pairs: set[tuple[str, str]] = field(default_factory=set, repr=False)
    _indexed: int = field(default=0, repr=False)
    _indexed_list: int = field(default=0, repr=False)
    _cleanups: dict[tuple[str, str], str] = field(
        default_factory=dict, repr=False
    )  # (link, template) → command

    # -- queries -------------------------------------------------------------------------------------------
    def link(self, link_id: str) -> Link | None:
        return next((lk for lk in self.links if lk.id == link_id), None)

    @property
    def facts(self) -> list[Fact]:
        return list(self.knowledge.facts.values())

    @property
    def relationships(self) -> list[Relationship]:
        return list(self.knowledge.relationships.values())

    def busy(self, paw: str | None = None) -> bool:
        """A link of this agent (or of any agent) is queued, running, or waiting for approval."""
        return any(
            (lk.in_flight or lk.awaiting_approval) and (paw is None or lk.paw == paw) for lk in self.links
        )

    def in_flight(self, paw: str) -> bool:
        return any(lk.paw == paw and lk.in_flight for lk in self.links)

    def planning_agents(self) -> list[str]:
        return [paw for paw, agent in self.agents.items() if agent.trusted]

    def _index(self) -> None:
        """Bring the planning index up to date with the links appended since the last call. Links are only
        appended, and what is indexed (agent, ability, used facts, runnable or not) never changes."""
        if self._indexed > len(self.links) or self._indexed_list != id(self.links):  # a new list: start again
            self._indexed_list = id(self.links)
            self._planned.clear()
            self._planned_pairs.clear()
            self._skipped_pairs.clear()
            self._indexed = 0
        for lk in self.links[self._indexed :]:
            if lk.cleanup:
                continue
            if lk.executor:
                self._planned[(lk.paw, lk.ability_id, lk.used)] += 1
                self._planned_pairs.add((lk.paw, lk.ability_id))
            else:
                self._skipped_pairs.add((lk.paw, lk.ability_id))
        self._indexed = len(self.links)

    def planned_count(self, paw: str, ability_id: str, used: frozenset[tuple[str, str]]) -> int:
        """Links made for this agent, ability and facts (skips that never became runnable excluded)."""
        self._index()
        return self._planned[(paw, ability_id, used)]

    def has_planned(self, paw: str, ability_id: str) -> bool:
        self._index()
        return (paw, ability_id) in self._planned_pairs

    def skip_recorded(self, paw: str, ability_id: str) -> bool:
        self._index()
        return (paw, ability_id) in self._skipped_pairs

    def singleton_taken(self, ability_id: str) -> bool:
        """A singleton runs once per operation across agents: it is taken once it succeeded or is running."""
        return any(
            lk.ability_id == ability_id
            and not lk.cleanup
            and (lk.status is LinkStatus.SUCCESS or lk.in_flight or lk.awaiting_approval)
            for lk in self.links
        )

    def generate(self, agent: Agent, ability_id: str) -> list[Run] | Skip:
        return generate(self, agent, ability_id)

    def undelivered(self, paw: str, now: float | None = None) -> list[Link]:
        """Links agent ``paw`` may collect now, in plan order (none while paused; one in run_one_link)."""
        if self.state not in (OperationState.RUNNING, OperationState.RUN_ONE_LINK, OperationState.CLEANUP):
            return []
        ready = [
            lk
            for lk in self.links
            if lk.paw == paw
            and lk.in_flight
            and lk.delegated_at is None
            and (now is None or lk.available_at is None or lk.available_at <= now)
        ]
        if self.state is OperationState.RUN_ONE_LINK:
            if any(lk.in_flight and lk.delegated_at is not None for lk in self.links):
                return []
            return ready[:1]
        return ready

    def announce(self, now: float) -> set[str]:
        """Agents with links ready now that they were not told about; they count as told from now on."""
        paws: set[str] = set()
        for paw in {lk.paw for lk in self.links if lk.in_flight and lk.delegated_at is None}:
            for lk in self.undelivered(paw, now):
                if lk.id not in self.announced:
                    self.announced.add(lk.id)
                    paws.add(paw)
        return paws

    @property
    def done(self) -> bool:
        return self.state in (OperationState.FINISHED, OperationState.OUT_OF_TIME)

    def accepts(self, agent: Agent) -> bool:
        """Caldera: an agent joins every running operation whose group matches (or is empty)."""
        return not self.done and self.state is not OperationState.CLEANUP and self.group in ("", agent.group)

    # -- events --------------------------------------------------------------------------------------------
    def add_agent(self, agent: Agent) -> None:
        self.agents[agent.paw] = agent

    def add_facts(
        self, facts: Iterable[Fact], relationships: Iterable[Relationship] = ()
    ) -> tuple[list[Fact], list[Relationship]]:
        return merge_all(self.knowledge, facts, relationships)

    def request_close(self) -> None:
        """Stop planning new abilities; cleanup still runs (Caldera's `finished` request)."""
        self.close_requested = True

    def set_state(self, wanted: str, now: float) -> list[Link]:
        """A user's state change (PATCH). Returns links it changed (undelivered links get a fresh clock)."""
        if wanted not in _SETTABLE:
            raise EmulationError(
                f"state must be one of {', '.join(sorted(_SETTABLE))}, got {wanted!r}", Source(field="state")
            )
        if self.done:
            raise EmulationError(
                f"operation is {self.state.value}; its state cannot change", Source(field="state")
            )
        if wanted in ("finished", "cleanup"):
            self.request_close()
            return []
        if self.state is OperationState.CLEANUP or self.close_requested:
            raise EmulationError("operation is cleaning up; it can only finish", Source(field="state"))
        self.state = OperationState(wanted)
        changed: list[Link] = []
        if self.state is not OperationState.PAUSED:
            for lk in self.links:  # a pause does not count against an agent's time to collect a link
                if lk.in_flight and lk.delegated_at is None and (lk.available_at or 0.0) < now:
                    lk.available_at = now
                    changed.append(lk)
        return changed

    def set_obfuscator(self, name: str) -> None:
        self.obfuscator = obfuscator(name).name

    def mark_delivered(self, link: Link, now: float) -> None:
        link.delegated_at = now

    def on_result(self, result: Result, now: float) -> Change | None:
        """Record a result; ``None`` if this link is not waiting for one (a re-sent or late result)."""
        link = self.link(result.link_id)
        if link is None:
            raise EmulationError(
                "result for a link this operation does not have", Source(link=result.link_id)
            )
        if link.status is not LinkStatus.EXECUTE:
            return None
        link.status = result.status
        link.exit_code = result.exit_code
        link.stdout = result.stdout
        link.stderr = result.stderr
        link.pid = result.pid
        link.start_ticks = result.start_ticks
        link.started_at = result.started_at
        link.finished_at = now
        if link.delegated_at is None:
            link.delegated_at = now
        ability = self.abilities.get(link.ability_id)
        facts: list[Fact] = []
        relationships: list[Relationship] = []
        # ART dependencies end this way (with_prerequisites), and so may any ability that finds the host
        # lacks what the technique needs (a device): not run is not the same as failed.
        if ability is not None and not link.cleanup:
            reason = prerequisite_failure(result.exit_code, result.stderr)
            if reason:
                link.status = LinkStatus.DISCARD
                link.skip_reason = reason
                link.skip_reason_id = SkipReason.OTHER
        if ability is not None and link.status is LinkStatus.SUCCESS and not link.cleanup:
            facts, relationships = self._learn(link, ability, now)
        if self.state is OperationState.RUN_ONE_LINK and not link.cleanup:
            self.state = OperationState.PAUSED
        return Change(link, facts, relationships)

    def _learn(self, link: Link, ability: Ability, now: float) -> tuple[list[Fact], list[Relationship]]:
        executor = next((e for e in ability.executors if e.name == link.executor), None)
        if executor is None:
            return [], []
        if not executor.parsers:  # Caldera's learning service: facts from any output, when no parser is set
            return self._learn_any(link, now) if self.use_learning_parsers else ([], [])
        found, notes = parse(executor.parsers, link.stdout, link.facts, origin=link.id)
        if notes:
            link.stderr += "".join(f"\n[assay] {note}" for note in notes)
        learned: list[Fact] = []
        for rel in found:
            for end in (rel.source, rel.target):
                if end is not None:
                    learned.append(
                        Fact(
                            end[0],
                            end[1],
                            1,
                            OriginType.LEARNED,
                            source=self.id,
                            links=[link.id],
                            collected_by=[link.paw],
                            technique_id=link.technique_id,
                            created_at=now,
                        )
                    )
        keep = [r for r in found if r.edge is not None]  # Caldera stores relationships that have an edge
        return self.add_facts(learned, keep)

    def _learn_any(self, link: Link, now: float) -> tuple[list[Fact], list[Relationship]]:
        known = self.knowledge.facts
        learned = [
            Fact(
                trait,
                value,
                1,
                OriginType.LEARNED,
                source=self.id,
                links=[link.id],
                collected_by=[link.paw],
                technique_id=link.technique_id,
                created_at=now,
            )
            for trait, value in learn(link.stdout)
            if (trait, value) not in known
        ]
        return self.add_facts(learned, [])

    def review(
        self, link_id: str, now: float, *, status: int | None = None, command: str | None = None
    ) -> Link:
        """A user's change to an unfinished link (PATCH): approve (-3), discard (-2), or edit its command."""
        link = self.link(link_id)
        if link is None:
            raise EmulationError(f"no link {link_id!r} in operation {self.id}", Source(link=link_id))
        if link.finished:
            raise EmulationError("link is finished; it cannot change", Source(link=link_id, field="status"))
        if command is not None:
            if link.delegated_at is not None:
                raise EmulationError(
                    "link was already handed to its agent; its command cannot change",
                    Source(link=link_id, field="command"),
                )
            link.plaintext_command = command
            link.command = obfuscator(self.obfuscator).apply(command, link.executor)
        if status is not None:
            if status == LinkStatus.EXECUTE:
                if link.status is LinkStatus.PAUSE:
                    link.status = LinkStatus.EXECUTE
                    link.available_at = now
            elif status == LinkStatus.DISCARD:
                if link.delegated_at is not None:
                    raise EmulationError(
                        "link was already handed to its agent; it cannot be discarded",
                        Source(link=link_id, field="status"),
                    )
                link.status = LinkStatus.DISCARD
                link.skip_reason = "discarded by the user"
                link.skip_reason_id = SkipReason.LINK_IGNORED
                link.finished_at = now
            else:
                raise EmulationError(
                    f"status may be set to -3 (run) or -2 (discard), got {status}",
                    Source(link=link_id, field="status"),
                )
        return link

    def add_manual_link(
        self,
        paw: str,
        executor: str,
        command: str,
        now: float,
        new_id: IdFactory,
        ability_id: str | None = None,
    ) -> Link:
        """A link the user wrote (Caldera's ``POST …/potential-links``); approved at once if autonomous."""
        if paw not in self.agents:
            raise EmulationError(f"agent {paw} is not in operation {self.id}", Source(agent=paw, field="paw"))
        if self.done or self.state is OperationState.CLEANUP or self.close_requested:
            raise EmulationError(
                f"operation is {self.state.value}; it takes no new links", Source(field="state")
            )
        if not command.strip():
            raise EmulationError("a link needs a command", Source(field="executor.command"))
        ability = self.abilities.get(ability_id) if ability_id else None
        return self._new_link(
            paw,
            now,
            new_id,
            ability_id=ability.id if ability else (ability_id or "manual"),
            ability_name=ability.name if ability else "manual command",
            technique_id=ability.technique_id if ability else "",
            technique_name=ability.technique_name if ability else "",
            tactic=ability.tactic if ability else "",
            executor=executor,
            command=obfuscator(self.obfuscator).apply(command, executor),
            plaintext_command=command,
            timeout=60,
            status=LinkStatus.EXECUTE if self.autonomous else LinkStatus.PAUSE,
        )

    def advance(self, now: float, new_id: IdFactory) -> list[Link]:
        """Plan what can run now and move the state machine on; returns the links it created or changed."""
        touched: list[Link] = []
        if self.done:
            return touched
        if not self.close_requested and self.state is not OperationState.CLEANUP:
            reason = self.goal_reached()
            if reason:
                self.end_reason = reason
                self.request_close()
        if self.close_requested and self.state is not OperationState.CLEANUP:
            touched.extend(self._abandon_pending(now))
            touched.extend(self._begin_cleanup(now))
        if self.state in (OperationState.RUNNING, OperationState.RUN_ONE_LINK):
            touched.extend(self._plan(now, new_id))
            # The planner's last pass had no run (see _plan), so with nothing busy there is nothing left.
            if not self.busy() and self.agents and self.auto_close:
                touched.extend(self._record_unrun(now, new_id))
                touched.extend(self._begin_cleanup(now))
        if self.state is OperationState.CLEANUP:
            touched.extend(self._plan_cleanup(now, new_id))
            if not any(lk.in_flight for lk in self.links):
                self.state = OperationState.FINISHED
                self.finished_at = now
        return touched

    def goal_reached(self) -> str:
        """Why the operation should stop planning now ('' while it should go on): its objective's goals are
        all met, or one of the planner's stopping conditions holds."""
        pairs = [(f.trait, f.value) for f in self.knowledge.facts.values()]
        if self.objective.met(pairs):
            return f"objective met: {self.objective.name}"
        present = set(pairs)
        for trait, value in self.stopping_conditions:
            if (trait, value) in present:
                return f"stopping condition met: {trait} = {value}"
        return ""

    # -- time ----------------------------------------------------------------------------------------------
    def _result_deadline(self, link: Link) -> float:
        assert link.delegated_at is not None
        return max(link.delegated_at + link.timeout, self.resumed_at) + self.link_grace

    def next_deadline(self, now: float) -> float | None:
        """When :meth:`on_time` next has something to do (None: nothing is timed)."""
        times: list[float] = []
        deliverable = self.state in (
            OperationState.RUNNING,
            OperationState.RUN_ONE_LINK,
            OperationState.CLEANUP,
        )
        for lk in self.links:
            if not lk.in_flight:
                continue
            if lk.delegated_at is not None:
                times.append(self._result_deadline(lk))
            elif deliverable:
                ready = lk.available_at if lk.available_at is not None else lk.planned_at
                if lk.id not in self.announced:
                    times.append(ready)  # even if past: its agent has not been told yet
                times.append(max(ready, self.resumed_at) + self.collect_timeout)
        if self.cleanup_deadline is not None and self.state is OperationState.CLEANUP:
            times.append(self.cleanup_deadline)
        return min(times) if times else None

    def on_time(self, now: float) -> tuple[list[Link], set[str]]:
        """Apply every deadline that has passed; returns changed links and agents with newly ready links."""
        changed: list[Link] = []
        ready: set[str] = set()
        deliverable = self.state in (
            OperationState.RUNNING,
            OperationState.RUN_ONE_LINK,
            OperationState.CLEANUP,
        )
        for lk in self.links:
            if not lk.in_flight:
                continue
            if lk.delegated_at is not None:
                if now >= self._result_deadline(lk):
                    lk.status = LinkStatus.TIMEOUT
                    lk.finished_at = now
                    lk.stderr += (
                        f"[assay] no result from agent {lk.paw} within the link's timeout ({lk.timeout} s) "
                        f"and {self.link_grace:.0f} s of grace; the server stopped waiting"
                    )
                    changed.append(lk)
            elif deliverable:
                ready_at = lk.available_at if lk.available_at is not None else lk.planned_at
                if now >= max(ready_at, self.resumed_at) + self.collect_timeout:
                    lk.status = LinkStatus.UNTRUSTED
                    lk.finished_at = now
                    lk.skip_reason = (
                        f"agent {lk.paw} did not collect the link within {self.collect_timeout:.0f} s"
                    )
                    lk.skip_reason_id = SkipReason.UNTRUSTED
                    changed.append(lk)
                elif ready_at <= now and lk.id not in self.announced:
                    ready.add(lk.paw)
                    self.announced.add(lk.id)
        if (
            self.state is OperationState.CLEANUP
            and self.cleanup_deadline is not None
            and now >= self.cleanup_deadline
        ):
            for lk in self.links:
                if lk.in_flight:
                    lk.status = LinkStatus.TIMEOUT
                    lk.finished_at = now
                    lk.stderr += "[assay] the operation's cleanup ran out of time"
                    changed.append(lk)
            self.state = OperationState.OUT_OF_TIME
            self.finished_at = now
        return changed, ready

    # -- internals -----------------------------------------------------------------------------------------
    def _new_link(self, paw: str, now: float, new_id: IdFactory, **values: Any) -> Link:
        agent = self.agents[paw]
        link_id = new_id()
        for key in ("command", "plaintext_command"):
            if isinstance(values.get(key), str):
                values[key] = values[key].replace("#{origin_link_id}", link_id)
        jitter = values.pop("jitter", 0)
        link = Link(
            id=link_id,
            operation_id=self.id,
            paw=paw,
            host=agent.host,
            seq=len(self.links),
            planned_at=now,
            jitter=jitter,
            available_at=now + jitter,
            **values,
        )
        self.links.append(link)
        return link

    def _jitter(self) -> int:
        low, high = self.jitter
        return self.rng.randint(low, high) if high > 0 else 0

    def _plan(self, now: float, new_id: IdFactory) -> list[Link]:
        """Ask the planner until it hands out something that will run (links above the visibility threshold
        are made and ignored at once), or has no run left."""
        created: list[Link] = []
        while True:
            decisions = self.planner.next_decisions(self)
            made = [
                self._run_link(d, now, new_id) if isinstance(d, Run) else self._skip_link(d, now, new_id)
                for d in decisions
            ]
            created.extend(made)
            has_run = any(isinstance(d, Run) for d in decisions)
            if not has_run or any(lk.in_flight or lk.awaiting_approval for lk in made):
                return created

    def _run_link(self, run: Run, now: float, new_id: IdFactory) -> Link:
        ability = run.ability
        if run.visibility > self.visibility:
            status = LinkStatus.HIGH_VIZ
        else:
            status = LinkStatus.EXECUTE if self.autonomous else LinkStatus.PAUSE
        link = self._new_link(
            run.paw,
            now,
            new_id,
            ability_id=ability.id,
            ability_name=ability.name,
            technique_id=ability.technique_id,
            technique_name=ability.technique_name,
            tactic=ability.tactic,
            executor=run.executor.name,
            command=run.command,
            plaintext_command=run.command,
            timeout=run.executor.timeout,
            facts=dict(run.facts),
            score=run.score,
            visibility=run.visibility,
            status=status,
            jitter=self._jitter(),
        )
        link.command = obfuscator(self.obfuscator).apply(link.plaintext_command, link.executor)
        if status is LinkStatus.HIGH_VIZ:
            link.finished_at = now
            link.skip_reason = f"visibility {run.visibility} is above the operation's {self.visibility}"
            link.skip_reason_id = SkipReason.LINK_IGNORED
        return link

    def _skip_link(self, skip: Skip, now: float, new_id: IdFactory) -> Link:
        ability = skip.ability
        return self._new_link(
            skip.paw,
            now,
            new_id,
            ability_id=skip.ability_id,
            ability_name=ability.name if ability else "",
            technique_id=ability.technique_id if ability else "",
            technique_name=ability.technique_name if ability else "",
            tactic=ability.tactic if ability else "",
            executor="",
            command="",
            status=LinkStatus.DISCARD,
            skip_reason=skip.detail,
            skip_reason_id=skip.reason,
            finished_at=now,
        )

    def _record_unrun(self, now: float, new_id: IdFactory) -> list[Link]:
        """At the end of planning: every ability that never made a link on an agent, and why."""
        created: list[Link] = []
        for paw, agent in self.agents.items():
            for ability_id in dict.fromkeys(self.adversary.atomic_ordering):
                if any(lk.paw == paw and lk.ability_id == ability_id and not lk.cleanup for lk in self.links):
                    continue
                result = self.generate(agent, ability_id)
                ability = self.abilities.get(ability_id)
                if isinstance(result, Skip):
                    skip = result
                elif ability is not None and ability.singleton and self.singleton_taken(ability_id):
                    skip = Skip(paw, ability_id, ability, SkipReason.OTHER, "singleton: ran on another agent")
                else:
                    skip = Skip(paw, ability_id, ability, SkipReason.OTHER, "the planner never reached it")
                created.append(self._skip_link(skip, now, new_id))
        return created

    def _abandon_pending(self, now: float) -> list[Link]:
        changed: list[Link] = []
        for lk in self.links:
            if lk.awaiting_approval or (lk.in_flight and lk.delegated_at is None and not lk.cleanup):
                reason = "awaiting approval" if lk.awaiting_approval else "not collected by its agent"
                lk.status = LinkStatus.DISCARD
                lk.skip_reason = f"operation closed while the link was {reason}"
                lk.skip_reason_id = SkipReason.LINK_IGNORED
                lk.finished_at = now
                changed.append(lk)
        return changed

    def _begin_cleanup(self, now: float) -> list[Link]:
        self.state = OperationState.CLEANUP
        due = sum(len(self._cleanup_due(paw)) for paw in self.agents)
        self.cleanup_deadline = now + CLEANUP_BASE_BUDGET + CLEANUP_PER_LINK * due
        return []

    def _cleanup_due(self, paw: str) -> list[tuple[Link, str]]:
        """(parent, command) of every cleanup still to run on ``paw``, newest ability first, each distinct
        command once (as Caldera does); cleanups already made are left out."""
        agent = self.agents[paw]
        mine = [lk for lk in self.links if lk.paw == paw]
        done = {lk.plaintext_command for lk in mine if lk.cleanup}
        out: list[tuple[Link, str]] = []
        seen: set[str] = set()
        for parent in sorted((lk for lk in mine if not lk.cleanup and lk.status.ran), key=lambda lk: -lk.seq):
            ability = self.abilities.get(parent.ability_id)
            executor = (
                next((e for e in ability.executors if e.name == parent.executor), None) if ability else None
            )
            if ability is None or executor is None:
                continue
            for template in executor.cleanup:
                key = (parent.id, template)
                command = self._cleanups.get(key)
                if command is None:
                    command = self._cleanups[key] = cleanup_command(
                        template, parent, ability, agent, self.knowledge
                    )
                if command in seen or command in done:
                    continue
                seen.add(command)
                out.append((parent, command))
        return out

    def _plan_cleanup(self, now: float, new_id: IdFactory) -> list[Link]:
        """One cleanup link at a time per agent, newest ability first, so cleanups undo in reverse order."""
        created: list[Link] = []
        for paw, agent in self.agents.items():
            if not agent.trusted or self.in_flight(paw):
                continue
            due = self._cleanup_due(paw)
            if not due:
                continue
            parent, command = due[0]
            link = self._new_link(
                paw,
                now,
                new_id,
                ability_id=parent.ability_id,
                ability_name=parent.ability_name,
                technique_id=parent.technique_id,
                technique_name=parent.technique_name,
                tactic=parent.tactic,
                executor=parent.executor,
                command=obfuscator(self.obfuscator).apply(command, parent.executor),
                plaintext_command=command,
                timeout=parent.timeout,
                cleanup=True,
                cleanup_of=parent.id,
                facts=dict(parent.facts),
            )
            created.append(link)
        return created
