"""An operation's knowledge: facts (one per trait and value), relationships between them, and fact rules.

Pure values; the operation persists what changes. Facts are not host-scoped (as in Caldera): a value learned
on one agent is offered to every agent unless a requirement (``paw_provenance``) says otherwise.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from assay.content import FactRule, FactSource, RuleAction
from assay.emulation._model import Fact, OriginType, Relationship


@lru_cache(maxsize=512)
def _network(match: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(match, strict=False)
    except ValueError:
        return None


@lru_cache(maxsize=512)
def _pattern(match: str) -> re.Pattern[str]:
    return re.compile(match)


def rule_matches(rule: FactRule, fact: Fact) -> bool:
    if rule.trait != fact.trait:
        return False
    network = _network(rule.match)
    if network is not None:
        try:
            return ipaddress.ip_address(fact.value) in network
        except ValueError:
            return False
    return _pattern(rule.match).match(fact.value) is not None


def allowed(fact: Fact, rules: Sequence[FactRule]) -> bool:
    """Caldera's rules: applied in order, the last one that matches decides; no match allows."""
    verdict = True
    for rule in rules:
        if rule_matches(rule, fact):
            verdict = rule.action is RuleAction.ALLOW
    return verdict


@dataclass(slots=True)
class FactBase:
    """Facts and relationships of one operation, in the order they were learned."""

    facts: dict[tuple[str, str], Fact] = field(default_factory=dict)
    relationships: dict[tuple[object, ...], Relationship] = field(default_factory=dict)

    def get(self, trait: str, value: str) -> Fact | None:
        return self.facts.get((trait, value))

    def of_trait(self, trait: str) -> list[Fact]:
        return [f for f in self.facts.values() if f.trait == trait]

    def add(self, fact: Fact) -> Fact | None:
        """Add a fact or merge it into the known one; returns the stored fact if anything changed."""
        known = self.facts.get(fact.key)
        if known is None:
            self.facts[fact.key] = fact
            return fact
        changed = False
        for link in fact.links:
            if link not in known.links:
                known.links.append(link)
                changed = True
        for paw in fact.collected_by:
            if paw not in known.collected_by:
                known.collected_by.append(paw)
                changed = True
        return known if changed else None

    def relate(self, relationship: Relationship) -> bool:
        """Add a relationship; ``False`` if it was known."""
        if relationship.key in self.relationships:
            return False
        self.relationships[relationship.key] = relationship
        return True

    def relationships_of(self, trait: str, value: str) -> list[Relationship]:
        return [r for r in self.relationships.values() if r.source == (trait, value)]

    def edges_of(self, fact: Fact) -> set[str]:
        return {r.edge for r in self.relationships_of(fact.trait, fact.value) if r.edge}

    def summary(self) -> dict[str, str]:
        """trait → first value, for the compact record kept on the operation row."""
        out: dict[str, str] = {}
        for fact in self.facts.values():
            out.setdefault(fact.trait, fact.value)
        return out


def seed(source: FactSource, now: float) -> tuple[list[Fact], list[Relationship]]:
    """A fact source's facts (IMPORTED) and relationships; trait-only relationship ends are resolved against
    the source's facts, one relationship per matching fact (as Caldera does at operation start)."""
    facts = [
        Fact(f.trait, f.value.strip(), f.score, OriginType.IMPORTED, source=source.id, created_at=now)
        for f in source.facts
    ]
    by_trait: dict[str, list[str]] = {}
    for f in facts:
        by_trait.setdefault(f.trait, []).append(f.value)

    def ends(end: tuple[str, str | None] | None) -> list[tuple[str, str] | None]:
        if end is None:
            return [None]
        trait, value = end
        if value is not None:
            return [(trait, value.strip())]
        return [(trait, v) for v in by_trait.get(trait, [])]

    relationships: list[Relationship] = []
    extra: list[Fact] = []
    for rel in source.relationships:
        for src in ends(rel.source):
            if src is None:
                continue
            for tgt in ends(rel.target):
                relationships.append(Relationship(src, rel.edge, tgt, rel.score, origin=source.id))
                for end in (src, tgt):
                    if end is not None and end[1] not in by_trait.get(end[0], []):
                        by_trait.setdefault(end[0], []).append(end[1])
                        extra.append(
                            Fact(end[0], end[1], 1, OriginType.IMPORTED, source=source.id, created_at=now)
                        )
    return facts + extra, relationships


def merge_all(
    base: FactBase, facts: Iterable[Fact], relationships: Iterable[Relationship]
) -> tuple[list[Fact], list[Relationship]]:
    """Add facts and relationships; returns those that were new or changed (what must be persisted)."""
    changed: list[Fact] = []
    for fact in facts:
        stored = base.add(fact)
        if stored is not None and stored not in changed:
            changed.append(stored)
    new_rels = [r for r in relationships if base.relate(r)]
    return changed, new_rels
