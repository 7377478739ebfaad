"""The web UI's routes: HTML pages under ``/ui``, their JSON twins under ``/api/v2/ui``, and live updates
over server-sent events under ``/ui/stream``.

A page handler does three things: check the session and the role (:meth:`Web.session`), get its data from
the view function its JSON twin also returns (``_pages``, ``_rounds``), and render a template. Every POST
checks the session's CSRF token first. Blocking work (database reads, validation) runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import jinja2
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from assay.api._operations import OperationCreate, start_operation
from assay.api._roles import require
from assay.c2 import Principal, Role
from assay.emulation import LinkStatus
from assay.errors import AssayError
from assay.reports import render_html, render_layer, render_markdown
from assay.web import _pages as pages
from assay.web._editor import EditorResult, item_yaml, new_yaml, save_yaml
from assay.web._roles import allowed, role_of
from assay.web._rounds import OUTCOMES, Rounds
from assay.web._session import COOKIE, Session, Signer, anonymous, csrf_ok, logged_in, session_secret

if TYPE_CHECKING:
    from assay.api import ServerState
    from assay.api._rounds import RoundReports

# The round page's downloads besides report.json: name → (renderer of the report dict, media type).
REPORT_FILES: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "report.html": (render_html, "text/html; charset=utf-8"),
    "report.md": (render_markdown, "text/markdown; charset=utf-8"),
    "layer.json": (render_layer, "application/json"),
}

STREAM_PERIOD = 0.5  # seconds between checks of a live operation for changes
DASHBOARD_PERIOD = 2.0
HEARTBEAT = 15.0  # an SSE comment this often keeps proxies from closing an idle stream
STATIC = ("assay.js", "assay.css")
# Only this server's own script and stylesheet: no inline script or style, no framing by another page.
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"

NAV = (  # (path, label, role)
    ("/ui/", "Dashboard", "any"),
    ("/ui/content", "Content", "red"),
    ("/ui/operations", "Operations", "red"),
    ("/ui/rounds", "Rounds", "blue"),
    ("/ui/alerts", "Alerts", "blue"),
    ("/ui/rules", "Rules", "blue"),
)


class PageError(Exception):
    """A page cannot be shown: rendered as an HTML error page with this status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Redirect(Exception):
    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def _when(ts: float | None) -> str:
    return "" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _ago(ts: float | None) -> str:
    if ts is None:
        return "never"
    s = max(0.0, time.time() - ts)
    if s < 60:
        return f"{s:.0f} s ago"
    if s < 3600:
        return f"{s / 60:.0f} min ago"
    return f"{s / 3600:.1f} h ago"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("assay.web", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=_when, pct=_pct, ago=_ago, q=quote)
    env.globals.update(
        OUTCOMES=OUTCOMES,
        status_names={int(s): s.name.lower() for s in LinkStatus},
        PAUSE=int(LinkStatus.PAUSE),
    )
    return env


