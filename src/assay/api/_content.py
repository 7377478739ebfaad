"""REST API v2 routes for content: abilities, adversaries, fact sources, planners and obfuscators.

Content from files (built-ins, ``--content``) is read-only here: change the file. Content created through the
API is parsed by the same loaders as YAML files (so it obeys the same rules and errors name the field), stored
in the database, and loaded again at every start (:func:`load_stored_content`).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Body, HTTPException, Response
from starlette.concurrency import run_in_threadpool

from assay.api._views import ability_view, adversary_view, objective_view
from assay.content import (
    BASIC_SOURCE,
    BASIC_SOURCE_ID,
    Ability,
    Adversary,
    FactSource,
    Library,
    PlannerDefinition,
    YMap,
    load_yaml,
    parse_ability,
    parse_adversary,
    parse_source,
)
from assay.emulation import OBFUSCATORS, PLANNERS, planner_class
from assay.errors import ContentError, ErrorCollector

if TYPE_CHECKING:
    from assay.api._state import ServerState
    from assay.storage import Store

_KINDS = ("ability", "adversary", "source")

# Where a response differs from what Caldera would answer, it carries ``X-Assay-Differs`` naming the
# difference and its section of docs/caldera-differences.md (which lists every difference).
DIFFERENCES: dict[str, str] = {
    "operation-defaults": "jitter defaults to 0/0 and only abilities labelled safe run unless max_safety "
    "opts in",
    "file-content": "content loaded from files is read-only through the API",
    "planners": "planners Assay does not implement are listed with runs_as null and cannot start operations",
    "objectives": "objectives are read-only through the API (they come from content files)",
    "agent-patch": "sleep and watchdog are validated (Caldera accepts negative values)",
    "executor-change": "executor_change is set through PATCH /api/v2/agents/{paw} "
    "(Caldera sets it server-side only)",
}


def differs(response: Response, key: str) -> None:
    response.headers["X-Assay-Differs"] = f"{DIFFERENCES[key]}; see docs/caldera-differences.md#{key}"


# Characters JSON leaves as they are but a YAML stream may not hold (or reads as line breaks: NEL, U+2028,
# U+2029); inside a JSON string, the only place they can be, YAML's \uXXXX escape gives them back.
# Other non-ASCII text stays text: an escaped surrogate pair would be read by YAML as two lone surrogates.
_YAML_UNPRINTABLE = re.compile("[\x7f-\x9f\u2028\u2029\ufffe\uffff]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _node(data: Any, where: str) -> YMap:
    """JSON is YAML: parse it with the line-keeping loader so errors name a line and a field."""
    try:
        node = load_yaml(
            _YAML_UNPRINTABLE.sub(_escape, json.dumps(data, indent=2, ensure_ascii=False)), where
        )
    except RecursionError as exc:
        raise ContentError("nested too deeply", None) from exc
    if not isinstance(node, YMap):
        raise ContentError("expected a JSON object", None)
    return node


def parse_item(kind: str, data: Any, where: str, errors: ErrorCollector) -> Ability | Adversary | FactSource:
    node = _node(data, where)
    if kind == "ability":
        return parse_ability(node, where, errors)
    if kind == "adversary":
        return parse_adversary(node, where, errors)
    return parse_source(node, where, errors)


def _add(library: Library, item: Ability | Adversary | FactSource) -> None:
    if isinstance(item, Ability):
        library.abilities[item.id] = item
    elif isinstance(item, Adversary):
        library.adversaries[item.id] = item
    else:
        library.sources[item.id] = item


def load_stored_content(store: Store, library: Library, errors: ErrorCollector) -> int:
    """Add content created through the API (stored in the database) to the library; returns how many."""
    count = 0
    for kind, item_id, data in store.content():
        with errors.capture():
            _add(library, parse_item(kind, data, f"database:{kind}/{item_id}", errors))
            count += 1
    return count


def _is_stored(store: Store, kind: str, item_id: str) -> bool:
    return any(i == item_id for _, i, _ in store.content(kind))


def _id_key(kind: str) -> str:
    return {"ability": "ability_id", "adversary": "adversary_id", "source": "id"}[kind]


def save_item(
    st: ServerState, kind: str, data: dict[str, Any], item_id: str | None, *, replace: bool
) -> dict[str, Any]:
    """Parse ``data`` with the YAML loaders, store it and add it to the library; its API view (with any
    warnings). Content from files is not changed here (409): change the file."""
    library = st.content.library
    tables: dict[str, dict[str, Any]] = {
        "ability": library.abilities,
        "adversary": library.adversaries,
        "source": library.sources,
    }
    views = {"ability": ability_view, "adversary": adversary_view, "source": source_view}
    if item_id is not None:
        data = {**data, _id_key(kind): item_id}
        if kind == "ability":
            data.pop("id", None)
    elif not (data.get(_id_key(kind)) or data.get("id")):
        data = {**data, _id_key(kind): str(uuid.uuid4())}  # as Caldera: a new item without an id gets one
    errors = ErrorCollector()
    try:
        item = parse_item(kind, data, f"request:{kind}", errors)
    except ContentError as exc:
        raise HTTPException(400, detail=str(exc)) from exc
    known = tables[kind].get(item.id)
    stored = _is_stored(st.store, kind, item.id)
    builtin = known is BASIC_SOURCE  # Caldera's `basic` may be edited; the edit is stored like any source
    if known is not None and not stored and not builtin:
        where = getattr(known, "origin", None)
        raise HTTPException(409, detail=f"{kind} {item.id} comes from {where}; change that file instead")
    if known is not None and not replace and not builtin:
        raise HTTPException(409, detail=f"{kind} {item.id} exists; PUT or PATCH it")
    st.store.save_content(kind, item.id, data)
    _add(library, item)
    view = views[kind](item)  # type: ignore[operator]
    if errors.warnings:
        view["warnings"] = [str(w) for w in errors.warnings]
    return dict(view)


def content_router(st: ServerState) -> APIRouter:
    router = APIRouter(tags=["content"])
    library = st.content.library
    tables: dict[str, dict[str, Any]] = {
        "ability": library.abilities,
        "adversary": library.adversaries,
        "source": library.sources,
    }
    views = {"ability": ability_view, "adversary": adversary_view, "source": source_view}

    def upsert(kind: str, data: dict[str, Any], item_id: str | None, *, replace: bool) -> dict[str, Any]:
        return save_item(st, kind, data, item_id, replace=replace)

    def get_one(kind: str, item_id: str) -> Any:
        item = tables[kind].get(item_id)
        if item is None:
            raise HTTPException(404, detail=f"no {kind} {item_id!r}")
        return item

    for kind, plural in (("ability", "abilities"), ("adversary", "adversaries"), ("source", "sources")):

        def bind(kind: str = kind, plural: str = plural) -> None:
            @router.get(f"/{plural}", name=f"list {plural}")
            def list_all() -> list[dict[str, Any]]:
                return [views[kind](i) for i in tables[kind].values()]  # type: ignore[operator]

            @router.get(f"/{plural}/{{item_id}}", name=f"get {kind}")
            def get(item_id: str) -> dict[str, Any]:
                return dict(views[kind](get_one(kind, item_id)))  # type: ignore[operator]

            @router.post(f"/{plural}", name=f"create {kind}")
            async def create(body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
                return await run_in_threadpool(upsert, kind, body, None, replace=False)

            @router.put(f"/{plural}/{{item_id}}", name=f"create or replace {kind}")
            async def put(item_id: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
                return await run_in_threadpool(upsert, kind, body, item_id, replace=True)

            @router.patch(f"/{plural}/{{item_id}}", name=f"update {kind}")
            async def patch(item_id: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
                get_one(kind, item_id)
                old = next((d for _, i, d in st.store.content(kind) if i == item_id), None)
                if old is None and tables[kind].get(item_id) is BASIC_SOURCE:
                    old = source_view(BASIC_SOURCE)
                if old is None:
                    raise HTTPException(
                        409, detail=f"{kind} {item_id} comes from a file; change that file instead"
                    )
                return await run_in_threadpool(upsert, kind, {**old, **body}, item_id, replace=True)

            @router.delete(f"/{plural}/{{item_id}}", name=f"delete {kind}", status_code=204)
            def delete(item_id: str) -> None:
                item = get_one(kind, item_id)
                if not st.store.delete_content(kind, item_id):
                    where = getattr(item, "origin", None) or "a file"
                    raise HTTPException(409, detail=f"{kind} {item_id} comes from {where}; remove it there")
                tables[kind].pop(item_id, None)
                if kind == "source" and item_id == BASIC_SOURCE_ID:
                    tables[kind][item_id] = BASIC_SOURCE  # Caldera always has `basic`

        bind()

    def all_planners() -> list[dict[str, Any]]:
        """Assay's planners, then every loaded definition not already listed under the same id."""
        out = [planner_view(cls) for cls in PLANNERS.values()]
        listed = {p["id"] for p in out}
        for definition in library.planners.values():
            if definition.id.removesuffix(".yml") not in listed:
                out.append(definition_view(definition))
        return out

    @router.get("/planners")
    def planners(response: Response) -> list[dict[str, Any]]:
        differs(response, "planners")
        return all_planners()

    @router.get("/planners/{planner_id}")
    def planner_one(planner_id: str, response: Response) -> dict[str, Any]:
        differs(response, "planners")
        for view in all_planners():
            if planner_id in (view["id"], f"{view['id']}.yml", view["name"]):
                return view
        definition = library.planner_definition(planner_id)
        if definition is not None:
            return definition_view(definition)
        raise HTTPException(404, detail=f"no planner {planner_id!r}")

    @router.get("/objectives")
    def objectives(response: Response) -> list[dict[str, Any]]:
        differs(response, "objectives")
        return [objective_view(o) for o in library.objectives.values()]

    @router.get("/objectives/{objective_id}")
    def objective_one(objective_id: str, response: Response) -> dict[str, Any]:
        differs(response, "objectives")
        try:
            return objective_view(library.objective(objective_id))
        except KeyError as exc:
            raise HTTPException(404, detail=f"no objective {objective_id!r}") from exc

    @router.get("/obfuscators")
    def obfuscators() -> list[dict[str, Any]]:
        return [
            {"name": o.name, "description": o.description, "module": f"assay.emulation.obfuscators.{o.name}"}
            for o in OBFUSCATORS.values()
        ]

    return router


