"""The operation state machine: running → cleanup → finished, driven by events, never by a timer.

Every method takes the current time and returns the links it created or changed, so that the caller (the C2
core) can persist them and hand new ones to agents at once. The next link is planned *inside*
:meth:`Operation.on_result`, the moment the previous result arrives: there is no polling interval anywhere.
All decisions derive from the links recorded so far, so an operation rebuilt from storage continues where
it was (issue 3's restart test).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from assay.content import Ability, Adversary
from assay.emulation._model import Agent, Link, LinkStatus, OperationState, Result
from assay.emulation._planning import Planner, Run, Skip, agent_globals, cleanup_sequence, fill
from assay.errors import EmulationError, Source

IdFactory = Callable[[], str]


@dataclass(slots=True)
class Operation:
    id: str
    name: str
    adversary: Adversary
    planner: Planner
    group: str = ""
    auto_close: bool = True
    state: OperationState = OperationState.RUNNING
    created_at: float = 0.0
    finished_at: float | None = None
    agents: dict[str, Agent] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    close_requested: bool = False

    # -- queries -------------------------------------------------------------------------------------------
    def link(self, link_id: str) -> Link | None:
        return next((lk for lk in self.links if lk.id == link_id), None)

    def in_flight(self, paw: str) -> bool:
        return any(lk.paw == paw and lk.in_flight for lk in self.links)

    def abilities_tried(self, paw: str) -> set[str]:
        return {lk.ability_id for lk in self.links if lk.paw == paw and not lk.cleanup}

    def undelivered(self, paw: str) -> list[Link]:
        """Links waiting for agent ``paw`` to collect them, in plan order."""
        return [lk for lk in self.links if lk.paw == paw and lk.in_flight and lk.delegated_at is None]

    @property
    def done(self) -> bool:
        return self.state in (OperationState.FINISHED, OperationState.OUT_OF_TIME)

    def accepts(self, agent: Agent) -> bool:
        """Caldera: an agent joins every running operation whose group matches (or is empty)."""
        return not self.done and self.state is not OperationState.CLEANUP and self.group in ("", agent.group)

    # -- events --------------------------------------------------------------------------------------------
    def add_agent(self, agent: Agent) -> None:
        self.agents[agent.paw] = agent

    def request_close(self) -> None:
        """Stop planning new abilities; cleanup still runs (Caldera's `finished` request)."""
        self.close_requested = True

    def mark_delivered(self, link: Link, now: float) -> None:
        link.delegated_at = now

    def on_result(self, result: Result, now: float) -> Link | None:
        """Record a result; ``None`` if this link already has one (a re-sent result changes nothing)."""
        link = self.link(result.link_id)
        if link is None:
            raise EmulationError(
                "result for a link this operation does not have", Source(link=result.link_id)
            )
        if link.finished:
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
        return link

    def advance(self, abilities: Mapping[str, Ability], now: float, new_id: IdFactory) -> list[Link]:
        """Plan whatever can run now and move the state machine on; returns the links it created."""
        created: list[Link] = []
        if self.state is OperationState.RUNNING:
            if not self.close_requested:
                created.extend(self._plan(abilities, now, new_id))
            if self._exhausted() and (self.auto_close or self.close_requested) and self.agents:
                self.state = OperationState.CLEANUP
        if self.state is OperationState.CLEANUP:
            created.extend(self._plan_cleanup(abilities, now, new_id))
            if not any(lk.in_flight for lk in self.links):
                self.state = OperationState.FINISHED
                self.finished_at = now
        return created

    # -- internals -----------------------------------------------------------------------------------------
    def _exhausted(self) -> bool:
        """Nothing in flight and the planner has nothing more (it returned no Run this pass)."""
        if any(lk.in_flight for lk in self.links):
            return False
        ordering = set(self.adversary.atomic_ordering)
        return all(ordering <= self.abilities_tried(paw) for paw in self.agents)

    def _new_link(self, paw: str, now: float, new_id: IdFactory, **values: object) -> Link:
        agent = self.agents[paw]
        link = Link(
            id=new_id(),
            operation_id=self.id,
            paw=paw,
            host=agent.host,
            seq=len(self.links),
            planned_at=now,
            **values,  # type: ignore[arg-type]
        )
        self.links.append(link)
        return link

    def _plan(self, abilities: Mapping[str, Ability], now: float, new_id: IdFactory) -> list[Link]:
        created: list[Link] = []
        for decision in self.planner.next_decisions(self, abilities):
            ability = decision.ability
            common = {
                "ability_id": ability.id if ability else decision_id(decision),
                "ability_name": ability.name if ability else "",
                "technique_id": ability.technique_id if ability else "",
                "technique_name": ability.technique_name if ability else "",
                "tactic": ability.tactic if ability else "",
            }
            if isinstance(decision, Run):
                created.append(
                    self._new_link(
                        decision.paw,
                        now,
                        new_id,
                        executor=decision.executor.name,
                        command=decision.command,
                        timeout=decision.executor.timeout,
                        facts=dict(decision.facts),
                        **common,
                    )
                )
            else:
                created.append(
                    self._new_link(
                        decision.paw,
                        now,
                        new_id,
                        executor="",
                        command="",
                        status=LinkStatus.DISCARD,
                        skip_reason=decision.detail,
                        skip_reason_id=decision.reason,
                        finished_at=now,
                        **common,
                    )
                )
        return created

    def _plan_cleanup(self, abilities: Mapping[str, Ability], now: float, new_id: IdFactory) -> list[Link]:
        """One cleanup link at a time per agent, newest ability first, so cleanups undo in reverse order."""
        created: list[Link] = []
        for paw, agent in self.agents.items():
            if self.in_flight(paw):
                continue
            mine = [lk for lk in self.links if lk.paw == paw]
            done = {(lk.cleanup_of, lk.command) for lk in mine if lk.cleanup}
            for parent, _index, template in cleanup_sequence(mine, abilities):
                command, _missing = fill(template, {**parent.facts, **agent_globals(agent)})
                if (parent.id, command) in done:
                    continue
                created.append(
                    self._new_link(
                        paw,
                        now,
                        new_id,
                        ability_id=parent.ability_id,
                        ability_name=parent.ability_name,
                        technique_id=parent.technique_id,
                        technique_name=parent.technique_name,
                        tactic=parent.tactic,
                        executor=parent.executor,
                        command=command,
                        timeout=parent.timeout,
                        cleanup=True,
                        cleanup_of=parent.id,
                        facts=dict(parent.facts),
                    )
                )
                break
        return created


def decision_id(decision: Run | Skip) -> str:
    return decision.ability.id if isinstance(decision, Run) else decision.ability_id
