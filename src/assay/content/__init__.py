"""Content: abilities, executors and adversaries in Caldera's YAML formats, and the built-in library.

>>> from assay.content import load_builtin
>>> result = load_builtin()
>>> result.library.adversaries  # doctest: +SKIP
"""

from assay.content._caldera import parse_ability, parse_adversary
from assay.content._library import LoadResult, builtin_paths, load_builtin, load_paths
from assay.content._model import (
    DEFAULT_TIMEOUT,
    KNOWN_EXECUTORS,
    KNOWN_PLATFORMS,
    Ability,
    Adversary,
    Executor,
    Library,
    ParserConfig,
    Privilege,
    Requirement,
    Safety,
)
from assay.content._yaml import YList, YMap, load_yaml
from assay.content.builtin import BUILTIN_ADVERSARY_ID

__all__ = [
    "BUILTIN_ADVERSARY_ID",
    "DEFAULT_TIMEOUT",
    "KNOWN_EXECUTORS",
    "KNOWN_PLATFORMS",
    "Ability",
    "Adversary",
    "Executor",
    "Library",
    "LoadResult",
    "ParserConfig",
    "Privilege",
    "Requirement",
    "Safety",
    "YList",
    "YMap",
    "builtin_paths",
    "load_builtin",
    "load_paths",
    "load_yaml",
    "parse_ability",
    "parse_adversary",
]
