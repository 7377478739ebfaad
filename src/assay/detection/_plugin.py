"""Registers the built-in rules (and default allowlists) through the same hooks a third party would use."""

from __future__ import annotations

from pathlib import Path

from assay.plugins import hookimpl

RULES_DIR = Path(__file__).resolve().parent / "rules"


@hookimpl
def rule_paths() -> list[Path]:
    return [RULES_DIR]


ALLOWLISTS_DIR = Path(__file__).resolve().parent / "allowlists"


@hookimpl
def allowlist_paths() -> list[Path]:
    return sorted(ALLOWLISTS_DIR.glob("*.yml"))