class Web:
    def __init__(self, st: ServerState, reports: RoundReports) -> None:
        self.st = st
        self.env = _environment()
        self.rounds = Rounds(st, reports)
        self._signer: Signer | None = None

    @property
    def signer(self) -> Signer:
        if self._signer is None:
            self._signer = Signer(session_secret(self.st.store))
        return self._signer

    # -- sessions ------------------------------------------------------------------------------------------
    def read_session(self, request: Request) -> tuple[Session, bool]:
        """The request's session (``True`` when it is new and must be set), logged out if its key is gone."""
        found = self.signer.load(request.cookies.get(COOKIE))
        if found is None:
            return anonymous(), True
        if found.principal is None:
            return found, False
        # The cookie names the key; its role is read from the key ring on every request (never from the
        # cookie), so a key deleted or given another role changes every session opened with it.
        current = next(
            (
                p
                for p in self.st.keys.principals()
                if (p.kind, p.name) == (found.principal.kind, found.principal.name)
            ),
            None,
        )
        if current is None:
            return anonymous(), True  # the key was deleted: so is every session opened with it
        return replace(found, principal=current), False

    def session(self, request: Request, need: str) -> Session:
        """A logged-in session whose key's role allows ``need``; otherwise to the login page, or a 403."""
        session, _ = self.read_session(request)
        if session.principal is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise Redirect("/ui/login?next=" + quote(target, safe=""))
        if not allowed(session.principal, need):
            raise PageError(403, f"the key {session.principal.name!r} may not see this (needs {need})")
        request.state.principal = f"{session.principal.kind}:{session.principal.name}"  # for the audit trail
        return session

    async def posted(self, request: Request, need: str) -> tuple[Session, dict[str, str]]:
        """A form POST: the session (as :meth:`session`) and the form, once its CSRF token checks out."""
        session = self.session(request, need)
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        if not csrf_ok(session, fields.get("csrf")):
            raise PageError(403, "the form's CSRF token is missing or stale: reload the page and try again")
        return session, fields

    def set_cookie(self, response: Response, request: Request, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            self.signer.dump(session),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
            max_age=None if session.principal is None else int(session.expires - time.time()),
        )

    # -- rendering -----------------------------------------------------------------------------------------
    def render(
        self, request: Request, template: str, session: Session, status: int = 200, **data: Any
    ) -> HTMLResponse:
        principal = session.principal
        nav = [(p, label) for p, label, need in NAV if allowed(principal, need)]
        html = self.env.get_template(template).render(
            request_path=request.url.path,
            nav=nav,
            principal=principal,
            role=role_of(principal),
            can=lambda need: allowed(principal, need),
            csrf=session.csrf,
            **data,
        )
        response = HTMLResponse(html, status_code=status)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = CSP
        return response

    def fragment(self, template: str, **data: Any) -> str:
        return self.env.get_template(template).render(**data)

    async def page(
        self, request: Request, need: str, template: str, build: Callable[[Session], dict[str, Any]]
    ) -> Response:
        """Check the session, build the page's data in a worker thread, render it."""
        try:
            session = self.session(request, need)
            data = await run_in_threadpool(build, session)
            return self.render(request, template, session, **data)
        except Redirect as r:
            return RedirectResponse(r.location, status_code=303)
        except PageError as exc:
            return self.error(request, exc.status, exc.message)
        except HTTPException as exc:
            return self.error(request, exc.status_code, str(exc.detail))
        except AssayError as exc:
            return self.error(request, 400, str(exc))

    async def download(self, request: Request, need: str, build: Callable[[], Response]) -> Response:
        """A file for the browser to save (no page around it): the session checked as for a page, the file
        built in a worker thread."""
        try:
            self.session(request, need)
        except Redirect as r:
            return RedirectResponse(r.location, status_code=303)
        except PageError as exc:
            return self.error(request, exc.status, exc.message)
        return await run_in_threadpool(build)

    def error(self, request: Request, status: int, message: str) -> HTMLResponse:
        session, _ = self.read_session(request)
        return self.render(request, "error.html", session, status=status, status_code=status, message=message)


def web_routers(st: ServerState, reports: RoundReports) -> tuple[APIRouter, APIRouter]:
    """The HTML router (mounted at ``/ui``) and the JSON twins (mounted under ``/api/v2`` behind the key)."""
    web = Web(st, reports)
    ui = APIRouter(prefix="/ui", include_in_schema=False)
    api = APIRouter(prefix="/ui", tags=["Assay: web UI views"])
    _session_routes(web, ui)
    _page_routes(web, ui)
    _action_routes(web, ui)
    _stream_routes(web, ui)
    _twin_routes(web, api)
    return ui, api


def _session_routes(web: Web, ui: APIRouter) -> None:
    @ui.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404, detail=f"no static file {name[:64]!r}")
        data = resources.files("assay.web").joinpath("static", name).read_bytes()
        kind = "text/javascript" if name.endswith(".js") else "text/css"
        return Response(data, media_type=kind, headers={"Cache-Control": "max-age=300"})

    @ui.get("/login")
    def login_form(request: Request, next: str = "/ui/") -> Response:
        session, new = web.read_session(request)
        response = web.render(request, "login.html", session, next=_safe_next(next), failed=None)
        if new:
            web.set_cookie(response, request, session)
        return response

    @ui.post("/login")
    async def login(request: Request) -> Response:
        session, _ = web.read_session(request)
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        target = _safe_next(fields.get("next", "/ui/"))
        if not csrf_ok(session, fields.get("csrf")):
            return web.render(
                request, "login.html", session, status=403, next=target,
                failed="the form expired (its CSRF token did not match): try again",
            )  # fmt: skip
        secret = fields.get("key", "").strip()
        found: Principal | bool | None = None
        if secret and len(secret) <= 512:
            found = web.st.keys.cached(secret)
            if found is None:
                found = await run_in_threadpool(web.st.keys.verify, secret, "api")
        if not isinstance(found, Principal) or found.kind != "api":
            return web.render(
                request, "login.html", session, status=401, next=target, failed="that is not a valid API key"
            )
        fresh = logged_in(found, time.time())
        request.state.principal = f"{found.kind}:{found.name}"
        response = RedirectResponse(target, status_code=303)
        web.set_cookie(response, request, fresh)
        return response

    @ui.post("/logout")
    async def logout(request: Request) -> Response:
        try:
            await web.posted(request, "any")
        except Redirect as r:
            return RedirectResponse(r.location, status_code=303)
        except PageError as exc:
            return web.error(request, exc.status, exc.message)
        response = RedirectResponse("/ui/login", status_code=303)
        web.set_cookie(response, request, anonymous())
        return response


