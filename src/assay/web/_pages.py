"""What each page shows, as plain dicts: the HTML pages render these and their JSON twins return them.

Figures come from the same functions the REST API uses (``assay.api._views``, the store, the operation
service), so a page shows the numbers the API returns.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from assay.api._operations import read_operation
from assay.api._views import ability_view, adversary_view, agent_view, link_view, operation_view
from assay.emulation import LinkStatus, Operation

if TYPE_CHECKING:
    from assay.api import ServerState
    from assay.web._rounds import Rounds

RATE_WINDOW = 60.0  # seconds of events behind a source's events/s
LATE_SLACK = 5.0  # an agent is late once silent this long past its longest sleep (and not yet dead)
ALERTS_SHOWN = 200
OUTPUT_SHOWN = 2000  # characters of a link's output in the live table
# Alerts for an operation's last links reach the server after it ends (the watcher ships in batches, and
# matching happens on ingest), so a page keeps following a finished operation until an event stored from
# after its end proves the watcher has shipped everything before it, or, on a host too quiet to produce one,
# until a grace period has passed.
SETTLE_MARGIN = 1.0
SETTLE_GRACE = 10.0


def agents(st: ServerState) -> list[dict[str, Any]]:
    core = st.core
    now = core.clock()
    out = []
    for agent in list(core.agents.values()):
        settings = core.settings_of(agent.paw)
        status = core.status(agent)
        silent = max(0.0, now - agent.last_seen)
        if status == "alive" and silent > settings.sleep_max + LATE_SLACK:
            status = "late"
        out.append({**agent_view(agent), "status": status, "silent_s": round(silent, 1)})
    return sorted(out, key=lambda a: (a["status"] != "alive", a["host"], a["paw"]))


def sensor(st: ServerState) -> dict[str, Any]:
    """``GET /api/v2/sensor`` plus each source's events per second over the last minute."""
    summary = st.records.telemetry_summary()
    now = time.time()
    recent = Counter((ev.source, ev.host) for ev in st.store.events(since=now - RATE_WINDOW))
    for src in summary["sources"]:
        src["events_per_s"] = round(recent.get((src["source"], src["host"]), 0) / RATE_WINDOW, 2)
    summary["window_s"] = RATE_WINDOW
    return summary


def running_operations(st: ServerState) -> list[dict[str, Any]]:
    service = st.core.operations
    with service.lock:
        live = [operation_view(op, chain=False) for op in service.operations.values()]
    for op in live:
        total = op["links_total"]
        op["percent"] = round(100 * op["links_finished"] / total) if total else 0
    return live


def dashboard(st: ServerState, rounds: Rounds) -> dict[str, Any]:
    return {
        "agents": agents(st),
        "operations": running_operations(st),
        "rounds": rounds.latest_pair(),
        "sensor": sensor(st),
    }


# -- content ------------------------------------------------------------------------------------------------
def _matches(query: str, *fields: str | None) -> bool:
    q = query.strip().lower()
    return not q or any(q in (f or "").lower() for f in fields)


