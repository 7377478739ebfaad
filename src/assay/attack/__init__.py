"""The ATT&CK catalogue: technique and tactic names, parents, and the v18 → v19 renumbering.

Assay works in current (v19) technique IDs everywhere. Content written against older IDs (Caldera's
stockpile still tags ``T1562.001``) is normalized *forward* on load with :func:`normalize`, so that one
technique never splits into two IDs in coverage, detection rates or "mapped but never validated".

    >>> from assay import attack
    >>> attack.normalize("t1562.001")
    'T1685'
    >>> attack.technique("T1059.004").name
    'Unix Shell'
"""

from assay.attack._catalogue import (
    RENAMED,
    TACTIC_ORDER,
    Catalogue,
    Tactic,
    Technique,
    catalogue,
    from_tag,
    normalize,
    tactic,
    technique,
)

__all__ = [
    "RENAMED",
    "TACTIC_ORDER",
    "Catalogue",
    "Tactic",
    "Technique",
    "catalogue",
    "from_tag",
    "normalize",
    "tactic",
    "technique",
]
