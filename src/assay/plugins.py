"""Plugin hooks. Built-in features register through the same hooks third-party plugins use.

A plugin is a module (or object) with functions marked ``@hookimpl``. Built-in plugins are listed in
:data:`BUILTIN_PLUGINS`; third-party ones are found through the ``assay`` entry-point group::

    [project.entry-points.assay]
    myplugin = "myplugin.assay_hooks"
"""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import typer

hookspec = pluggy.HookspecMarker("assay")
hookimpl = pluggy.HookimplMarker("assay")


class AssaySpecs:
    @hookspec
    def register_commands(self, app: typer.Typer) -> None:
        """Add commands or command groups to the `assay` CLI."""

    @hookspec
    def content_paths(self) -> list[Path]:  # type: ignore[empty-body]
        """Directories of abilities, adversaries and fact sources to load as the built-in library."""

    @hookspec
    def rule_paths(self) -> list[Path]:  # type: ignore[empty-body]
        """Directories of Sigma rules to load as built-in detection content."""

    @hookspec
    def allowlist_paths(self) -> list[Path]:  # type: ignore[empty-body]
        """Allowlist YAML files to load by default."""


# Modules of Assay itself that implement hooks.
# One entry per line, sorted, so parallel additions rarely touch the same lines.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "assay.cli.agent",
    "assay.cli.baseline",
    "assay.cli.content",
    "assay.cli.demo",
    "assay.cli.detect",
    "assay.cli.keys",
    "assay.cli.rules",
    "assay.cli.sandbox",
    "assay.cli.sense",
    "assay.cli.serve",
    "assay.cli.validate",
    "assay.cli.watch",
    "assay.content.builtin",
    "assay.detection._plugin",
)


@cache
def plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("assay")
    pm.add_hookspecs(AssaySpecs)
    for name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    pm.load_setuptools_entrypoints("assay")
    return pm