def content(st: ServerState, q: str = "", tactic: str = "", technique: str = "") -> dict[str, Any]:
    """Abilities and adversaries whose name, id, technique or tactic contain ``q`` (and, when given, of that
    tactic and technique, a parent technique taking its sub-techniques along)."""
    library = st.content.library
    stored = {(kind, item_id) for kind, item_id, _ in st.store.content()}
    abilities = []
    for ability in library.abilities.values():
        if tactic and ability.tactic != tactic:
            continue
        if technique and not (ability.technique_id or "").upper().startswith(technique.strip().upper()):
            continue
        if not _matches(
            q, ability.name, ability.id, ability.technique_id, ability.technique_name, ability.tactic
        ):
            continue
        abilities.append(
            {
                "ability_id": ability.id,
                "name": ability.name,
                "tactic": ability.tactic,
                "technique_id": ability.technique_id,
                "technique_name": ability.technique_name,
                "safety": None if ability.safety is None else str(ability.safety),
                "platforms": sorted({e.platform for e in ability.executors}),
                "editable": ("ability", ability.id) in stored,
            }
        )
    abilities.sort(key=lambda a: (a["tactic"] or "", a["technique_id"] or "", a["name"] or ""))
    adversaries = []
    for adversary in library.adversaries.values():
        steps = [library.abilities.get(a) for a in adversary.atomic_ordering]
        techniques = {s.technique_id for s in steps if s is not None and s.technique_id}
        tactics = {s.tactic for s in steps if s is not None and s.tactic}
        if tactic and tactic not in tactics:
            continue
        if technique and not any(t.upper().startswith(technique.strip().upper()) for t in techniques):
            continue
        if not _matches(q, adversary.name, adversary.id, adversary.description, *techniques, *tactics):
            continue
        adversaries.append(
            {
                "adversary_id": adversary.id,
                "name": adversary.name,
                "description": adversary.description,
                "abilities": len(adversary.atomic_ordering),
                "techniques": len(techniques),
                "editable": ("adversary", adversary.id) in stored,
            }
        )
    adversaries.sort(key=lambda a: str(a["name"]).lower())
    tactics_all = sorted({a.tactic for a in library.abilities.values() if a.tactic})
    return {
        "query": {"q": q, "tactic": tactic, "technique": technique},
        "abilities": abilities,
        "adversaries": adversaries,
        "tactics": tactics_all,
        "totals": {"abilities": len(library.abilities), "adversaries": len(library.adversaries)},
    }


def content_item(st: ServerState, kind: str, item_id: str) -> dict[str, Any] | None:
    library = st.content.library
    if kind == "ability":
        ability = library.abilities.get(item_id)
        return None if ability is None else ability_view(ability)
    adversary = library.adversaries.get(item_id)
    return None if adversary is None else adversary_view(adversary)


# -- operations ---------------------------------------------------------------------------------------------
def operations(st: ServerState) -> list[dict[str, Any]]:
    """Every operation, newest first, as ``GET /api/v2/operations`` shows it (without the links)."""
    out = [
        read_operation(st, r.id, lambda op: operation_view(op, chain=False)) for r in st.store.operations()
    ]
    return list(reversed(out))


def _alerts_by_link(st: ServerState, roots: dict[str, str], since: float) -> dict[str, int]:
    """Alerts so far whose process lineage holds a link's process (the live view of validation's rule)."""
    if not roots:
        return {}
    counts: Counter[str] = Counter()
    for alert in st.store.alerts(since=since):
        ids = set(alert.lineage)
        for ev in alert.events:
            ids.update(ev.lineage)
        for entity_id in ids & roots.keys():
            counts[roots[entity_id]] += 1
    return dict(counts)


def operation_page(st: ServerState, operation_id: str) -> dict[str, Any]:
    """``GET /api/v2/operations/{id}`` with each link's alerts so far, and what waits for approval."""

    def shape(op: Operation) -> tuple[dict[str, Any], dict[str, str]]:
        view = operation_view(op, chain=False)
        view["links"] = [link_view(lk) for lk in op.links]
        return view, {lk.entity_id: lk.id for lk in op.links if lk.entity_id}

    view, roots = read_operation(st, operation_id, shape)
    alerts = _alerts_by_link(st, roots, view["created_at"])
    for lk in view["links"]:
        lk["alerts_so_far"] = alerts.get(lk["id"], 0)
        out = (lk["stdout"] or "") + (("\n" + lk["stderr"]) if lk["stderr"] else "")
        lk["output_text"] = out[:OUTPUT_SHOWN]
        lk["output_cut"] = len(out) > OUTPUT_SHOWN
    view["waiting"] = sum(1 for lk in view["links"] if lk["status"] == int(LinkStatus.PAUSE))
    view["alerts_so_far"] = sum(alerts.values())
    total = view["links_total"]
    view["percent"] = round(100 * view["links_finished"] / total) if total else 0
    view["live"] = st.core.operations.get(operation_id) is not None
    view["settling"] = not view["live"] and _settling(st, view["finished_at"])
    return view


