"""The server's outer ASGI layer: request size limits, Caldera's ``/beacon`` fast path, the API audit trail.

It wraps the FastAPI app and sees every request first:

- **Size limits.** A body larger than its path's limit gets a 413 before the app reads it (declared
  ``Content-Length``), or as soon as it passes the limit (chunked): hostile input never fills memory.
- **Enrolment of Caldera agents.** ``/enrol/<token>/<contact>`` is ``/<contact>`` with the enrolment token:
  Sandcat appends its contact paths to its ``-server`` URL, so ``-server http://HOST:PORT/enrol/<token>``
  makes every beacon and file transfer carry it. ``Authorization: Bearer <token>`` on ``/beacon`` works too.
  A wrong token is a 401 here; what an agent without one gets is the core's ``unenrolled`` policy.
- **``POST /beacon``** is answered here, without routing, dependency injection or validation models: it is
  the request every agent makes every few seconds, and the layers it skips cost more than the beacon itself
  (measured by ``bench/beacons.py``). It is off unless ``--caldera-compat``: then it says how to turn it on.
- **Audit.** Every state-changing API call (POST, PUT, PATCH, DELETE under ``/api/``, and the web UI's forms
  under ``/ui/``) is written to the audit trail once answered: the key that made it, the path, the status,
  and the id of what it created. That is how the trail says which key started an operation, whatever route
  started it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.concurrency import run_in_threadpool

from assay.c2 import AuditEntry, CalderaContact, KeyRing, Principal, Refused, invalid_unicode
from assay.c2._caldera import MAX_BEACON_BYTES
from assay.errors import AssayError, C2Error, StorageError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("assay.api")

DEFAULT_LIMIT = 1024 * 1024
LIMITS = (  # (path prefix, bytes): first match wins
    ("/beacon", MAX_BEACON_BYTES),
    ("/agent/results", 16 * 1024 * 1024),
    ("/file/upload", 64 * 1024 * 1024 + 64 * 1024),
    ("/api/v2/payloads", 256 * 1024 * 1024 + 64 * 1024),
    ("/api/v2/telemetry", 64 * 1024 * 1024),
)
ENROL_PREFIX = "/enrol/"
ENROLLED_STATE = "assay_enrolled"  # request.state: the request carried the enrolment token in its path
_AUDITED = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_AUDITED_PATHS = ("/api/", "/ui/")  # the REST API and the web UI's forms
_NOT_AUDITED = ("/api/v2/telemetry",)  # sensor data, not a command
_KEEP_REPLY = 64 * 1024  # the start of a reply kept to find the created resource's id


def limit_for(path: str) -> int:
    return next((size for prefix, size in LIMITS if path.startswith(prefix)), DEFAULT_LIMIT)


async def _json(send: Send, status: int, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": raw})


def error_body(exc: AssayError) -> dict[str, Any]:
    return {"error": str(exc), "details": exc.to_dict()}


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or ``None`` if it grew past ``limit`` (or the client left)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


class Edge:
    def __init__(
        self,
        app: ASGIApp,
        *,
        caldera: CalderaContact | None,
        audit: Callable[[AuditEntry], None],
        clock: Callable[[], float],
        keys: KeyRing | None = None,
    ) -> None:
        self.app = app
        self.caldera = caldera
        self.audit = audit
        self.clock = clock
        self.keys = keys

    async def _is_enrol_token(self, token: str) -> bool:
        if self.keys is None or not token or len(token) > 512:
            return False
        found = self.keys.cached(token)
        if found is None:  # first use (or expired): scrypt in a worker thread, never on the event loop
            found = await run_in_threadpool(self.keys.verify, token, "enrol")
        return isinstance(found, Principal) and found.kind == "enrol"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        enrolled = False
        if path.startswith(ENROL_PREFIX):
            token, _, rest = path[len(ENROL_PREFIX) :].partition("/")
            if not await self._is_enrol_token(token):
                await _json(
                    send, 401, {"error": f"wrong enrolment token in the path ({ENROL_PREFIX}<token>/...)"}
                )
                return
            path = "/" + rest
            scope = {**scope, "path": path, "raw_path": path.encode(), "state": {**scope.get("state", {})}}
            scope["state"][ENROLLED_STATE] = enrolled = True
        if path == "/beacon":
            if not enrolled:
                bearer = _bearer(scope)
                if bearer is not None:
                    if not await self._is_enrol_token(bearer):
                        await _json(send, 401, {"error": "wrong enrolment token (Authorization: Bearer)"})
                        return
                    enrolled = True
            await self._beacon(scope, receive, send, enrolled)
            return
        limit = limit_for(path)
        request_body = b""
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _json(
                send, 413, {"error": f"request body of {declared} bytes is over the {limit}-byte limit"}
            )
            return
        if scope.get("method") in _AUDITED and _is_json(scope):
            # Read here (within the limit, which also covers a chunked body), check, then replay to the app.
            body = await read_body(receive, limit)
            if body is None:
                await _json(send, 413, {"error": f"request body is over the {limit}-byte limit"})
                return
            where = _lone_surrogate(body)
            if where is not None:
                await _json(
                    send,
                    400,
                    {"error": f"{where}: not valid Unicode (a lone surrogate escape such as \\udc80)"},
                )
                return
            receive = _replay(body, receive)
            request_body = body
        elif declared is None and scope.get("method") in _AUDITED:
            body = await read_body(receive, limit)
            if body is None:
                await _json(send, 413, {"error": f"request body is over the {limit}-byte limit"})
                return
            receive = _replay(body, receive)
        if (
            scope.get("method") in _AUDITED
            and path.startswith(_AUDITED_PATHS)
            and not path.startswith(_NOT_AUDITED)
        ):
            await self._audited(scope, receive, send, request_body)
        else:
            await self.app(scope, receive, send)

    async def _beacon(self, scope: Scope, receive: Receive, send: Send, enrolled: bool) -> None:
        if self.caldera is None:
            await _json(
                send,
                404,
                {
                    "error": "Caldera's /beacon contact is off; start the server with "
                    "'assay serve --caldera-compat' to use Caldera agents (Assay's agent uses /agent/*)"
                },
            )
            return
        if scope.get("method") != "POST":
            await _json(send, 405, {"error": "/beacon takes POST (base64 of a JSON profile)"})
            return
        declared = _content_length(scope)
        if declared is not None and declared > MAX_BEACON_BYTES:
            await _json(send, 413, {"error": f"beacon of {declared} bytes is over {MAX_BEACON_BYTES} bytes"})
            return
        body = await read_body(receive, MAX_BEACON_BYTES)
        if body is None:
            await _json(send, 413, {"error": f"beacon is over {MAX_BEACON_BYTES} bytes"})
            return
        try:
            reply = await self.caldera.handle(body, enrolled)
        except Refused as exc:
            await _json(send, exc.status, error_body(exc))
            return
        except C2Error as exc:
            await _json(send, 400, error_body(exc))
            return
        except StorageError as exc:  # the database failed, not the agent: it may try again later
            log.error("beacon not recorded: %s", exc)
            await _json(send, 503, error_body(exc))
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(reply)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": reply})

    async def _audited(self, scope: Scope, receive: Receive, send: Send, request: bytes) -> None:
        status = 0
        kept = bytearray()

        async def tap(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                if len(kept) < _KEEP_REPLY:
                    kept.extend(message.get("body", b"")[: _KEEP_REPLY - len(kept)])
                if not message.get("more_body", False):
                    # Before the last bytes go out: whoever hears the answer finds the call in the trail.
                    await self._record(scope, status, bytes(kept), request)
            await send(message)

        await self.app(scope, receive, tap)

    async def _record(self, scope: Scope, status: int, reply: bytes, request: bytes) -> None:
        principal = (scope.get("state") or {}).get("principal")
        if principal is None:
            return  # refused before authentication (401): nothing was done by anyone
        entry = _api_entry(scope, status, reply, str(principal), self.clock())
        entries = [entry]
        approval = _link_review(entry, request)
        if approval is not None:
            entries.append(approval)
        try:
            for one in entries:
                await run_in_threadpool(self.audit, one)
        except AssayError as exc:  # the call is done; losing its audit row must at least be visible
            log.error("audit write failed for %s %s: %s", scope.get("method"), scope.get("path"), exc)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return b"json" in value.lower()
    return False


def _lone_surrogate(body: bytes) -> str | None:
    """Where a JSON body holds a lone surrogate; a regex finds candidates, so most bodies are never parsed."""
    if not _SURROGATE_ESCAPE.search(body):
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return None  # not JSON: the app says so, with its own message
    return invalid_unicode(parsed)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _api_entry(scope: Scope, status: int, reply: bytes, principal: str, now: float) -> AuditEntry:
    path: str = scope["path"]
    created: str | None = None
    if 200 <= status < 300 and reply[:1] == b"{":
        try:
            parsed = json.loads(reply)
        except ValueError:
            parsed = None  # a reply longer than what was kept: no id, the path still says what it was
        if isinstance(parsed, dict) and isinstance(parsed.get("id"), str):
            created = parsed["id"]
    parts = path.strip("/").split("/")
    operation_id = None
    paw = None
    link_id = None
    if parts[:3] == ["api", "v2", "operations"]:
        operation_id = parts[3] if len(parts) > 3 else created
        if len(parts) == 6 and parts[4] == "links":
            link_id = parts[5]
    if parts[:2] == ["ui", "operations"] and len(parts) > 2:
        operation_id = parts[2]
    if parts[:3] == ["api", "v2", "agents"] and len(parts) > 3:
        paw = parts[-1]
    return AuditEntry(
        at=now,
        kind="api",
        principal=principal,
        operation_id=operation_id,
        link_id=link_id,
        paw=paw,
        data={"method": scope.get("method"), "path": path, "status": status, "created": created},
    )


def _link_review(entry: AuditEntry, request: bytes) -> AuditEntry | None:
    """A link an operator approved, discarded or rewrote (``PATCH …/links/{id}``, answered 2xx): an
    ``approval`` row beside the ``api`` one, with what was decided."""
    if entry.link_id is None or entry.data.get("method") != "PATCH" or not 200 <= entry.data["status"] < 300:
        return None
    try:
        body = json.loads(request) if request else {}
    except ValueError:
        return None  # the app refused it (it was answered 2xx only if it parsed; kept defensive)
    if not isinstance(body, dict):
        return None
    decision = {k: body[k] for k in ("status", "command", "plaintext_command") if k in body}
    return AuditEntry(
        at=entry.at,
        kind="approval",
        principal=entry.principal,
        operation_id=entry.operation_id,
        link_id=entry.link_id,
        data={"link": decision},
    )
