"""The content domain: abilities (what to run), executors (how, per platform), adversaries (in which order).

These are immutable values. Where a value came from (``origin``) is kept so that later errors, for example an
adversary naming an ability that does not exist, can still point at the file and line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from assay.errors import Source

# Executors Caldera's stockpile and plugins use. Loading content for another platform must not fail just
# because this agent cannot run it; planning skips it later with a recorded reason.
KNOWN_EXECUTORS: frozenset[str] = frozenset(
    {
        "sh",
        "bash",
        "zsh",
        "python",
        "python3",
        "proc",
        "psh",
        "pwsh",
        "cmd",
        "osa",
        "native",
        "keyword",
        "donut_amd64",
        "shellcode_amd64",
        "shellcode_386",
    }
)
KNOWN_PLATFORMS: frozenset[str] = frozenset({"linux", "windows", "darwin"})

# Assay's parsers, and Caldera's stockpile parser modules mapped onto them so stockpile abilities keep
# working. Stockpile parsers not listed (katz, nmap, netlocalgroup, ...) parse Windows or tool-specific output
# Assay has no equivalent for: loading warns, and their links produce no facts.
PARSERS: frozenset[str] = frozenset(
    {"line", "regex", "json", "kv", "static", "scan", "ipaddr", "broadcastip"}
)
_STOCKPILE = "plugins.stockpile.app.parsers."
PARSER_ALIASES: dict[str, str] = {
    _STOCKPILE + "basic": "line",
    _STOCKPILE + "filename": "line",
    _STOCKPILE + "find": "line",
    _STOCKPILE + "ssh": "line",
    _STOCKPILE + "lspci": "line",
    _STOCKPILE + "json": "json",
    _STOCKPILE + "static": "static",
    _STOCKPILE + "scan": "scan",
    _STOCKPILE + "ipaddr": "ipaddr",
    _STOCKPILE + "ip": "ipaddr",
    _STOCKPILE + "broadcastip": "broadcastip",
}
for _name in PARSERS:
    PARSER_ALIASES.setdefault(_name, _name)
    PARSER_ALIASES.setdefault(f"assay.parsers.{_name}", _name)

# Requirement modules, by the same scheme; the value is Assay's name.
_REQ = "plugins.stockpile.app.requirements."
REQUIREMENTS: frozenset[str] = frozenset(
    {"paw_provenance", "basic", "not_exists", "existential", "universal"}
)
REQUIREMENT_ALIASES: dict[str, str] = {
    **{_REQ + name: name for name in REQUIREMENTS},
    _REQ + "req_like": "basic",  # basic with fuzzy target matching; the exact match is the safe reading
    **{name: name for name in REQUIREMENTS},
}
DEFAULT_TIMEOUT = 60


class Privilege(StrEnum):
    """Caldera's two privilege levels; an ability without one runs as any user."""

    USER = "User"
    ELEVATED = "Elevated"


class Safety(StrEnum):
    """What running an ability does to the host (issue 3 makes opting in to the unsafe ones explicit)."""

    SAFE = "safe"
    DISRUPTIVE = "disruptive"
    DESTRUCTIVE = "destructive"

    @property
    def rank(self) -> int:
        return _SAFETY_RANK[self]

    def allows(self, safety: Safety | None) -> bool:
        """Whether an operation limited to ``self`` may run an ability of class ``safety``.

        An ability that does not say (Caldera and Atomic Red Team content) could do anything, so it counts as
        destructive: it runs only when the user opts in to everything.
        """
        return (safety or Safety.DESTRUCTIVE).rank <= self.rank


_SAFETY_RANK = {Safety.SAFE: 0, Safety.DISRUPTIVE: 1, Safety.DESTRUCTIVE: 2}


