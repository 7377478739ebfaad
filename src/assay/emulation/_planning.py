"""Link generation and planners. Pure: values in, decisions out; no clock, no sleeping, no polling.

A planner looks at an :class:`~assay.emulation.Operation`'s state and says what to run next. The operation
turns its decisions into links. Issue 3 adds `batch` and `buckets` beside `atomic` through :data:`PLANNERS`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from assay.content import Ability, Executor, Privilege
from assay.emulation._model import Agent, Link, SkipReason
from assay.errors import EmulationError

if TYPE_CHECKING:
    from assay.emulation._operation import Operation

_VARIABLE = re.compile(r"#\{(.*?)\}")


@dataclass(frozen=True, slots=True)
class Run:
    """Run ``ability`` on agent ``paw`` with ``executor``; ``command`` has its variables filled in."""

    paw: str
    ability: Ability
    executor: Executor
    command: str
    facts: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Skip:
    """``ability_id`` cannot run on agent ``paw``, and why (recorded as a DISCARD link)."""

    paw: str
    ability_id: str
    ability: Ability | None
    reason: SkipReason
    detail: str


Decision = Run | Skip


def agent_globals(agent: Agent) -> dict[str, str]:
    """Caldera's global variables that come from the agent (``#{paw}``, ``#{server}``, ...)."""
    return {
        "paw": agent.paw,
        "server": agent.server,
        "group": agent.group,
        "location": agent.location,
        "exe_name": agent.exe_name,
        "upstream_dest": agent.server,
    }


def fill(command: str, values: Mapping[str, str]) -> tuple[str, list[str]]:
    """Substitute ``#{name}`` from ``values``; return the command and the names left unresolved."""
    missing: list[str] = []

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in values:
            return values[name]
        missing.append(name)
        return match.group(0)

    return _VARIABLE.sub(sub, command), missing


def choose_executor(ability: Ability, agent: Agent) -> Executor | Skip:
    candidates = ability.executors_for(agent.platform)
    if not candidates:
        return Skip(
            agent.paw,
            ability.id,
            ability,
            SkipReason.PLATFORM,
            f"no executor for platform {agent.platform!r} (ability has {', '.join(ability.platforms)})",
        )
    by_name = {e.name: e for e in candidates}
    for name in agent.executors:  # the agent's own preference order
        if name in by_name:
            return by_name[name]
    return Skip(
        agent.paw,
        ability.id,
        ability,
        SkipReason.EXECUTOR,
        f"agent executors {list(agent.executors)} do not include {sorted(by_name)}",
    )


def decide(ability_id: str, ability: Ability | None, agent: Agent, facts: Mapping[str, str]) -> Decision:
    """Whether ``ability`` can run on ``agent`` now, and with which executor and command."""
    if ability is None:
        return Skip(agent.paw, ability_id, None, SkipReason.OTHER, f"ability {ability_id} is not loaded")
    if not agent.trusted:
        return Skip(agent.paw, ability_id, ability, SkipReason.UNTRUSTED, "agent is untrusted")
    if ability.privilege is Privilege.ELEVATED and agent.privilege is not Privilege.ELEVATED:
        return Skip(agent.paw, ability_id, ability, SkipReason.PRIVILEGE, "needs Elevated, agent is User")
    chosen = choose_executor(ability, agent)
    if isinstance(chosen, Skip):
        return chosen
    values = {**facts, **agent_globals(agent)}
    command, missing = fill(chosen.command, values)
    if missing:
        names = ", ".join(sorted(set(missing)))
        return Skip(agent.paw, ability_id, ability, SkipReason.FACT_DEPENDENCY, f"no facts for {names}")
    used = {k: v for k, v in facts.items() if f"#{{{k}}}" in chosen.command}
    return Run(agent.paw, ability, chosen, command, used)


class Planner(Protocol):
    """Given an operation's state, the next decisions. Never blocks; an empty list means nothing to do now."""

    id: str
    name: str

    def next_decisions(self, operation: Operation, abilities: Mapping[str, Ability]) -> list[Decision]: ...


class AtomicPlanner:
    """Caldera's default: per agent, one link at a time, in the adversary's ``atomic_ordering``.

    An ability that cannot run is skipped (and recorded) and the next one is tried at once, so a skip never
    costs a round trip.
    """

    id = "aaa7c857-37a0-4c4a-85f7-4e9f7f30e31a"  # Caldera's id for `atomic`
    name = "atomic"

    def next_decisions(self, operation: Operation, abilities: Mapping[str, Ability]) -> list[Decision]:
        out: list[Decision] = []
        for agent in operation.agents.values():
            if operation.in_flight(agent.paw):
                continue
            tried = operation.abilities_tried(agent.paw)
            for ability_id in operation.adversary.atomic_ordering:
                if ability_id in tried:
                    continue
                decision = decide(ability_id, abilities.get(ability_id), agent, operation.facts)
                out.append(decision)
                tried.add(ability_id)
                if isinstance(decision, Run):
                    break
        return out


PLANNERS: dict[str, type[AtomicPlanner]] = {"atomic": AtomicPlanner}


def planner(name_or_id: str) -> Planner:
    """The planner registered under a name (``atomic``) or a Caldera id."""
    for cls in PLANNERS.values():
        if name_or_id in (cls.name, cls.id):
            return cls()
    known = ", ".join(f"{c.name} ({c.id})" for c in PLANNERS.values())
    raise EmulationError(f"unknown planner {name_or_id!r}; known: {known}")


def cleanup_sequence(links: Sequence[Link], abilities: Mapping[str, Ability]) -> list[tuple[Link, int, str]]:
    """The cleanup commands due for one agent's links, newest ability first: ``(parent, index, command)``.

    Each distinct command runs once per agent (as Caldera does), with the parent's variables filled again.
    """
    out: list[tuple[Link, int, str]] = []
    seen: set[str] = set()
    for parent in sorted((lk for lk in links if not lk.cleanup and lk.status.ran), key=lambda lk: -lk.seq):
        ability = abilities.get(parent.ability_id)
        if ability is None:
            continue
        executor = next((e for e in ability.executors if e.name == parent.executor), None)
        if executor is None:
            continue
        for index, command in enumerate(executor.cleanup):
            if command in seen:
                continue
            seen.add(command)
            out.append((parent, index, command))
    return out
