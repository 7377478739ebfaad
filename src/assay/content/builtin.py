"""Registers the built-in ability library through the same ``content_paths`` hook third parties use."""

from __future__ import annotations

from pathlib import Path

from assay.plugins import hookimpl

DATA_DIR = Path(__file__).resolve().parent / "data"

# The adversary profile that runs every built-in ability (docs/architecture.md §8).
BUILTIN_ADVERSARY_ID = "5b1f3c9e-7a2d-4e8b-9c61-0d4a7e2f8b10"


@hookimpl
def content_paths() -> list[Path]:
    return [DATA_DIR]