@dataclass(frozen=True, slots=True)
class ParserConfig:
    """One Caldera parser mapping: output of ``module`` becomes facts ``source`` [-``edge``-> ``target``]."""

    module: str
    source: str
    edge: str | None = None
    target: str | None = None
    custom: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Requirement:
    """A Caldera requirement module and its relationship matches (enforced by issue 3's fact engine)."""

    module: str
    relationships: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Executor:
    """How to run an ability on one platform with one executor (``sh``, ``bash``, ``python``...)."""

    name: str
    platform: str
    command: str
    cleanup: tuple[str, ...] = ()
    timeout: int = DEFAULT_TIMEOUT
    payloads: tuple[str, ...] = ()
    uploads: tuple[str, ...] = ()
    parsers: tuple[ParserConfig, ...] = ()
    # Caldera executor keys Assay keeps but does not act on (`variations`, `code`, `language`, ...).
    additional_info: Mapping[str, Any] = field(default_factory=dict)
    # Why Assay will not run this executor (empty: it may). Valid Caldera content Assay cannot run, such as
    # an executor Caldera's builder plugin compiles from `code`/`language`/`build_target`, loads with a
    # reason.
    unsupported: str = ""


@dataclass(frozen=True, slots=True)
class Argument:
    """An Atomic Red Team input argument: ``#{name}`` in its commands, filled with the default unless the
    operation overrides it with a fact of the same trait (a fact source or the operation's own facts)."""

    name: str
    default: str
    type: str = "string"
    description: str = ""


@dataclass(frozen=True, slots=True)
class Dependency:
    """An Atomic Red Team prerequisite: ``check`` exits 0 when it is met; ``get`` tries to meet it.

    ``needs_network`` is decided at import: when getting the prerequisite would reach the network (downloads,
    package managers), Assay never runs it and the link ends ``not_executed`` with reason ``prerequisite``.
    """

    description: str
    check: str
    get: str = ""
    needs_network: bool = False


@dataclass(frozen=True, slots=True)
class Ability:
    id: str
    name: str
    tactic: str
    technique_id: str
    technique_name: str
    executors: tuple[Executor, ...]
    description: str = ""
    privilege: Privilege | None = None
    repeatable: bool = False
    singleton: bool = False
    delete_payload: bool = True
    requirements: tuple[Requirement, ...] = ()
    buckets: tuple[str, ...] = ()
    safety: Safety | None = None
    # Why the ability has its class: imported content is classified (assay.content's safety classifier,
    # by technique and command patterns) or overridden by the user; Assay's own content says it in YAML.
    safety_reason: str = ""
    access: Mapping[str, Any] = field(default_factory=dict)
    plugin: str = ""
    additional_info: Mapping[str, Any] = field(default_factory=dict)
    # Atomic Red Team: input arguments (substituted as ART does, unescaped) and prerequisites.
    arguments: Mapping[str, Argument] = field(default_factory=dict)
    dependencies: tuple[Dependency, ...] = ()
    dependency_executor: str | None = None
    origin: Source | None = None

    @property
    def platforms(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.platform for e in self.executors))

    def executors_for(self, platform: str) -> tuple[Executor, ...]:
        """The executors of ``platform`` Assay may run (unsupported ones are left out)."""
        return tuple(e for e in self.executors if e.platform == platform and not e.unsupported)

    def unsupported_for(self, platform: str) -> tuple[Executor, ...]:
        return tuple(e for e in self.executors if e.platform == platform and e.unsupported)


@dataclass(frozen=True, slots=True)
class Adversary:
    id: str
    name: str
    atomic_ordering: tuple[str, ...]
    description: str = ""
    objective: str | None = None
    tags: tuple[str, ...] = ()
    plugin: str = ""
    additional_info: Mapping[str, Any] = field(default_factory=dict)
    origin: Source | None = None


class RuleAction(StrEnum):
    ALLOW = "ALLOW"
    DENY = "DENY"


@dataclass(frozen=True, slots=True)
class FactRule:
    """Caldera's fact rule: facts of ``trait`` whose value ``match``es are allowed or denied (last match
    wins).

    ``match`` is a regular expression matched at the start of the value, or an IPv4 address/CIDR when it
    parses as one (then an address value matches when it lies inside the network).
    """

    action: RuleAction
    trait: str
    match: str = ".*"


