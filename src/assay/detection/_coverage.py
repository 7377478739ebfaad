"""Which ATT&CK techniques the built-in rules cover, derived from the rules' own tags (never kept by hand)."""

from __future__ import annotations

from functools import cache

from assay.detection._engine import Engine


@cache
def technique_coverage() -> dict[str, list[str]]:
    """Technique id → titles of the supported built-in rules (detection and correlation) that tag it."""
    engine = Engine.load(include_builtin=True, include_default_allowlists=False)
    out: dict[str, list[str]] = {}
    for r in engine.rules:
        if r.supported:
            for t in r.techniques:
                out.setdefault(t, []).append(r.title)
    return {t: sorted(out[t]) for t in sorted(out)}


def builtin_techniques() -> frozenset[str]:
    """The techniques the built-in rules cover (what abilities must exercise, issue 6)."""
    return frozenset(technique_coverage())
