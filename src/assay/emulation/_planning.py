"""Planners: given an operation's state, the next decisions. Sans-I/O: no clock, no sleeping, no polling.

A planner is asked again whenever something changes (a result arrives, an agent joins, a link is approved),
so "wait for the links to finish" is simply "return nothing while any is in flight". What a planner has done
is read back from the operation's links (and, for ``buckets``, the bucket it reached, kept in
``operation.planner_state``), so an operation rebuilt from storage plans exactly what it would have.

``atomic``   per agent, one link at a time: the first ability of ``atomic_ordering`` that can make a new link
             (an ability waiting for a fact is passed over and taken as soon as the fact exists)
``batch``    every link every agent can run, all at once; the next batch when the whole batch has finished
``buckets``  tactics in kill-chain order; each bucket runs as batches until it has nothing new, then the next
``look_ahead`` one link at a time for the whole operation: the ability with the highest reward, counting the
             discounted rewards of the abilities it unlocks (stockpile's ``look_ahead.py``)
``guided``   the ability closest to the objective's goals in the graph of abilities and the facts they
             consume and produce, with Caldera's decaying distances (stockpile's ``guided.py``)

A planner definition's ``params`` (stockpile ``data/planners``) are the planner's keyword arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from assay.attack import TACTIC_ORDER
from assay.emulation._linking import GLOBALS, Decision, Run, Skip, choose_executor, variables
from assay.errors import EmulationError

if TYPE_CHECKING:
    from assay.content import Ability, Executor
    from assay.emulation._model import Agent
    from assay.emulation._operation import Operation


class Planner(Protocol):
    """Given an operation's state, the next decisions. Never blocks; an empty list means nothing to do now."""

    id: str
    name: str
    description: str

    def next_decisions(self, operation: Operation) -> list[Decision]: ...

    @property
    def params(self) -> dict[str, Any]: ...


class _NoParams:
    """A planner that takes no parameters."""

    @property
    def params(self) -> dict[str, Any]:
        return {}


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


class AtomicPlanner(_NoParams):
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


class BatchPlanner(_NoParams):
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


class BucketsPlanner(_NoParams):
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


def _number(params: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise EmulationError(f"planner parameter {key!r} must be a number in {low}..{high}, got {value!r}")
    return float(value)


def _check_params(params: Mapping[str, Any], known: set[str], planner_name: str) -> None:
    unknown = sorted(set(params) - known)
    if unknown:
        raise EmulationError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for planner {planner_name!r} "
            f"(known: {', '.join(sorted(known))})"
        )


def _inputs(executor: Executor) -> set[str]:
    """The fact traits an executor's command consumes (``#{trait}``, globals such as ``#{paw}`` excluded)."""
    return {v.trait for v in variables(executor.command) if v.trait not in GLOBALS}


def _outputs(executor: Executor) -> set[str]:
    """The fact traits an executor's parsers produce (source and target)."""
    return {t for cfg in executor.parsers for t in (cfg.source, cfg.target) if t}


def _preferred(ability: Ability, agent: Agent) -> Executor | None:
    chosen = choose_executor(ability, agent)
    return None if isinstance(chosen, Skip) else chosen


