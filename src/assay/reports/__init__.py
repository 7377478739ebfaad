"""Reports of a validation round, rendered from its JSON (``assay-report.json`` or a stored round's report):

- :func:`render_markdown`: ``assay-report.md``, for a CI log or a job summary;
- :func:`render_layer`: ``assay-layer.json``, an ATT&CK Navigator layer (format 4.5);
- :func:`render_html`: ``assay-report.html``, one self-contained page: the matrix, the table, a drill-down.

:func:`write_reports` writes all four files side by side; :func:`report_paths` says where.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assay.reports._html import render_html
from assay.reports._layer import LAYER_VERSION, render_layer
from assay.reports._markdown import render_markdown
from assay.reports._view import STANDINGS, ReportError, RoundView, Standing, round_view


@dataclass(frozen=True)
class ReportPaths:
    json: Path
    markdown: Path
    html: Path
    layer: Path

    def all(self) -> list[Path]:
        return [self.json, self.markdown, self.html, self.layer]


def report_paths(json_path: Path) -> ReportPaths:
    """The other reports beside the JSON one: ``assay-report.json`` → ``assay-report.md``,
    ``assay-report.html`` and ``assay-layer.json`` (``x.json`` → ``x.md``, ``x.html``, ``x-layer.json``)."""
    stem = json_path.stem
    layer = stem.replace("report", "layer") if "report" in stem else f"{stem}-layer"
    return ReportPaths(
        json=json_path,
        markdown=json_path.with_name(stem + ".md"),
        html=json_path.with_name(stem + ".html"),
        layer=json_path.with_name(layer + ".json"),
    )


def write_reports(report: Mapping[str, Any], json_path: Path) -> ReportPaths:
    """Write the JSON report and, beside it, the Markdown, HTML and Navigator layer renderings of it.

    Everything is rendered before anything is written, so a rendering error leaves the files of the
    previous round as they were rather than a mix of two rounds.
    """
    paths = report_paths(json_path)
    texts = {
        paths.json: json.dumps(report, indent=2) + "\n",
        paths.markdown: render_markdown(report),
        paths.html: render_html(report),
        paths.layer: json.dumps(render_layer(report), indent=2) + "\n",
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    for path, text in texts.items():
        path.write_text(text, encoding="utf-8")
    return paths


__all__ = [
    "LAYER_VERSION",
    "STANDINGS",
    "ReportError",
    "ReportPaths",
    "RoundView",
    "Standing",
    "render_html",
    "render_layer",
    "render_markdown",
    "report_paths",
    "round_view",
    "write_reports",
]