def planner_view(cls: Any) -> dict[str, Any]:
    return {
        "id": cls.id,
        "name": cls.name,
        "description": cls.description,
        "module": f"assay.emulation.planners.{cls.name}",
        "params": {},
        "stopping_conditions": [],
        "ignore_enforcement_modules": [],
        "allow_repeatable_abilities": False,
        "plugin": "assay",
        "runs_as": cls.name,
    }


def definition_view(definition: PlannerDefinition) -> dict[str, Any]:
    """A loaded planner definition: Caldera's shape, ``runs_as`` naming the Assay planner (null: none)."""
    runs_as = planner_class(definition.runs_as).name if definition.runs_as else None
    return {
        "id": definition.id.removesuffix(".yml"),
        "name": definition.name,
        "description": definition.description,
        "module": definition.module,
        "params": dict(definition.params),
        "stopping_conditions": [{trait: value} for trait, value in definition.stopping_conditions],
        "ignore_enforcement_modules": list(definition.ignore_enforcement_modules),
        "allow_repeatable_abilities": definition.allow_repeatable_abilities,
        "plugin": definition.plugin or "stockpile",
        "runs_as": runs_as,
        "origin": str(definition.origin) if definition.origin else None,
    }


def source_view(source: FactSource) -> dict[str, Any]:
    return {
        "id": source.id,
        "name": source.name,
        "facts": [
            {"trait": f.trait, "name": f.trait, "value": f.value, "score": f.score} for f in source.facts
        ],
        "rules": [{"action": r.action.value, "trait": r.trait, "match": r.match} for r in source.rules],
        "relationships": [
            {
                "source": {"trait": r.source[0], "value": r.source[1]},
                "edge": r.edge,
                "target": None if r.target is None else {"trait": r.target[0], "value": r.target[1]},
                "score": r.score,
            }
            for r in source.relationships
        ],
        "adjustments": [
            {"ability_id": a.ability_id, "trait": a.trait, "value": a.value, "offset": a.offset}
            for a in source.adjustments
        ],
        "plugin": source.plugin or "assay",
    }
