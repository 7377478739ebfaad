"""REST API v2 routes for facts and relationships, in Caldera's shapes (``{"found"|"added"|"updated"|
"removed": [...]}``, criteria in the query string or the JSON body, PATCH ``{criteria, updates}``).

A fact whose ``source`` is a live operation goes into that operation at once (and planning takes it into
account); otherwise it is stored as it is. Facts without ``source`` are global, as in Caldera: stored and
listed, never used by an operation.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Body, HTTPException, Request

from assay.emulation import Fact, OriginType, Relationship
from assay.emulation._report import fact_display

if TYPE_CHECKING:
    from assay.api._state import ServerState

_FACT_KEYS = {
    "trait",
    "name",
    "value",
    "source",
    "origin_type",
    "score",
    "technique_id",
    "collected_by",
    "links",
}


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise HTTPException(400, detail=f"'{field}' must be an integer")
    try:
        return int(value)
    except ValueError as exc:
        raise HTTPException(400, detail=f"'{field}' must be an integer") from exc


def _relationship_criteria(criteria: dict[str, Any]) -> dict[str, Any]:
    unknown = set(criteria) - {"source", "target", "edge", "origin"}
    if unknown:
        raise HTTPException(400, detail=f"unknown relationship criteria: {', '.join(sorted(unknown))}")
    for end in ("source", "target"):
        if end in criteria and not isinstance(criteria[end], dict):
            raise HTTPException(400, detail=f"'{end}' must be {{trait, value}}")
    return criteria


def _criteria(request: Request, body: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = dict(request.query_params)
    if body:
        out.update(body)
    return out


def fact_matches(op_id: str | None, fact: Fact, criteria: dict[str, Any]) -> bool:
    for key, wanted in criteria.items():
        if wanted is None:
            continue
        if key in ("trait", "name"):
            if fact.trait != wanted:
                return False
        elif key == "value":
            if fact.value != str(wanted):
                return False
        elif key == "source":
            if str(wanted) not in (fact.source, op_id or ""):
                return False
        elif key == "origin_type":
            if str(wanted).upper() not in (fact.origin_type.name, str(int(fact.origin_type))):
                return False
        elif key == "score":
            if str(fact.score) != str(wanted):
                return False
        elif key == "technique_id":
            if fact.technique_id != wanted:
                return False
        elif key in ("collected_by", "links"):
            values = wanted if isinstance(wanted, list) else [wanted]
            if not set(map(str, values)) <= set(getattr(fact, key)):
                return False
    return True


def _end(data: Any, field: str) -> tuple[str, str]:
    if not isinstance(data, dict) or not data.get("trait") or data.get("value") is None:
        raise HTTPException(400, detail=f"'{field}' must be {{trait, value}}")
    return str(data["trait"]), str(data["value"]).strip()


def relationship_matches(op_id: str | None, rel: Relationship, criteria: dict[str, Any]) -> bool:
    for key, wanted in criteria.items():
        if wanted is None:
            continue
        if key in ("source", "target") and isinstance(wanted, dict):
            end = rel.source if key == "source" else rel.target
            if end is None:
                return False
            if "trait" in wanted and end[0] != wanted["trait"]:
                return False
            if "value" in wanted and end[1] != str(wanted["value"]):
                return False
        elif (key == "edge" and rel.edge != wanted) or (
            key == "origin" and str(wanted) not in (rel.origin, op_id or "")
        ):
            return False
    return True


def relationship_display(op_id: str | None, rel: Relationship) -> dict[str, Any]:
    return {
        "source": {"trait": rel.source[0], "value": rel.source[1]},
        "edge": rel.edge,
        "target": None if rel.target is None else {"trait": rel.target[0], "value": rel.target[1]},
        "score": rel.score,
        "origin": rel.origin or op_id,
        "operation_id": op_id,
    }


def knowledge_router(st: ServerState) -> APIRouter:
    router = APIRouter(tags=["facts"])
    service = st.core.operations

    def all_facts(criteria: dict[str, Any]) -> list[tuple[str | None, Fact]]:
        unknown = set(criteria) - _FACT_KEYS
        if unknown:
            raise HTTPException(400, detail=f"unknown fact criteria: {', '.join(sorted(unknown))}")
        return [(o, f) for o, f in st.store.facts(any_operation=True) if fact_matches(o, f, criteria)]

    @router.get("/facts")
    def get_facts(request: Request) -> dict[str, Any]:
        return {"found": [fact_display(f) for _, f in all_facts(_criteria(request, None))]}

    @router.get("/facts/{operation_id}")
    def get_operation_facts(operation_id: str) -> dict[str, Any]:
        if st.store.operation(operation_id) is None:
            raise HTTPException(404, detail=f"no operation {operation_id!r}")
        return {"found": [fact_display(f) for _, f in st.store.facts(operation_id)]}

    @router.post("/facts")
    def add_fact(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        trait, value = body.get("trait") or body.get("name"), body.get("value")
        if not trait or value is None:
            raise HTTPException(400, detail="a fact needs 'trait' and 'value'")
        score = body.get("score", 1)
        if not isinstance(score, int) or isinstance(score, bool):
            raise HTTPException(400, detail="'score' must be an integer")
        source = str(body.get("source") or "")
        fact = Fact(
            str(trait),
            str(value).strip(),
            score,
            OriginType.USER,
            source=source or "*",
            technique_id=str(body.get("technique_id") or ""),
            created_at=time.time(),
        )
        if source and service.get(source) is not None:
            service.add_facts(source, [fact])
        else:
            op_id = source if source and st.store.operation(source) is not None else None
            st.store.save_facts(op_id, [fact])
        return {"added": [fact_display(fact)]}

    def _change(criteria: dict[str, Any], updates: dict[str, Any] | None) -> list[Fact]:
        if not criteria:
            raise HTTPException(400, detail="criteria must not be empty")
        matched = all_facts(criteria)
        out: list[Fact] = []
        for op_id, old in matched:
            new: Fact | None = None
            if updates is not None:
                new = Fact(
                    str(updates.get("trait", old.trait)),
                    str(updates.get("value", old.value)).strip(),
                    _int(updates.get("score", old.score), "updates.score"),
                    old.origin_type,
                    old.source,
                    list(old.links),
                    list(old.collected_by),
                    old.technique_id,
                    old.created_at,
                )
            if op_id is not None and service.get(op_id) is not None:
                service.edit_facts(op_id, [old.key], [new] if new else [])
            elif new is not None:
                st.store.save_facts(op_id, [new])
            if new is None or new.key != old.key:
                st.store.delete_facts([(op_id, old)])
            out.append(new or old)
        return out

    @router.patch("/facts")
    def update_facts(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        criteria, updates = body.get("criteria"), body.get("updates")
        if not isinstance(criteria, dict) or not isinstance(updates, dict):
            raise HTTPException(400, detail="Need a 'criteria' to match on and 'updates' to apply.")
        bad = set(updates) - {"trait", "value", "score"}
        if bad:
            raise HTTPException(400, detail=f"these fields cannot be updated: {', '.join(sorted(bad))}")
        return {"updated": [fact_display(f) for f in _change(criteria, updates)]}

    @router.delete("/facts")
    def delete_facts(request: Request, body: dict[str, Any] | None = Body(None)) -> dict[str, Any]:  # noqa: B008
        return {"removed": [fact_display(f) for f in _change(_criteria(request, body), None)]}

    # -- relationships -------------------------------------------------------------------------------------
    def all_relationships(criteria: dict[str, Any]) -> list[tuple[str | None, Relationship]]:
        _relationship_criteria(criteria)
        return [
            (o, r)
            for o, r in st.store.relationships(any_operation=True)
            if relationship_matches(o, r, criteria)
        ]

    @router.get("/relationships")
    def get_relationships(request: Request) -> dict[str, Any]:
        found = all_relationships(_criteria(request, None))
        return {"found": [relationship_display(o, r) for o, r in found]}

    @router.get("/relationships/{operation_id}")
    def get_operation_relationships(operation_id: str) -> dict[str, Any]:
        if st.store.operation(operation_id) is None:
            raise HTTPException(404, detail=f"no operation {operation_id!r}")
        return {"found": [relationship_display(o, r) for o, r in st.store.relationships(operation_id)]}

    @router.post("/relationships")
    def add_relationship(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        source = _end(body.get("source"), "source")
        target = _end(body["target"], "target") if body.get("target") is not None else None
        edge = body.get("edge")
        if target is not None and not edge:
            raise HTTPException(400, detail="a relationship with a 'target' needs an 'edge'")
        origin = str(body.get("origin") or "")
        rel = Relationship(
            source, None if edge is None else str(edge), target, _int(body.get("score", 1), "score"), origin
        )
        now = time.time()
        ends = [source] if target is None else [source, target]
        facts = [Fact(t, v, 1, OriginType.USER, source=origin or "*", created_at=now) for t, v in ends]
        if origin and service.get(origin) is not None:
            service.add_facts(origin, facts, [rel])
            return {"added": [relationship_display(origin, rel)]}
        op_id = origin if origin and st.store.operation(origin) is not None else None
        st.store.save_facts(op_id, facts, [rel])
        return {"added": [relationship_display(op_id, rel)]}

    @router.patch("/relationships")
    def update_relationships(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        criteria, updates = body.get("criteria"), body.get("updates")
        if not isinstance(criteria, dict) or not criteria or not isinstance(updates, dict):
            raise HTTPException(400, detail="Need a 'criteria' to match on and 'updates' to apply.")
        bad = set(updates) - {"edge", "score", "target"}
        if bad:
            raise HTTPException(400, detail=f"these fields cannot be updated: {', '.join(sorted(bad))}")
        out: list[dict[str, Any]] = []
        for op_id, old in all_relationships(criteria):
            target = old.target
            if "target" in updates:
                target = None if updates["target"] is None else _end(updates["target"], "updates.target")
            edge = updates.get("edge", old.edge)
            score = _int(updates.get("score", old.score), "updates.score")
            new = Relationship(old.source, None if edge is None else str(edge), target, score, old.origin)
            op = service.get(op_id) if op_id else None
            if op is not None:
                with service.lock:
                    op.knowledge.relationships.pop(old.key, None)
                    op.knowledge.relate(new)
            st.store.delete_relationships([(op_id, old)])
            st.store.save_facts(op_id, [], [new])
            out.append(relationship_display(op_id, new))
        return {"updated": out}

    @router.delete("/relationships")
    def delete_relationships(request: Request, body: dict[str, Any] | None = Body(None)) -> dict[str, Any]:  # noqa: B008
        criteria = _criteria(request, body)
        if not criteria:
            raise HTTPException(400, detail="criteria must not be empty")
        found = all_relationships(criteria)
        for op_id, rel in found:
            op = service.get(op_id) if op_id else None
            if op is not None:
                with service.lock:
                    op.knowledge.relationships.pop(rel.key, None)
        st.store.delete_relationships(found)
        return {"removed": [relationship_display(o, r) for o, r in found]}

    return router