def _settling(st: ServerState, finished_at: float | None) -> bool:
    """Whether alerts for a finished operation may still be on their way (see ``SETTLE_GRACE``)."""
    if finished_at is None or time.time() - finished_at >= SETTLE_GRACE:
        return False
    newest = st.store.newest_event_at()
    return newest is None or newest < finished_at + SETTLE_MARGIN


def start_form(st: ServerState) -> dict[str, Any]:
    from assay.api._content import planner_view
    from assay.emulation import PLANNERS

    groups = Counter(a.group for a in st.core.agents.values())
    library = st.content.library
    return {
        "adversaries": sorted(
            [
                {"adversary_id": a.id, "name": a.name, "abilities": len(a.atomic_ordering)}
                for a in library.adversaries.values()
            ],
            key=lambda a: str(a["name"]).lower(),
        ),
        "groups": [{"group": g, "agents": n} for g, n in sorted(groups.items())],
        "planners": [planner_view(cls) for cls in PLANNERS.values()],
        "safety": ["safe", "disruptive", "destructive"],
        # A sandboxed operation plans links only for agents running in a sandbox (``assay agent --sandbox``).
        "sandboxed_agents": sum(1 for a in st.core.agents.values() if a.sandbox),
    }


# -- alerts and rules ---------------------------------------------------------------------------------------
def alerts(st: ServerState, limit: int = ALERTS_SHOWN) -> dict[str, Any]:
    """The newest alerts, each with its process lineage named by executable where the sensor saw it."""
    from assay.events import alert_to_dict

    found = st.store.alerts()
    recent = list(reversed(found[-limit:]))
    ids = {e for a in recent for e in a.lineage}
    names: dict[str, str] = {}
    if ids:
        for ev in st.store.events(entity_ids=sorted(ids), action="exec"):
            exe = ev.get("process.executable")
            if ev.entity_id and exe:
                names.setdefault(ev.entity_id, str(exe))
    out = []
    for alert in recent:
        view = alert_to_dict(alert)
        view.pop("events", None)
        view["lineage_named"] = [{"entity_id": e, "executable": names.get(e)} for e in alert.lineage]
        out.append(view)
    return {"total": len(found), "shown": len(out), "alerts": out}


def rules(st: ServerState, engine: Any) -> dict[str, Any]:
    """``GET /api/v2/rules`` with each rule's alerts stored (raised and suppressed), and every allowlist
    entry with the alerts it suppressed."""
    raised: Counter[str] = Counter()
    suppressed: Counter[str] = Counter()
    by_entry: Counter[str] = Counter()
    for alert in st.store.alerts():
        if alert.suppressed_by is not None:
            suppressed[alert.rule_id] += 1
            by_entry[alert.suppressed_by.entry_id] += 1
        else:
            raised[alert.rule_id] += 1
    rule_rows = []
    for info in engine.rules:
        row = info.to_dict()
        row["hits"] = raised.get(info.id, 0)
        row["suppressed"] = suppressed.get(info.id, 0)
        rule_rows.append(row)
    rule_rows.sort(key=lambda r: (-r["hits"], not r["supported"], r["title"].lower()))
    entries = [
        {
            "id": e.id,
            "reason": e.reason,
            "rules": list(e.rules),
            "criteria": {k: list(v) for k, v in e.criteria.items()},
            "file": None if e.source is None else str(e.source),
            "suppressed": by_entry.get(e.id, 0),
        }
        for e in engine.allowlist.entries
    ]
    return {
        "rules": rule_rows,
        "supported": sum(1 for r in rule_rows if r["supported"]),
        "total": len(rule_rows),
        "allowlist": entries,
    }