def _safe_next(target: str) -> str:
    """Only a path of this UI: a login link must never send the browser elsewhere."""
    return target if target.startswith("/ui/") and not target.startswith("//") else "/ui/"


def _page_routes(web: Web, ui: APIRouter) -> None:
    st = web.st

    @ui.get("/")
    async def dashboard(request: Request) -> Response:
        return await web.page(
            request, "any", "dashboard.html", lambda s: {"d": pages.dashboard(st, web.rounds)}
        )

    @ui.get("/content")
    async def content(request: Request, q: str = "", tactic: str = "", technique: str = "") -> Response:
        return await web.page(
            request,
            "red",
            "content.html",
            lambda s: {"c": pages.content(st, q[:200], tactic[:64], technique[:32])},
        )

    @ui.get("/content/{kind}/new")
    async def content_new(request: Request, kind: str) -> Response:
        _kind(kind)
        return await web.page(
            request, "red", "editor.html",
            lambda s: {"kind": kind, "item_id": None, "text": new_yaml(st, kind), "result": None,
                       "editable": True, "item": None, "saved": False},
        )  # fmt: skip

    @ui.get("/content/{kind}/{item_id}")
    async def content_item(request: Request, kind: str, item_id: str, saved: str = "") -> Response:
        _kind(kind)

        def build(_s: Session) -> dict[str, Any]:
            item = pages.content_item(st, kind, item_id)
            if item is None:
                raise PageError(404, f"no {kind} {item_id[:64]!r}")
            text, editable = item_yaml(st, kind, item_id)
            return {"kind": kind, "item_id": item_id, "text": text, "result": None, "editable": editable,
                    "item": item, "saved": saved == "1"}  # fmt: skip

        return await web.page(request, "red", "editor.html", build)

    @ui.get("/operations")
    async def operations(request: Request) -> Response:
        return await web.page(
            request, "red", "operations.html",
            lambda s: {"ops": pages.operations(st), "form": pages.start_form(st), "error": None},
        )  # fmt: skip

    @ui.get("/operations/{operation_id}")
    async def operation(request: Request, operation_id: str) -> Response:
        return await web.page(
            request, "red", "operation.html", lambda s: {"op": pages.operation_page(st, operation_id)}
        )

    @ui.get("/rounds")
    async def rounds(request: Request) -> Response:
        def build(_s: Session) -> dict[str, Any]:
            listed = list(reversed(web.rounds.round_list()))
            return {"rounds": listed, "pair": web.rounds.latest_pair()}

        return await web.page(request, "blue", "rounds.html", build)

    @ui.get("/rounds/{round_id}")
    async def round_page(request: Request, round_id: str) -> Response:
        return await web.page(request, "blue", "round.html", lambda s: {"r": web.rounds.round_page(round_id)})

    @ui.get("/rounds/{round_id}/techniques/{technique_id}")
    async def technique(request: Request, round_id: str, technique_id: str) -> Response:
        return await web.page(
            request,
            "blue",
            "technique.html",
            lambda s: {"t": web.rounds.technique_page(round_id, technique_id)},
        )

    @ui.get("/rounds/{round_id}/compare")
    async def comparison(request: Request, round_id: str, other: str = "") -> Response:
        def build(_s: Session) -> dict[str, Any]:
            if not other:
                raise PageError(400, "choose a round to compare with ('other')")
            return {"cmp": web.rounds.comparison(round_id, other)}

        return await web.page(request, "blue", "compare.html", build)

    @ui.get("/rounds/{round_id}/report.json")
    async def report_json(request: Request, round_id: str) -> Response:
        def build() -> Response:
            return JSONResponse(
                web.rounds.round_report(round_id),
                headers={"Content-Disposition": f'attachment; filename="assay-round-{round_id[:36]}.json"'},
            )

        return await web.download(request, "blue", build)

    @ui.get("/rounds/{round_id}/{name}")
    async def report_file(request: Request, round_id: str, name: str) -> Response:
        """The round's report rendered (``assay.reports``): report.html, report.md or layer.json."""

        def build() -> Response:
            if name not in REPORT_FILES:
                return web.error(
                    request, 404, f"no {name[:40]!r} for a round (one of {', '.join(REPORT_FILES)})"
                )
            render, media = REPORT_FILES[name]
            body = render(web.rounds.round_report(round_id))
            text = body if isinstance(body, str) else json.dumps(body, indent=2)
            disposition = f'attachment; filename="assay-{round_id[:36]}-{name}"'
            return Response(text, media_type=media, headers={"Content-Disposition": disposition})

        return await web.download(request, "blue", build)

    @ui.get("/alerts")
    async def alerts(request: Request) -> Response:
        return await web.page(request, "blue", "alerts.html", lambda s: {"a": pages.alerts(st)})

    @ui.get("/rules")
    async def rules(request: Request) -> Response:
        return await web.page(
            request, "blue", "rules.html", lambda s: {"r": pages.rules(st, web.rounds.reports.engine())}
        )


