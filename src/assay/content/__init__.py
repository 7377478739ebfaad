"""Content: abilities, executors, adversaries and fact sources in Caldera's YAML formats, Atomic Red Team
tests imported as abilities, and the built-in library.

>>> from assay.content import load_builtin
>>> result = load_builtin()
>>> result.library.adversaries  # doctest: +SKIP
"""

from assay.content._atomic import needs_network, parse_atomic
from assay.content._caldera import parse_ability, parse_adversary
from assay.content._check import check_paths, problem, report
from assay.content._library import LoadResult, apply_overrides, builtin_paths, load_builtin, load_paths
from assay.content._model import (
    BASIC_SOURCE_ID,
    DEFAULT_TIMEOUT,
    KNOWN_EXECUTORS,
    KNOWN_PLATFORMS,
    PARSER_ALIASES,
    PARSERS,
    REQUIREMENT_ALIASES,
    REQUIREMENTS,
    Ability,
    Adjustment,
    Adversary,
    Argument,
    Dependency,
    Executor,
    FactRule,
    FactSource,
    Library,
    ParserConfig,
    Privilege,
    Requirement,
    RuleAction,
    Safety,
    SeedFact,
    SeedRelationship,
)
from assay.content._safety import classify
from assay.content._sources import check_rule_match, parse_source
from assay.content._yaml import YList, YMap, load_yaml
from assay.content.builtin import BUILTIN_ADVERSARY_ID

__all__ = [
    "BASIC_SOURCE_ID",
    "BUILTIN_ADVERSARY_ID",
    "DEFAULT_TIMEOUT",
    "KNOWN_EXECUTORS",
    "KNOWN_PLATFORMS",
    "PARSERS",
    "PARSER_ALIASES",
    "REQUIREMENTS",
    "REQUIREMENT_ALIASES",
    "Ability",
    "Adjustment",
    "Adversary",
    "Argument",
    "Dependency",
    "Executor",
    "FactRule",
    "FactSource",
    "Library",
    "LoadResult",
    "ParserConfig",
    "Privilege",
    "Requirement",
    "RuleAction",
    "Safety",
    "SeedFact",
    "SeedRelationship",
    "YList",
    "YMap",
    "apply_overrides",
    "builtin_paths",
    "check_paths",
    "check_rule_match",
    "classify",
    "load_builtin",
    "load_paths",
    "load_yaml",
    "needs_network",
    "parse_ability",
    "parse_adversary",
    "parse_atomic",
    "parse_source",
    "problem",
    "report",
]
