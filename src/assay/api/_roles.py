"""Who may call what: every API route declares the roles it serves with :func:`require`.

    @router.get("/alerts", dependencies=[require(Role.BLUE)])

- ``red`` runs operations and manages agents and content; ``blue`` owns rules, allowlists and telemetry and
  reads rounds and alerts; ``admin`` manages keys, the server config and reads the audit trail.
- ``admin`` passes every check: an admin can mint a key of any role, so refusing it a red route would be
  theatre, not least privilege.
- A request without a valid key gets a 401; a valid key of the wrong role gets a 403 that names the roles the
  route needs and the key's own.
- Fail closed: the router-level :meth:`Guard.authenticated` refuses everyone but ``admin`` on an ``/api/``
  route that declares no role, and ``tests/c2/test_roles.py`` walks the OpenAPI spec and fails on any such
  route. The roles a route takes are in its spec (``x-assay-roles``).

Key checks never block the event loop: see :class:`~assay.c2.KeyRing` (scrypt once per key in a worker
thread, then a keyed HMAC cache for :data:`~assay.c2._auth.CACHE_SECONDS`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from assay.c2 import KeyRing, Principal, Role

ROLES_FIELD = "x-assay-roles"  # where the OpenAPI spec says which roles a route serves
MAX_SECRET = 512
_NEEDS_KEY = "API key required: header 'KEY: <key>' or 'Authorization: Bearer <key>'"


def _secret(key: str | None, authorization: str | None) -> str | None:
    if key is not None:
        return key
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer":
            return token.strip()
    return None


class Guard:
    """Authenticates API requests (once per request) and checks roles; one per app."""

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys

    async def principal(self, request: Request, key: str | None, authorization: str | None) -> Principal:
        known = getattr(request.state, "assay_principal", None)
        if isinstance(known, Principal):
            return known
        secret = _secret(key, authorization)
        found: Principal | bool | None = None
        if secret and len(secret) <= MAX_SECRET:
            found = self.keys.cached(secret)
            if found is None:  # first use of this secret (or its cache entry expired): scrypt, off the loop
                found = await run_in_threadpool(self.keys.verify, secret, "api")
        if not isinstance(found, Principal) or found.kind != "api":
            raise HTTPException(401, detail=_NEEDS_KEY)
        request.state.assay_principal = found
        request.state.principal = found.label  # the edge layer's audit trail reads this
        return found

    async def authenticated(
        self,
        request: Request,
        key: Annotated[str | None, Header(alias="KEY")] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Principal:
        """Router-level: a valid key; on a route that declares no role, only ``admin`` (fail closed)."""
        principal = await self.principal(request, key, authorization)
        route = request.scope.get("route")
        if (
            isinstance(route, APIRoute)
            and declared_roles(request.app, route) is None
            and principal.role is not Role.ADMIN
        ):
            raise HTTPException(
                403, detail=f"{request.url.path} declares no role; only an admin key may call it"
            )
        return principal


def require(*roles: Role) -> Any:
    """The dependency that admits keys of ``roles`` (and ``admin``) to a route; use it in ``dependencies``."""
    allowed = frozenset(roles) | {Role.ADMIN}
    names = " or ".join(sorted(r.value for r in allowed))

    async def check(
        request: Request,
        key: Annotated[str | None, Header(alias="KEY")] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Principal:
        guard: Guard = request.app.state.assay_guard
        principal = await guard.principal(request, key, authorization)
        if principal.role not in allowed:
            raise HTTPException(
                403,
                detail=f"{request.method} {request.url.path} needs a {names} key; "
                f"key {principal.name!r} has the {principal.role.value} role",
            )
        return principal

    check.assay_roles = allowed  # type: ignore[attr-defined]  # read by route_roles()
    return Depends(check)


@dataclass(frozen=True, slots=True)
class RouteRoles:
    """One API route as served (prefix and router-level dependencies applied) and the roles it admits."""

    path: str
    methods: frozenset[str]
    roles: frozenset[Role] | None  # None: it declares none


def _calls(dependant: Dependant) -> Iterable[Callable[..., Any]]:
    stack = list(dependant.dependencies)
    while stack:
        sub = stack.pop()
        if sub.call is not None:
            yield sub.call
        stack.extend(sub.dependencies)


def _roles_of(dependant: Dependant) -> frozenset[Role] | None:
    found: frozenset[Role] | None = None
    for call in _calls(dependant):
        roles = getattr(call, "assay_roles", None)
        if roles is not None:  # every check must pass: the route admits what all of them admit
            found = roles if found is None else found & roles
    return found


def _served(app: FastAPI) -> Iterator[tuple[APIRoute, str, Iterable[str], Dependant]]:
    """Every API route with its served path and full dependency tree. FastAPI >= 0.160 includes routers
    lazily (their routes, with the prefix and the router-level dependencies, exist only as "effective
    contexts"); earlier versions copy them into ``app.routes``."""
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:
            for ctx in contexts():
                if isinstance(ctx.original_route, APIRoute) and ctx.dependant is not None:
                    yield ctx.original_route, ctx.path_format, ctx.methods, ctx.dependant
        elif isinstance(route, APIRoute):
            yield route, route.path_format, route.methods or (), route.dependant


def route_roles(app: FastAPI) -> list[RouteRoles]:
    """What every route admits (computed once per app; routes are not added after start)."""
    known: list[RouteRoles] | None = getattr(app.state, "assay_route_roles", None)
    if known is None:
        known = [
            RouteRoles(path, frozenset(methods), _roles_of(dep)) for _r, path, methods, dep in _served(app)
        ]
        by_route = {id(r): _roles_of(dep) for r, _p, _m, dep in _served(app)}
        app.state.assay_route_roles = known
        app.state.assay_roles_by_route = by_route
    return known


def declared_roles(app: FastAPI, route: APIRoute) -> frozenset[Role] | None:
    """The roles ``route`` (as found in a request's scope) admits, or ``None`` if it declares none."""
    route_roles(app)
    found: dict[int, frozenset[Role] | None] = app.state.assay_roles_by_route
    return found.get(id(route))


def document_roles(app: FastAPI) -> None:
    """Each route's roles in its OpenAPI operation (``x-assay-roles``; absent: the route declares none)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        spec = original()
        for served in route_roles(app):
            if served.roles is None:
                continue
            for method in served.methods:
                operation = spec.get("paths", {}).get(served.path, {}).get(method.lower())
                if operation is not None:
                    operation[ROLES_FIELD] = sorted(r.value for r in served.roles)
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