def _kind(kind: str) -> None:
    if kind not in ("ability", "adversary"):
        raise HTTPException(
            404, detail=f"no content kind {kind[:32]!r} (there are 'ability' and 'adversary')"
        )


def _action_routes(web: Web, ui: APIRouter) -> None:
    st = web.st
    service = st.core.operations

    async def act(
        request: Request, need: str, work: Callable[[Session, dict[str, str]], Response]
    ) -> Response:
        try:
            session, fields = await web.posted(request, need)
            return await run_in_threadpool(work, session, fields)
        except Redirect as r:
            return RedirectResponse(r.location, status_code=303)
        except PageError as exc:
            return web.error(request, exc.status, exc.message)
        except HTTPException as exc:
            return web.error(request, exc.status_code, str(exc.detail))
        except AssayError as exc:
            return web.error(request, 400, str(exc))

    @ui.post("/operations")
    async def start(request: Request) -> Response:
        def work(session: Session, f: dict[str, str]) -> Response:
            body = {
                "name": f.get("name") or f"round {time.strftime('%Y-%m-%d %H:%M:%S')}",
                "adversary": {"adversary_id": f.get("adversary_id", "")},
                "planner": {"id": f.get("planner") or "atomic"},
                "group": f.get("group", ""),
                "autonomous": 0 if f.get("manual") == "on" else 1,
                "max_safety": f.get("max_safety") or "safe",
                "sandbox": f.get("sandbox") == "on",
            }
            try:
                parsed = OperationCreate.model_validate(body)
            except ValidationError as exc:
                raise PageError(422, "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
                )) from exc  # fmt: skip
            op = start_operation(st, parsed)
            return RedirectResponse(f"/ui/operations/{op.id}", status_code=303)

        return await act(request, "red", work)

    @ui.post("/operations/{operation_id}/state")
    async def set_state(request: Request, operation_id: str) -> Response:
        def work(session: Session, f: dict[str, str]) -> Response:
            state = f.get("state", "")
            if state not in ("paused", "running", "finished", "run_one_link"):
                raise PageError(
                    400, f"state must be paused, running, run_one_link or finished, not {state!r}"
                )
            if service.get(operation_id) is None:
                raise PageError(409, f"operation {operation_id} is not running")
            service.set_state(operation_id, state)
            return RedirectResponse(f"/ui/operations/{operation_id}", status_code=303)

        return await act(request, "red", work)

    @ui.post("/operations/{operation_id}/links/{link_id}")
    async def review(request: Request, operation_id: str, link_id: str) -> Response:
        def work(session: Session, f: dict[str, str]) -> Response:
            decision = f.get("decision", "")
            status = {"approve": LinkStatus.EXECUTE, "skip": LinkStatus.DISCARD}.get(decision)
            if status is None:
                raise PageError(400, f"decision must be 'approve' or 'skip', not {decision!r}")
            if service.get(operation_id) is None:
                raise PageError(409, f"operation {operation_id} is not running")
            service.review_link(operation_id, link_id, status=int(status), command=None)
            return RedirectResponse(f"/ui/operations/{operation_id}", status_code=303)

        return await act(request, "red", work)

    @ui.post("/content/{kind}")
    async def save(request: Request, kind: str) -> Response:
        _kind(kind)
        try:
            session, f = await web.posted(request, "red")
        except Redirect as r:
            return RedirectResponse(r.location, status_code=303)
        except PageError as exc:
            return web.error(request, exc.status, exc.message)
        text = f.get("yaml", "")
        item_id = f.get("item_id") or None
        result: EditorResult = await run_in_threadpool(save_yaml, st, kind, text, item_id)
        if result.ok and result.item_id:
            return RedirectResponse(f"/ui/content/{kind}/{quote(result.item_id)}?saved=1", status_code=303)
        item = pages.content_item(st, kind, item_id) if item_id else None
        return web.render(
            request, "editor.html", session, status=422, kind=kind, item_id=item_id, text=text,
            result=result, editable=True, item=item, saved=False,
        )  # fmt: skip


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _stream_routes(web: Web, ui: APIRouter) -> None:
    st = web.st

    async def stream(
        request: Request, period: float, build: Callable[[], tuple[dict[str, str], bool]]
    ) -> AsyncIterator[bytes]:
        """Send the regions built by ``build`` whenever they change; stop when ``build`` says it is done."""
        last: dict[str, str] = {}
        quiet = 0.0
        while not await request.is_disconnected():
            regions, done = await run_in_threadpool(build)
            changed = {k: v for k, v in regions.items() if last.get(k) != v}
            if changed:
                last.update(changed)
                quiet = 0.0
                yield _sse("update", changed)
            elif quiet >= HEARTBEAT:
                quiet = 0.0
                yield b": keep-alive\n\n"
            if done:
                yield _sse("done", {})
                return
            await asyncio.sleep(period)
            quiet += period

    def streaming(body: AsyncIterator[bytes]) -> StreamingResponse:
        return StreamingResponse(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @ui.get("/stream/operations/{operation_id}")
    async def operation_stream(request: Request, operation_id: str) -> Response:
        try:
            session = web.session(request, "red")
        except (Redirect, PageError):
            return JSONResponse({"error": "log in first"}, status_code=401)

        def build() -> tuple[dict[str, str], bool]:
            op = pages.operation_page(st, operation_id)
            ctx = {"op": op, "csrf": session.csrf, "can": lambda need: allowed(session.principal, need)}
            regions = {
                "op-links": web.fragment("_links.html", **ctx),
                "op-progress": web.fragment("_progress.html", **ctx),
                "op-controls": web.fragment("_controls.html", **ctx),
            }
            return regions, not (op["live"] or op["settling"])

        return streaming(stream(request, STREAM_PERIOD, build))

    @ui.get("/stream/dashboard")
    async def dashboard_stream(request: Request) -> Response:
        try:
            web.session(request, "any")
        except (Redirect, PageError):
            return JSONResponse({"error": "log in first"}, status_code=401)

        def build() -> tuple[dict[str, str], bool]:
            d = pages.dashboard(st, web.rounds)
            return {
                "dash-agents": web.fragment("_agents.html", d=d),
                "dash-operations": web.fragment("_operations_running.html", d=d),
                "dash-sensor": web.fragment("_sensor.html", d=d),
            }, False

        return streaming(stream(request, DASHBOARD_PERIOD, build))


def _twin_routes(web: Web, api: APIRouter) -> None:
    """The JSON of every page, from the same view functions (API key auth, like the rest of /api/v2)."""
    st = web.st
    # The same roles as the API the page summarises (see assay.api._roles): a twin never shows more.
    any_role, red, blue = [require(Role.RED, Role.BLUE)], [require(Role.RED)], [require(Role.BLUE)]

    @api.get("/dashboard", dependencies=any_role)
    def dashboard() -> dict[str, Any]:
        return pages.dashboard(st, web.rounds)

    @api.get("/content", dependencies=red)
    def content(q: str = "", tactic: str = "", technique: str = "") -> dict[str, Any]:
        return pages.content(st, q[:200], tactic[:64], technique[:32])

    @api.get("/operations/{operation_id}", dependencies=red)
    def operation(operation_id: str) -> dict[str, Any]:
        return pages.operation_page(st, operation_id)

    @api.get("/rounds/{round_id}", dependencies=blue)
    def round_page(round_id: str) -> dict[str, Any]:
        return web.rounds.round_page(round_id)

    @api.get("/rounds/{round_id}/techniques/{technique_id}", dependencies=blue)
    def technique(round_id: str, technique_id: str) -> dict[str, Any]:
        return web.rounds.technique_page(round_id, technique_id)

    @api.get("/rounds/{round_id}/compare/{other_id}", dependencies=blue)
    def comparison(round_id: str, other_id: str) -> dict[str, Any]:
        return web.rounds.comparison(round_id, other_id)

    @api.get("/alerts", dependencies=blue)
    def alerts() -> dict[str, Any]:
        return pages.alerts(st)

    @api.get("/rules", dependencies=blue)
    def rules() -> dict[str, Any]:
        return pages.rules(st, web.rounds.reports.engine())
