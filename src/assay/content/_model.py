"""The content domain: abilities (what to run), executors (how, per platform), adversaries (in which order).

These are immutable values. Where a value came from (``origin``) is kept so that later errors, for example an
adversary naming an ability that does not exist, can still point at the file and line.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    additional_info: Mapping[str, Any] = field(default_factory=dict)
    origin: Source | None = None

    @property
    def platforms(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.platform for e in self.executors))

    def executors_for(self, platform: str) -> tuple[Executor, ...]:
        return tuple(e for e in self.executors if e.platform == platform)


@dataclass(frozen=True, slots=True)
class Adversary:
    id: str
    name: str
    atomic_ordering: tuple[str, ...]
    description: str = ""
    objective: str | None = None
    tags: tuple[str, ...] = ()
    origin: Source | None = None


@dataclass(slots=True)
class Library:
    """Everything loaded from a set of content paths, plus what could not be loaded and why."""

    abilities: dict[str, Ability] = field(default_factory=dict)
    adversaries: dict[str, Adversary] = field(default_factory=dict)

    def ability(self, ability_id: str) -> Ability | None:
        return self.abilities.get(ability_id)

    def adversary(self, adversary_id: str) -> Adversary | None:
        return self.adversaries.get(adversary_id)

    def missing_abilities(self, adversary: Adversary) -> list[str]:
        """Ability ids the adversary names that are not loaded (stockpile itself has two such profiles)."""
        return [a for a in adversary.atomic_ordering if a not in self.abilities]