class LookAheadPlanner:
    """Stockpile's look-ahead planner. For each agent, every ability it can run is scored by

        future_reward(a, d) = R(a) * discount**d + max(future_reward(b, d + 1) for b that follow a, 0)

    up to ``depth``, where ``b`` follows ``a`` when ``a``'s parsers produce a trait ``b``'s command uses, and
    ``R`` is ``ability_rewards`` (else ``default_reward``). The link of the highest-scoring ability that can
    run now goes out; across agents, only the single best one: one link at a time for the whole operation.
    """

    id = "254c7035-de7d-4d76-a888-2c09ba594eca"  # stockpile's id (its file says "...eca.yml")
    name = "look_ahead"
    description = "One link at a time: the ability with the highest reward including what it unlocks."

    def __init__(
        self,
        ability_rewards: Mapping[str, Any] | None = None,
        depth: int = 3,
        discount: float = 0.9,
        default_reward: float = 1,
    ) -> None:
        rewards = dict(ability_rewards or {})
        for key, value in rewards.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise EmulationError(f"ability_rewards[{key!r}] must be a number, got {value!r}")
        self.ability_rewards: dict[str, float] = {str(k): float(v) for k, v in rewards.items()}
        self.depth = int(_number({"depth": depth}, "depth", 3, 0, 10))
        self.discount = _number({"discount": discount}, "discount", 0.9, 0.0, 1.0)
        self.default_reward = _number({"default_reward": default_reward}, "default_reward", 1, -1e6, 1e6)

    @property
    def params(self) -> dict[str, Any]:
        return {"ability_rewards": dict(self.ability_rewards), "depth": self.depth,
                "discount": self.discount, "default_reward": self.default_reward}  # fmt: skip

    def rewards(self, operation: Operation, paw: str) -> list[tuple[str, float]]:
        """(ability id, future reward) per ability ``paw`` can run, best first (ties: adversary order)."""
        agent = operation.agents[paw]
        executors: dict[str, Executor] = {}
        for ability_id in _ordering(operation):
            ability = operation.abilities.get(ability_id)
            chosen = _preferred(ability, agent) if ability is not None else None
            if chosen is not None:
                executors[ability_id] = chosen
        outputs = {a: _outputs(e) for a, e in executors.items()}
        inputs = {a: _inputs(e) for a, e in executors.items()}

        def future(current: str, remaining: frozenset[str], depth: int) -> float:
            if depth > self.depth:
                return 0.0
            rest = remaining - {current}
            follow = [b for b in rest if inputs[b] & outputs[current]]
            best = max([0.0, *(future(b, rest, depth + 1) for b in follow)])
            reward = self.ability_rewards.get(current, self.default_reward)
            return round(reward * self.discount**depth + best, 3)

        everything = frozenset(executors)
        scored = [(a, future(a, everything, 0)) for a in executors]
        return sorted(scored, key=lambda item: -item[1])

    def next_decisions(self, operation: Operation) -> list[Decision]:
        if operation.busy():
            return []
        out: list[Decision] = []
        best: tuple[float, Run] | None = None
        for paw in operation.planning_agents():
            for ability_id, reward in self.rewards(operation, paw):
                runs = _decide(operation, paw, ability_id, out)
                if runs:
                    if best is None or reward > best[0]:
                        best = (reward, runs[0])
                    break
        return out + ([best[1]] if best else [])