@dataclass(frozen=True, slots=True)
class SeedFact:
    trait: str
    value: str
    score: int = 1


@dataclass(frozen=True, slots=True)
class SeedRelationship:
    source: tuple[str, str | None]  # (trait, value); a value of None is resolved against the source's facts
    edge: str | None = None
    target: tuple[str, str | None] | None = None
    score: int = 1


@dataclass(frozen=True, slots=True)
class Adjustment:
    """Caldera's visibility adjustment: a link of ``ability_id`` using fact ``trait`` = ``value`` gets
    ``offset`` added to its visibility."""

    ability_id: str
    trait: str
    value: str
    offset: int


@dataclass(frozen=True, slots=True)
class FactSource:
    """Caldera's fact source: the facts an operation starts with, the rules that filter facts, the seeded
    relationships and the visibility adjustments."""

    id: str
    name: str
    facts: tuple[SeedFact, ...] = ()
    rules: tuple[FactRule, ...] = ()
    relationships: tuple[SeedRelationship, ...] = ()
    adjustments: tuple[Adjustment, ...] = ()
    plugin: str = ""
    additional_info: Mapping[str, Any] = field(default_factory=dict)
    origin: Source | None = None


# Caldera's default source `basic`: operations that name no source get this empty one.
BASIC_SOURCE_ID = "ed32b9c3-9593-4c33-b0db-e2007315096b"
# Caldera's default objective: its one goal (`exhaustion`) is never met, the operation runs until the
# planner has nothing left.
DEFAULT_OBJECTIVE_ID = "495a9828-cab1-44dd-a0ca-66e58177d8cc"
EXHAUSTION = "exhaustion"
GOAL_OPERATORS: frozenset[str] = frozenset({"==", "<", ">", "<=", ">=", "in", "*"})


def _compare(operator: str, wanted: str, value: str) -> bool:
    """Caldera's ``Goal.parse_operator(op)(goal.value, fact.value)``: the goal's value on the left."""
    if operator == "*":
        return True
    if operator == "==":
        return wanted == value
    if operator == "in":
        return wanted in value
    try:  # Caldera compares the raw values; numbers compare as numbers here, so "10" > "9" holds
        left: float | str = float(wanted)
        right: float | str = float(value)
    except ValueError:
        left, right = wanted, value
    if operator == "<":
        return left < right  # type: ignore[operator]
    if operator == ">":
        return left > right  # type: ignore[operator]
    if operator == "<=":
        return left <= right  # type: ignore[operator]
    return left >= right  # type: ignore[operator]


@dataclass(frozen=True, slots=True)
class Goal:
    """Caldera's goal: met once ``count`` facts of trait ``target`` compare true with ``value``."""

    target: str
    value: str = ""
    count: int = 1
    operator: str = "=="

    def matches(self, trait: str, value: str) -> bool:
        return trait == self.target and _compare(self.operator, self.value, value)

    def satisfied(self, facts: Iterable[tuple[str, str]]) -> bool:
        if self.target == EXHAUSTION:  # Caldera's default goal: never met by facts
            return False
        return sum(1 for trait, value in facts if self.matches(trait, value)) >= self.count


@dataclass(frozen=True, slots=True)
class Objective:
    """Caldera's objective: an operation that has one ends as soon as all its goals are met."""

    id: str
    name: str
    goals: tuple[Goal, ...] = ()
    description: str = ""
    origin: Source | None = None

    @property
    def exhaustion(self) -> bool:
        """Only the default goal: nothing but running out of links ends the operation."""
        return all(g.target == EXHAUSTION for g in self.goals)

    def met(self, facts: Iterable[tuple[str, str]]) -> bool:
        pairs = list(facts)
        return bool(self.goals) and not self.exhaustion and all(g.satisfied(pairs) for g in self.goals)

    def percentage(self, facts: Iterable[tuple[str, str]]) -> float:
        pairs = list(facts)
        if not self.goals:
            return 0.0
        return 100.0 * sum(1 for g in self.goals if g.satisfied(pairs)) / len(self.goals)


