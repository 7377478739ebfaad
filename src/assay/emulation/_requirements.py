"""Requirements: whether a candidate link's facts satisfy an ability's ``requirements``. Pure.

Caldera's stockpile modules map by name (``plugins.stockpile.app.requirements.basic`` → ``basic``). Each
``relationship_match`` entry ``{source, edge?, target?}`` must hold:

``paw_provenance``  the used fact of trait ``source`` was collected by this link's agent
``basic``           the used fact of trait ``source`` has a relationship with ``edge`` (to a used fact of
                    trait ``target`` when one is given)
``not_exists``      the negation of ``basic``
``existential``     at least one fact of trait ``source`` collected by this agent (with ``edge``, if given)
``universal``       every fact of trait ``source`` collected by this agent has ``edge`` (and there is one)

Unlike Caldera, requirements are checked for every link, also for commands without variables (Caldera
skips those, mitre/caldera#3192). A requirement about a used fact the command does not use fails, and says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from assay.content import REQUIREMENT_ALIASES, Requirement
from assay.emulation._facts import FactBase
from assay.emulation._model import Fact


def _used_of(trait: str, used: Sequence[Fact]) -> list[Fact]:
    return [f for f in used if f.trait == trait]


def _related(base: FactBase, fact: Fact, edge: Any, target: Any, used: Sequence[Fact]) -> bool:
    for rel in base.relationships_of(fact.trait, fact.value):
        if rel.edge != edge:
            continue
        if target is None:
            return True
        if rel.target is not None and any(rel.target == u.key for u in used if u.trait == target):
            return True
    return False


def _check(name: str, match: Mapping[str, Any], paw: str, used: Sequence[Fact], base: FactBase) -> str | None:
    source = match.get("source")
    if not isinstance(source, str) or not source:
        return f"requirement {name}: a relationship_match needs 'source'"
    edge, target = match.get("edge"), match.get("target")
    if name in ("paw_provenance", "basic", "not_exists"):
        facts = _used_of(source, used)
        if not facts:
            if name == "not_exists":
                return None
            return f"requirement {name}: the command uses no fact of trait {source!r}"
        if name == "paw_provenance":
            if any(paw in f.collected_by for f in facts):
                return None
            return f"requirement paw_provenance: {source!r} was not collected by agent {paw}"
        related = any(_related(base, f, edge, target, used) for f in facts)
        if name == "basic" and not related:
            return f"requirement basic: {source!r} has no {edge!r} relationship" + (
                f" to the {target!r} used" if target else ""
            )
        if name == "not_exists" and related:
            return f"requirement not_exists: {source!r} already has a {edge!r} relationship"
        return None
    mine = [f for f in base.of_trait(source) if paw in f.collected_by]
    with_edge = [f for f in mine if edge is None or edge in base.edges_of(f)]
    if name == "existential":
        return (
            None
            if with_edge
            else f"requirement existential: agent {paw} collected no {source!r}"
            + (f" with {edge!r}" if edge else "")
        )
    if name == "universal":
        if mine and len(with_edge) == len(mine):
            return None
        return f"requirement universal: not every {source!r} collected by agent {paw} has {edge!r}"
    return f"requirement {name} is not supported"


def unmet(requirements: Sequence[Requirement], paw: str, used: Sequence[Fact], base: FactBase) -> str | None:
    """Why the requirements do not hold for this agent and these used facts (None when they all hold)."""
    for req in requirements:
        name = REQUIREMENT_ALIASES.get(req.module)
        if name is None:
            return f"requirement {req.module!r} is not supported"
        matches = req.relationships or ({},)
        for match in matches:
            reason = _check(name, match, paw, used, base)
            if reason:
                return reason
    return None