class GuidedPlanner:
    """Stockpile's guided planner: distances to the goals in the attack graph (abilities → the traits their
    parsers produce; traits → the abilities whose commands consume them).

    The goals are the objective's; for the default objective (``exhaustion``) they are the graph's terminal
    nodes (nothing follows them). An ability's distance to a goal is the number of abilities on the shortest
    path to it; the table is inverted (``max - distance + 1``) so the closest ability scores highest. Only
    abilities with a path to a goal run. Each pass, per agent, the link with the best
    ``goal_weight * effective + fact_score_weight * link score`` goes out, with the abilities without outputs
    between the last action and it in the adversary's order (Caldera's supporting links). After each round
    the effective distances decay towards the absolute ones (``half_life_gain``); the last action is penalised
    when it brought no goal closer (``half_life_penalty``), a goal action is damped (``goal_action_decay``);
    a met goal rebuilds the table. State lives in ``operation.planner_state``, so a restart plans the same.
    """

    id = "5bdec528-07ce-44cc-8997-09fe41aa2007"  # stockpile's id
    name = "guided"
    description = "The ability closest to the objective's goals first, with Caldera's decaying distances."

    _KEYS = ("half_life_penalty", "half_life_gain", "goal_action_decay", "goal_weight", "fact_score_weight")

    def __init__(self, **params: Any) -> None:
        _check_params(params, set(self._KEYS), self.name)
        self.half_life_penalty = _number(params, "half_life_penalty", 4, 1e-6, 1e6)
        self.half_life_gain = _number(params, "half_life_gain", 2, 1e-6, 1e6)
        self.goal_action_decay = _number(params, "goal_action_decay", 2, 1e-6, 1e6)
        self.goal_weight = _number(params, "goal_weight", 1, -1e6, 1e6)
        self.fact_score_weight = _number(params, "fact_score_weight", 0, -1e6, 1e6)

    @property
    def params(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self._KEYS}

    # -- the graph ----------------------------------------------------------------------------------------
    def graph(self, operation: Operation) -> dict[str, set[str]]:
        """Directed edges, node → successors. Ability nodes are ``ability:<id>``, trait nodes the trait."""
        edges: dict[str, set[str]] = {}
        for ability_id in _ordering(operation):
            ability = operation.abilities.get(ability_id)
            if ability is None:
                continue
            node = f"ability:{ability_id}"
            for agent in operation.agents.values():
                executor = _preferred(ability, agent)
                if executor is None:
                    continue
                edges.setdefault(node, set())
                for cfg in executor.parsers:
                    edges[node].update(t for t in (cfg.source, cfg.target, cfg.edge) if t)
                for trait in _inputs(executor):
                    edges.setdefault(trait, set()).add(node)
        for targets in list(edges.values()):
            for target in targets:
                edges.setdefault(target, set())
        return edges

    def goals(self, operation: Operation, edges: Mapping[str, set[str]]) -> list[tuple[str, bool]]:
        """(target node, met) for every goal: the objective's, or the terminal nodes under exhaustion."""
        facts = [(f.trait, f.value) for f in operation.knowledge.facts.values()]
        objective = operation.objective
        if not objective.goals or objective.exhaustion:
            return [(node, False) for node, succ in edges.items() if not succ]
        return [(g.target, g.satisfied(facts)) for g in objective.goals]

    def distances(
        self, edges: Mapping[str, set[str]], targets: Sequence[str]
    ) -> tuple[dict[str, float], list[str]]:
        """Inverted distance per ability id (closest to a goal highest), and the goal actions (distance 1)."""
        reverse: dict[str, set[str]] = {}
        for node, succ in edges.items():
            for target in succ:
                reverse.setdefault(target, set()).add(node)
        best: dict[str, int] = {}
        goal_actions: set[str] = set()
        max_dist = 0
        for target in targets:
            if target not in edges:
                continue
            # breadth-first from the goal backwards: the shortest path in edges, as networkx's shortest_path
            hops: dict[str, int] = {target: 0}
            count: dict[str, int] = {target: 1 if target.startswith("ability:") else 0}
            frontier = [target]
            while frontier:
                nxt: list[str] = []
                for node in frontier:
                    for prev in sorted(reverse.get(node, ())):
                        if prev not in hops:
                            hops[prev] = hops[node] + 1
                            count[prev] = count[node] + (1 if prev.startswith("ability:") else 0)
                            nxt.append(prev)
                frontier = nxt
            for node, abilities_on_path in count.items():
                if not node.startswith("ability:"):
                    continue
                ability_id = node.split(":", 1)[1]
                if abilities_on_path == 1:
                    goal_actions.add(ability_id)
                max_dist = max(max_dist, abilities_on_path)
                if ability_id not in best or abilities_on_path < best[ability_id]:
                    best[ability_id] = abilities_on_path
        table = {a: float(abs(d - max_dist) + 1) for a, d in best.items()}
        return table, sorted(goal_actions)

    # -- planning -----------------------------------------------------------------------------------------
    def next_decisions(self, operation: Operation) -> list[Decision]:
        if operation.busy():
            return []
        state = operation.planner_state
        if state.get("guided_done"):
            return []
        edges = self.graph(operation)
        goals = self.goals(operation, edges)
        remaining = [target for target, met in goals if not met]
        if goals and not remaining:
            state["guided_done"] = True
            return []
        absolute, goal_actions = self.distances(edges, remaining)
        effective: dict[str, float] = dict(state.get("effective") or {})
        if state.get("goals") != remaining or set(effective) != set(absolute):
            effective = dict(absolute)  # first pass, or a goal was met: start again from the new table
        out: list[Decision] = []
        candidates: dict[str, list[Run]] = {}
        for paw in operation.planning_agents():
            for ability_id in _ordering(operation):
                if ability_id in absolute:
                    runs = _decide(operation, paw, ability_id, out)
                    if runs:
                        candidates.setdefault(paw, []).extend(runs)
        last = state.get("last_action")
        if candidates and last in absolute and state.get("goals") == remaining:
            effective = self._decay(absolute, effective, candidates, last, goal_actions)
        ordering = _ordering(operation)
        chosen: list[Run] = []
        for runs in candidates.values():
            best = min(
                enumerate(runs),
                key=lambda item: (
                    -(
                        effective[item[1].ability.id] * self.goal_weight
                        + item[1].score * self.fact_score_weight
                    ),
                    -item[1].score,
                    item[0],
                ),
            )[1]
            chosen.extend(self._supporting(operation, best, last, ordering, out))
            chosen.append(best)
            last = best.ability.id
        state.update({"effective": effective, "goals": remaining, "last_action": last})
        if not chosen:
            state["guided_done"] = bool(operation.planning_agents())
        return out + chosen

    def _decay(
        self,
        absolute: Mapping[str, float],
        effective: dict[str, float],
        candidates: Mapping[str, list[Run]],
        last: str,
        goal_actions: Sequence[str],
    ) -> dict[str, float]:
        """Caldera's ``_handle_no_goal_achieved``: penalise the last action, then decay towards absolute."""
        max_value = max(absolute[r.ability.id] for runs in candidates.values() for r in runs)
        if last in goal_actions:
            effective[last] = max_value - 1 + (effective[last] + 1 - max_value) / self.goal_action_decay
        elif max_value > abs(absolute[last]):
            effective[last] = absolute[last]
        else:
            effective[last] = effective[last] / self.half_life_penalty
        return {a: score + (absolute[a] - score) / self.half_life_gain for a, score in effective.items()}

    def _supporting(
        self, operation: Operation, link: Run, last: str | None, ordering: Sequence[str], out: list[Decision]
    ) -> list[Run]:
        """Abilities without outputs between the last action and ``link``'s in the adversary's order."""
        start = ordering.index(last) if last in ordering else 0
        end = ordering.index(link.ability.id) if link.ability.id in ordering else 0
        agent = operation.agents[link.paw]
        runs: list[Run] = []
        for ability_id in ordering[start:end]:
            ability = operation.abilities.get(ability_id)
            executor = _preferred(ability, agent) if ability is not None else None
            if executor is None or executor.parsers or ability_id == link.ability.id:
                continue
            runs.extend(_decide(operation, link.paw, ability_id, out)[:1])
        return runs


