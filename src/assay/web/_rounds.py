"""Rounds as the UI shows them: the list, one round's report, the ATT&CK matrix, a technique's drill-down and
the comparison of two rounds.

Every round page reads the report through :func:`round_report`, the same function behind ``GET
/api/v2/rounds/{id}``, so the page and the API cannot disagree. Everything here returns plain dicts: the
HTML pages render them and the JSON twins (``/api/v2/ui/rounds/...``) return them as they are.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException

from assay.attack import TACTIC_ORDER
from assay.validation import compare
from assay.validation._report import event_row

if TYPE_CHECKING:
    from assay.api import ServerState
    from assay.api._rounds import RoundReports

OUTCOMES = (
    "detected",
    "missed_suppressed",
    "missed_no_rule",
    "missed_no_telemetry",
    "inconclusive",
    "not_executed",
)
EVENTS_SHOWN = 200  # per link in a drill-down; the count says how many there were


class Rounds:
    def __init__(self, st: ServerState, reports: RoundReports) -> None:
        self.st = st
        self.reports = reports

    # -- the two reads the rest stands on ------------------------------------------------------------------
    def round_list(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Rounds, oldest first, as ``GET /api/v2/rounds`` lists them."""
        return self.reports.list(limit)

    def round_report(self, round_id: str) -> dict[str, Any]:
        """The report of one round, as ``GET /api/v2/rounds/{id}`` returns it."""
        return self.reports.report(round_id)

    # -- what the pages show -------------------------------------------------------------------------------
    def finished_rounds(self) -> list[dict[str, Any]]:
        # An operation that ran nothing is no round to compare with; a stored round always scored something.
        return [
            r
            for r in self.round_list()
            if r["finished_at"] is not None and (r["kind"] != "operation" or r["links"])
        ]

    def latest_pair(self) -> dict[str, Any]:
        """The newest finished round's detection rates beside the one before it (the dashboard's figure)."""
        done = self.finished_rounds()
        out: dict[str, Any] = {"latest": None, "previous": None, "delta": None}
        if done:
            out["latest"] = _headline(done[-1], self.round_report(done[-1]["id"]))
        if len(done) > 1:
            out["previous"] = _headline(done[-2], self.round_report(done[-2]["id"]))
            out["delta"] = round(
                out["latest"]["detection_rate_testable"] - out["previous"]["detection_rate_testable"], 4
            )
        return out

    def round_page(self, round_id: str) -> dict[str, Any]:
        """One round: its report, the outcome counts, the matrix, and the rounds it can be compared with."""
        report = self.round_report(round_id)
        rounds = self.round_list()
        earlier = []
        for r in rounds:
            if r["id"] == round_id:
                break
            if r["finished_at"] is not None and (r["kind"] != "operation" or r["links"]):
                earlier.append({"id": r["id"], "name": r["name"], "started_at": r["started_at"]})
        record = next((r for r in rounds if r["id"] == round_id), None)
        return {
            "id": round_id,
            "round": record,
            "report": report,
            "outcomes": outcome_counts(report),
            "matrix": matrix(report),
            "earlier": list(reversed(earlier)),
            "downloads": [
                ("report.html", "HTML report"),
                ("report.md", "Markdown"),
                ("layer.json", "Navigator layer"),
            ],
        }

    def technique_page(self, round_id: str, technique_id: str) -> dict[str, Any]:
        """What ran for one technique, what the sensor saw of each link's process tree, which rule fired, or
        why none did."""
        from assay.validation import attribute, harness_events, round_inputs

        report = self.round_report(round_id)
        tech = next((t for t in report["techniques"] if t["technique_id"] == technique_id), None)
        if tech is None:
            raise HTTPException(404, detail=f"technique {technique_id[:32]!r} is not in round {round_id}")
        ids = set(tech["links"])
        links = [lk for lk in report["links"] if lk["link_id"] in ids]
        operation_id = self.reports.operation_of(round_id)
        if operation_id is None:
            # A stored round whose operation is not in this database: the report's own sample of each
            # link's events (report v3) is what there is to show.
            shown = [
                {
                    **lk,
                    "events_total": lk.get("events_seen", 0),
                    "actions": dict(
                        Counter(str(ev["action"]) for ev in lk.get("events") or []).most_common()
                    ),
                    "events": [{**ev, "executable": ev.get("process")} for ev in lk.get("events") or []],
                }
                for lk in links
            ]
            return {"round_id": round_id, "technique": tech, "links": shown, "sampled": True}
        records, events, alerts = round_inputs(self.st.store, operation_id)
        lineages, _ = attribute(records, events, alerts)
        shown = []
        for lk in links:
            lineage = lineages.get(lk["link_id"])
            evs = lineage.events if lineage is not None else []
            # The executor's own start is the agent's doing, not the technique's, and its fork carries the
            # agent's command line (its enrolment token): the page leaves it out, as the reports do.
            if lineage is not None:
                harness = harness_events(lineage.root, evs)
                evs = [ev for i, ev in enumerate(evs) if i not in harness]
            actions = Counter(ev.action for ev in evs)
            shown.append(
                {
                    **lk,
                    "events_total": len(evs),
                    "actions": dict(actions.most_common()),
                    "events": [_event_row(ev) for ev in evs[:EVENTS_SHOWN]],
                }
            )
        return {"round_id": round_id, "technique": tech, "links": shown, "sampled": False}

    def comparison(self, round_id: str, other_id: str) -> dict[str, Any]:
        """This round against an earlier one: summary deltas and every technique whose outcome changed."""
        current = self.round_report(round_id)
        previous = self.round_report(other_id)
        delta = compare(previous, current).to_dict()
        return {
            "round_id": round_id,
            "other_id": other_id,
            "summary_now": current["summary"],
            "summary_then": previous["summary"],
            "summary": delta["summary"],  # this round's figures minus the earlier one's
            "changes": delta["changes"],
        }


def _headline(record: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    s = report["summary"]
    return {
        "id": record["id"],
        "name": record["name"],
        "finished_at": record["finished_at"],
        "detected": s["detected"],
        "testable": s["testable"],
        "executed": s["executed"],
        "detection_rate_testable": s["detection_rate_testable"],
        "detection_rate_executed": s["detection_rate_executed"],
    }


def outcome_counts(report: dict[str, Any]) -> dict[str, int]:
    counts = Counter(str(t["outcome"]) for t in report["techniques"])
    return {o: counts.get(o, 0) for o in OUTCOMES}


def matrix(report: dict[str, Any]) -> list[dict[str, Any]]:
    """ATT&CK tactic columns in kill-chain order, each with the round's techniques and their outcomes."""
    by_tactic: dict[str, list[dict[str, Any]]] = {}
    for t in report["techniques"]:
        by_tactic.setdefault(str(t["tactic"]), []).append(
            {"technique_id": t["technique_id"], "name": t["name"], "outcome": t["outcome"]}
        )
    order = [t for t in TACTIC_ORDER if t in by_tactic] + sorted(set(by_tactic) - set(TACTIC_ORDER))
    return [
        {
            "tactic": tactic,
            "title": tactic.replace("-", " ").title(),
            "techniques": sorted(by_tactic[tactic], key=lambda c: c["technique_id"]),
            "detected": sum(1 for c in by_tactic[tactic] if c["outcome"] == "detected"),
        }
        for tactic in order
    ]


def _event_row(ev: Any) -> dict[str, Any]:
    """The report's row of an event (its detail redacted of secrets), with the executable's full path."""
    return {**event_row(ev), "executable": ev.fields.get("process.executable")}
