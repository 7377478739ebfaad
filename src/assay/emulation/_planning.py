"""Planners: given an operation's state, the next decisions. Sans-I/O: no clock, no sleeping, no polling.

A planner is asked again whenever something changes (a result arrives, an agent joins, a link is approved),
so "wait for the links to finish" is simply "return nothing while any is in flight". What a planner has done
is read back from the operation's links (and, for ``buckets``, the bucket it reached, kept in
``operation.planner_state``), so an operation rebuilt from storage plans exactly what it would have.

``atomic``   per agent, one link at a time: the first ability of ``atomic_ordering`` that can make a new link
             (an ability waiting for a fact is passed over and taken as soon as the fact exists)
``batch``    every link every agent can run, all at once; the next batch when the whole batch has finished
``buckets``  tactics in kill-chain order; each bucket runs as batches until it has nothing new, then the next
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from assay.attack import TACTIC_ORDER
from assay.emulation._linking import Decision, Run, Skip
from assay.errors import EmulationError

if TYPE_CHECKING:
    from assay.emulation._operation import Operation


class Planner(Protocol):
    """Given an operation's state, the next decisions. Never blocks; an empty list means nothing to do now."""

    id: str
    name: str
    description: str

    def next_decisions(self, operation: Operation) -> list[Decision]: ...


def _ordering(operation: Operation) -> list[str]:
    return list(dict.fromkeys(operation.adversary.atomic_ordering))


def _decide(operation: Operation, paw: str, ability_id: str, out: list[Decision]) -> list[Run]:
    """The runs ``ability_id`` offers on ``paw``; a permanent skip not recorded yet goes into ``out``."""
    agent = operation.agents[paw]
    result = operation.generate(agent, ability_id)
    if isinstance(result, Skip):
        if result.permanent and not operation.skip_recorded(paw, ability_id):
            out.append(result)
        return []
    return result


class AtomicPlanner:
    id = "aaa7c857-37a0-4c4a-85f7-4e9f7f30e31a"  # Caldera's id for `atomic`
    name = "atomic"
    description = (
        "One link at a time per agent, in the adversary's order; the next the moment a result arrives."
    )

    def next_decisions(self, operation: Operation) -> list[Decision]:
        out: list[Decision] = []
        for paw in operation.planning_agents():
            if operation.busy(paw):
                continue
            for ability_id in _ordering(operation):
                runs = _decide(operation, paw, ability_id, out)
                if runs:
                    out.append(runs[0])
                    break
        return out


class BatchPlanner:
    id = "fbc6e1e6-0ec1-4eb6-8ce3-41e9e8f3c2a7"
    name = "batch"
    description = "Every link every agent can run, at once; the next batch when the whole batch has finished."

    def next_decisions(self, operation: Operation) -> list[Decision]:
        if operation.busy():
            return []
        out: list[Decision] = []
        for paw in operation.planning_agents():
            for ability_id in _ordering(operation):
                out.extend(_decide(operation, paw, ability_id, out))
        return out


def bucket_order(buckets: Sequence[str]) -> list[str]:
    """Tactics in kill-chain order; other bucket names after them, in the order they first appear."""
    known = {t: i for i, t in enumerate(TACTIC_ORDER)}
    unique = list(dict.fromkeys(buckets))
    return sorted(unique, key=lambda b: (0, known[b], 0) if b in known else (1, 0, unique.index(b)))


class BucketsPlanner:
    id = "7e4a1c9d-3f6b-4a8e-9d2c-5b1e0f7a6c33"
    name = "buckets"
    description = "Tactic buckets in kill-chain order, each run as batches until it has nothing new."

    def next_decisions(self, operation: Operation) -> list[Decision]:
        if operation.busy():
            return []
        ordering = _ordering(operation)
        buckets_of = {
            aid: (ab.buckets or (ab.tactic,)) if (ab := operation.abilities.get(aid)) else ("unknown",)
            for aid in ordering
        }
        order = bucket_order([b for aid in ordering for b in buckets_of[aid]])
        state = operation.planner_state
        current = state.get("bucket")
        if current == "__done__":
            return []
        start = order.index(current) if current in order else 0
        out: list[Decision] = []
        for bucket in order[start:]:
            runs: list[Decision] = []
            for paw in operation.planning_agents():
                for ability_id in ordering:
                    if bucket in buckets_of[ability_id]:
                        runs.extend(_decide(operation, paw, ability_id, out))
            if runs:
                state["bucket"] = bucket
                return out + runs
        if operation.planning_agents():
            state["bucket"] = "__done__"
        return out


PLANNERS: dict[str, type[AtomicPlanner] | type[BatchPlanner] | type[BucketsPlanner]] = {
    "atomic": AtomicPlanner,
    "batch": BatchPlanner,
    "buckets": BucketsPlanner,
}


def planner(name_or_id: str) -> Planner:
    """The planner registered under a name (``atomic``) or a Caldera-style id."""
    for cls in PLANNERS.values():
        if name_or_id in (cls.name, cls.id):
            return cls()
    known = ", ".join(f"{c.name} ({c.id})" for c in PLANNERS.values())
    raise EmulationError(f"unknown planner {name_or_id!r}; known: {known}")