PlannerClass = (
    type[AtomicPlanner]
    | type[BatchPlanner]
    | type[BucketsPlanner]
    | type[LookAheadPlanner]
    | type[GuidedPlanner]
)
PLANNERS: dict[str, PlannerClass] = {
    "atomic": AtomicPlanner,
    "batch": BatchPlanner,
    "buckets": BucketsPlanner,
    "look_ahead": LookAheadPlanner,
    "guided": GuidedPlanner,
}
# Caldera's names and ids for the same planners (stockpile's planner files).
PLANNER_ALIASES: dict[str, str] = {
    "look ahead": "look_ahead",
    "254c7035-de7d-4d76-a888-2c09ba594eca.yml": "look_ahead",
    "0f4c3c67-845e-49a0-927e-90ed33c044e0": "batch",
    "f36c34f5-9439-4417-9640-fe83f4b7b12d": "buckets",
}


def planner_class(name_or_id: str) -> PlannerClass:
    """The planner registered under a name (``atomic``), an id, or one of Caldera's names for it."""
    wanted = PLANNER_ALIASES.get(name_or_id, name_or_id)
    for cls in PLANNERS.values():
        if wanted in (cls.name, cls.id):
            return cls
    known = ", ".join(f"{c.name} ({c.id})" for c in PLANNERS.values())
    raise EmulationError(f"unknown planner {name_or_id!r}; known: {known}")


def planner(name_or_id: str, params: Mapping[str, Any] | None = None) -> Planner:
    """An instance of the planner named ``name_or_id`` with a planner definition's ``params``."""
    cls = planner_class(name_or_id)
    if not params:
        return cls()
    if cls in (AtomicPlanner, BatchPlanner, BucketsPlanner):
        raise EmulationError(f"planner {cls.name!r} takes no parameters, got {', '.join(map(repr, params))}")
    if cls is LookAheadPlanner:
        _check_params(params, {"ability_rewards", "depth", "discount", "default_reward"}, cls.name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise EmulationError(f"bad parameters for planner {cls.name!r}: {exc}") from exc