DEFAULT_OBJECTIVE = Objective(
    DEFAULT_OBJECTIVE_ID,
    "default",
    (Goal(EXHAUSTION, "complete", 2**20, "=="),),
    "The default objective: run until the planner has nothing left.",
    Source(file="<built-in>"),
)
BASIC_SOURCE = FactSource(BASIC_SOURCE_ID, "basic", origin=Source(file="<built-in>"))


@dataclass(frozen=True, slots=True)
class PlannerDefinition:
    """Caldera's planner YAML (``data/planners``): which module plans, with which parameters.

    ``runs_as`` is the Assay planner that implements ``module`` (empty: none does, and the definition is
    listed with that reason)."""

    id: str
    name: str
    module: str
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    stopping_conditions: tuple[tuple[str, str], ...] = ()
    ignore_enforcement_modules: tuple[str, ...] = ()
    allow_repeatable_abilities: bool = False
    runs_as: str = ""
    plugin: str = ""
    origin: Source | None = None


@dataclass(frozen=True, slots=True)
class ContentSkip:
    """Valid Caldera content Assay loads but will not run, and why (never an error)."""

    kind: str  # ability, executor, planner, source, rule
    id: str
    name: str
    reason: str
    origin: Source | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.id,
            "name": self.name,
            "reason": self.reason,
            "file": self.origin.file if self.origin else None,
            "line": self.origin.line if self.origin else None,
        }


@dataclass(slots=True)
class Library:
    """Everything loaded from a set of content paths, plus what could not be loaded and why."""

    abilities: dict[str, Ability] = field(default_factory=dict)
    adversaries: dict[str, Adversary] = field(default_factory=dict)
    sources: dict[str, FactSource] = field(default_factory=dict)
    objectives: dict[str, Objective] = field(default_factory=dict)
    planners: dict[str, PlannerDefinition] = field(default_factory=dict)

    def source(self, source_id: str) -> FactSource | None:
        """A source by id, else by name when exactly one has it (Caldera's UI and docs say ``basic``)."""
        found = self.sources.get(source_id)
        if found is not None:
            return found
        named = [s for s in self.sources.values() if s.name == source_id]
        return named[0] if len(named) == 1 else None

    def objective(self, objective_id: str | None) -> Objective:
        """An objective by id or unique name; the default objective when none is named."""
        if not objective_id:
            return self.objectives.get(DEFAULT_OBJECTIVE_ID, DEFAULT_OBJECTIVE)
        found = self.objectives.get(objective_id)
        if found is None:
            named = [o for o in self.objectives.values() if o.name == objective_id]
            found = named[0] if len(named) == 1 else None
        if found is None and objective_id == DEFAULT_OBJECTIVE_ID:
            return DEFAULT_OBJECTIVE
        if found is None:
            raise KeyError(objective_id)
        return found

    def planner_definition(self, planner_id: str) -> PlannerDefinition | None:
        """A loaded planner definition by id (stockpile's ids may end in ``.yml``) or unique name."""
        for key in (planner_id, f"{planner_id}.yml"):
            if key in self.planners:
                return self.planners[key]
        named = [p for p in self.planners.values() if p.name == planner_id]
        return named[0] if len(named) == 1 else None

    def add_defaults(self) -> None:
        """Caldera always has its ``basic`` source and default objective; content may bring its own."""
        self.sources.setdefault(BASIC_SOURCE_ID, BASIC_SOURCE)
        self.objectives.setdefault(DEFAULT_OBJECTIVE_ID, DEFAULT_OBJECTIVE)

    def ability(self, ability_id: str) -> Ability | None:
        return self.abilities.get(ability_id)

    def adversary(self, adversary_id: str) -> Adversary | None:
        return self.adversaries.get(adversary_id)

    def missing_abilities(self, adversary: Adversary) -> list[str]:
        """Ability ids the adversary names that are not loaded (stockpile itself has two such profiles)."""
        return [a for a in adversary.atomic_ordering if a not in self.abilities]
