"""Docs that fall behind the code fail here: every CLI command is in the README's command table."""

from __future__ import annotations

import re

from typer.main import get_command

from assay.cli import build_app
from conftest import ROOT


def _commands() -> set[str]:
    group = get_command(build_app())
    return set(group.commands)  # type: ignore[attr-defined]


def test_every_cli_command_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `assay ([a-z-]+)", readme, flags=re.M))
    assert _commands() - documented == set(), "add these commands to the README's command table"
    assert documented - _commands() == set(), "the README documents commands that no longer exist"


def test_readme_opens_with_the_two_commands() -> None:
    head = (ROOT / "README.md").read_text(encoding="utf-8").split("\n## ", 1)[0]
    assert "make demo" in head and "make test" in head
