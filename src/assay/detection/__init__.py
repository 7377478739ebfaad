"""Detection: Sigma rules compiled to Python predicates, evaluated on Assay events.

    >>> from assay.detection import Engine
    >>> engine = Engine.load(rule_paths=["my-rules/"])
    >>> alerts = engine.process(event)

Rules are parsed by pySigma, mapped onto event fields by the ``assay`` processing pipeline
(:func:`assay_pipeline`), and compiled to generated Python code. Rules the engine cannot support are kept
in :attr:`Engine.rules` with the precise reason; they are never silently dropped or approximated.
"""

from assay.detection._allowlist import Allowlist, AllowlistEntry
from assay.detection._coverage import builtin_techniques, technique_coverage
from assay.detection._engine import Engine, builtin_allowlist_paths, builtin_rule_paths
from assay.detection._loader import RuleInfo
from assay.detection._pipeline import assay_pipeline

__all__ = [
    "Allowlist",
    "AllowlistEntry",
    "Engine",
    "RuleInfo",
    "assay_pipeline",
    "builtin_allowlist_paths",
    "builtin_rule_paths",
    "builtin_techniques",
    "technique_coverage",
]
