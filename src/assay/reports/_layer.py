"""``assay-layer.json``: the round as an ATT&CK Navigator layer (layer format 4.5), built with
mitreattack-python's layer tools (``mitreattack.navlayers``).

Each technique is coloured by its standing (validated / detected only by another technique's rule / missed
/ inconclusive / mapped but not validated / not executed), with a comment saying which rule fired or why
not, and metadata a Navigator user can filter on. The legend lists every standing the colours use.

Techniques carry no ``tactic``: the Navigator then shows the annotation under every tactic the technique
belongs to, so a procedure filed under another tactic than ATT&CK's still lands in the matrix.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from typing import Any

from assay.reports._view import OUTCOME_LABEL, STANDINGS, ReportError, TechniqueRow, round_view

LAYER_VERSION = "4.5"
NAVIGATOR_VERSION = "5.1.0"  # the Navigator release line that reads layer 4.5 (mitreattack-python's default)
ATTACK_VERSION = "19"  # Assay works in v19 technique IDs (assay.attack); v19's T1685.. exist only there
DESCRIPTION_LIMIT = 2000  # a comment is a tooltip: long reasons are cut, the HTML report has them whole


def _short(text: str, limit: int = DESCRIPTION_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _metadata(t: TechniqueRow) -> list[tuple[str, str]]:
    out = [("standing", t.standing.key)]
    if t.in_round:
        out.append(("outcome", OUTCOME_LABEL.get(t.outcome, t.outcome)))
        if t.reason_code:
            out.append(("reason code", t.reason_code))
        out.append(("rule claims it", "yes" if t.mapped else "no"))
        for a in t.fired[:5]:
            out.append(("rule fired", f"{a.title} ({a.rule_id})"))
        for lk in t.links[:5]:
            out.append(("procedure", f"{lk.ability_name} ({lk.outcome})"))
    return out


def _layer_dict(report: Mapping[str, Any]) -> dict[str, Any]:
    view = round_view(report)
    s = view.summary
    meta = view.meta
    description = (
        f"detected {s.get('detected')} of {s.get('testable')} testable techniques "
        f"({float(s.get('detection_rate_testable') or 0):.0%}); executed {s.get('executed')}, "
        f"+{s.get('detected_unmapped', 0)} detected by another technique's rule; "
        f"{len(view.not_validated)} mapped but not in the round."
    )
    layer_meta = [
        (k, str(meta[k]))
        for k in ("round_id", "operation_id", "adversary_id", "sensor_source", "rules_hash", "content_hash")
        if meta.get(k)
    ]
    techniques = [
        {
            "techniqueID": t.technique_id,
            "color": t.standing.color,
            "comment": _short(t.comment),
            "enabled": True,
            "metadata": [{"name": k, "value": _short(v, 300)} for k, v in _metadata(t)],
        }
        for t in view.every
    ]
    used = {t.standing.key for t in view.every}
    return {
        "name": _short(view.title, 200),
        "domain": "enterprise-attack",
        "description": description,
        "versions": {"layer": LAYER_VERSION, "navigator": NAVIGATOR_VERSION, "attack": ATTACK_VERSION},
        "filters": {"platforms": ["Linux"]},
        "layout": {
            "layout": "side",
            "showID": True,
            "showName": True,
            "expandedSubtechniques": "annotated",
        },
        "hideDisabled": False,
        "techniques": techniques,
        "legendItems": [{"label": st.label, "color": st.color} for st in STANDINGS if st.key in used],
        "metadata": [{"name": k, "value": v} for k, v in layer_meta],
    }


def render_layer(report: Mapping[str, Any]) -> dict[str, Any]:
    """The round report (its JSON) as a Navigator layer dict (format 4.5).

    The dict goes through ``mitreattack.navlayers.Layer``, which type-checks every field; it reports a
    problem by printing and dropping the field, so anything it prints is raised here instead.
    """
    from mitreattack.navlayers import Layer  # pandas & co.: loaded only when a layer is made

    data = _layer_dict(report)
    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        layer = Layer(init_data=data, strict=True)
        out = layer.to_dict()
    if said.getvalue().strip() or not isinstance(out, dict):
        raise ReportError(f"mitreattack-python refused the layer: {said.getvalue().strip()[:500]}")
    if len(out.get("techniques") or []) != len(data["techniques"]):
        raise ReportError("mitreattack-python dropped techniques from the layer")
    return out
