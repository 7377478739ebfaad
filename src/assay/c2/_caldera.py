"""Caldera's HTTP agent protocol, exactly as Sandcat speaks it (``../shared/notes/caldera-formats.md`` §A).

    POST /beacon   body: base64 of a JSON profile (+ ``results``)  →  base64 of
                   {"paw", "sleep", "watchdog", "instructions": "<JSON list of JSON-encoded instructions>"}

The codec (:func:`decode_beacon`, :func:`encode_reply`) is sans-I/O. :class:`CalderaContact` drives it over
the :class:`~assay.c2.BeaconCore`; ``assay.api`` serves it as a raw ASGI endpoint because it is the hottest
path of the server (one request per agent per sleep interval).

Where Caldera is fragile Assay is strict and says why, with a 4xx, never a 500 (issue 4):

- the body must be base64 of a JSON object; every field has a type and a size bound; a field Caldera does not
  know is refused by name (Caldera answered unknown registration fields with a 500, so no working Caldera
  agent sends one);
- a result may omit ``pid`` (Caldera: 500); numbers may come as numbers or as decimal strings, as Sandcat
  sends them; ``status`` must be one of Caldera's result statuses.

Kept on purpose, because Sandcat depends on it: a beacon that carries results gets ``instructions: "[]"``
(Sandcat reads no instructions from such a reply; anything sent there would be lost), and an instruction is
delivered exactly once.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from assay.c2._core import BeaconCore, check_timing, clean_paw
from assay.c2._model import Instruction, Refused, ResultState
from assay.content import Privilege
from assay.emulation import Agent, LinkStatus, Result
from assay.errors import C2Error, Source

MAX_BEACON_BYTES = 4 * 1024 * 1024  # Sandcat sends a command's whole output in one beacon
_MAX_TEXT = 4096
_MAX_ITEMS = 64
_MAX_RESULTS = 64
_WS = re.compile(rb"\s+")
_NUMBER = re.compile(r"-?\d{1,12}")

_STRING_FIELDS = {
    "server": 1024,
    "upstream_dest": 1024,
    "group": 64,
    "platform": 32,
    "host": 255,
    "username": 255,
    "architecture": 64,
    "location": _MAX_TEXT,
    "exe_name": 255,
    "origin_link_id": 64,
    "pending_contact": 32,
    "contact": 32,
}
# Caldera's agent fields, as stored (see the notes' §A.2); anything else is refused by name.
PROFILE_FIELDS = frozenset(
    {
        *_STRING_FIELDS,
        "paw",
        "privilege",
        "executors",
        "pid",
        "ppid",
        "proxy_receivers",
        "proxy_chain",
        "deadman_enabled",
        "available_contacts",
        "host_ip_addrs",
        "sleep_min",
        "sleep_max",
        "watchdog",
        "trusted",
        "results",
    }
)
_RESULT_FIELDS = frozenset({"id", "output", "stderr", "exit_code", "status", "pid", "agent_reported_time"})
_STATUSES = {0: LinkStatus.SUCCESS, 1: LinkStatus.ERROR, 124: LinkStatus.TIMEOUT}


@dataclass
class Beacon:
    """A decoded ``/beacon`` request."""

    profile: Agent
    extras: dict[str, Any] = field(default_factory=dict)  # stored as given
    timing: dict[str, int] = field(default_factory=dict)  # sleep_min / sleep_max / watchdog, if sent
    results: list[Result] | None = None
    present: frozenset[str] = frozenset()  # fields the agent sent: only those change a known agent
    named: bool = False  # the body names its paw as it is (no paw was drawn or cleaned for it)


def _bad(message: str, where: str) -> C2Error:
    return C2Error(message, Source(field=where))


def invalid_unicode(value: Any, where: str = "body") -> str | None:
    """Where in decoded JSON a string holds a lone surrogate (``"\\udad4"`` is valid JSON syntax, but no
    Unicode text: storing it works, and every later reply that includes it fails to encode)."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return at
        elif isinstance(item, dict):
            for key, sub in item.items():
                if invalid_unicode(key, at) is not None:
                    return f"{at} (a key)"
                stack.append((sub, f"{at}.{key}"))
        elif isinstance(item, list):
            stack.extend((sub, f"{at}[{i}]") for i, sub in enumerate(item))
    return None


_MAX_DEPTH = 16  # a Sandcat profile nests three levels (proxy_receivers → protocol → addresses)


def _too_deep(value: Any) -> str | None:
    """The top-level field under which decoded JSON nests deeper than :data:`_MAX_DEPTH`, or ``None``
    (checked before anything walks the data recursively, as ``json.dumps`` does)."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "body")]
    while stack:
        item, depth, top = stack.pop()
        if depth > _MAX_DEPTH:
            return top
        if isinstance(item, dict):
            stack.extend((v, depth + 1, (str(k)[:64] or top) if depth == 0 else top) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, depth + 1, top) for v in item)
    return None


def _text(value: Any, where: str, limit: int) -> str:
    if not isinstance(value, str):
        raise _bad(f"must be a string, got {type(value).__name__}", where)
    if len(value) > limit:
        raise _bad(f"is longer than {limit} characters", where)
    if invalid_unicode(value) is not None:
        raise _bad("is not valid Unicode (a lone surrogate escape)", where)
    return value


def _integer(value: Any, where: str) -> int:
    """Sandcat sends numbers as JSON numbers or decimal strings (``"pid": "4242"``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) >= 10**12:
            raise _bad(f"is out of range: {value}", where)
        return value
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return int(value.strip())
    raise _bad(f"must be an integer (a number or a decimal string), got {value!r}"[:200], where)


def _list_of_text(value: Any, where: str) -> list[str]:
    if isinstance(value, str):  # Caldera's TCP/UDP contacts send executors as "sh,proc"
        value = [v for v in value.split(",") if v]
    if not isinstance(value, list):
        raise _bad(f"must be a list of strings, got {type(value).__name__}", where)
    if len(value) > _MAX_ITEMS:
        raise _bad(f"has more than {_MAX_ITEMS} items", where)
    return [_text(v, f"{where}[{i}]", 255) for i, v in enumerate(value)]


def _b64text(value: Any, where: str) -> str:
    raw = _text(value, where, 2 * MAX_BEACON_BYTES)
    try:
        return base64.b64decode(_WS.sub(b"", raw.encode("ascii")), validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise _bad(f"is not base64: {exc}", where) from exc


def _result(raw: Any, where: str) -> Result:
    if not isinstance(raw, dict):
        raise _bad(f"must be an object, got {type(raw).__name__}", where)
    unknown = sorted(set(raw) - _RESULT_FIELDS)
    if unknown:
        raise _bad(f"unknown field(s) {', '.join(map(repr, unknown))}"[:300], where)
    if "id" not in raw:
        raise _bad("has no 'id' (the instruction's id)", where)
    link_id = _text(raw["id"], f"{where}.id", 64)
    status_number = _integer(raw.get("status", 0), f"{where}.status")
    status = _STATUSES.get(status_number)
    if status is None:
        raise _bad(f"must be 0, 1 or 124 (Caldera's result statuses), got {status_number}", f"{where}.status")
    pid = raw.get("pid")
    started_at = None
    if raw.get("agent_reported_time") not in (None, ""):
        stamp = _text(raw["agent_reported_time"], f"{where}.agent_reported_time", 64)
        try:
            started_at = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
        except ValueError as exc:
            raise _bad(
                f"must be %Y-%m-%dT%H:%M:%SZ (UTC), got {stamp!r}", f"{where}.agent_reported_time"
            ) from exc
    return Result(
        link_id=link_id,
        status=status,
        exit_code=None
        if raw.get("exit_code") in (None, "")
        else _integer(raw["exit_code"], f"{where}.exit_code"),
        stdout=_b64text(raw.get("output", ""), f"{where}.output"),
        stderr=_b64text(raw.get("stderr", ""), f"{where}.stderr"),
        pid=None if pid in (None, "") else _integer(pid, f"{where}.pid"),
        started_at=started_at,
    )


def decode_beacon(body: bytes) -> Beacon:
    """Base64 → JSON object → checked profile. Raises :class:`C2Error` naming the field."""
    if not body.strip():
        raise _bad("the beacon is empty (expected base64 of a JSON profile)", "body")
    if len(body) > MAX_BEACON_BYTES:
        raise _bad(f"the beacon is larger than {MAX_BEACON_BYTES} bytes", "body")
    try:
        raw = base64.b64decode(_WS.sub(b"", body), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _bad(f"the beacon is not base64: {exc}", "body") from exc
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad(f"the beacon is not JSON: {exc}"[:300], "body") from exc
    except RecursionError as exc:  # json's own bound on nesting: 4 MiB of "[" is a valid-looking start
        raise _bad(f"the beacon nests deeper than {_MAX_DEPTH} levels", "body") from exc
    if (deep := _too_deep(data)) is not None:
        raise _bad(f"nests deeper than {_MAX_DEPTH} levels", deep)
    if not isinstance(data, dict):
        raise _bad(
            f"the beacon must be a JSON object (the agent's profile), got {type(data).__name__}", "body"
        )
    return _profile(data)


def _profile(data: Mapping[str, Any]) -> Beacon:
    unknown = sorted(set(data) - PROFILE_FIELDS)
    if unknown:
        shown = ", ".join(repr(u[:64]) for u in unknown[:5])
        raise _bad(
            f"unknown field(s) {shown} in the beacon profile (not a Caldera agent field)",
            unknown[0][:64] or "body",  # an empty key names no field: the body is where it is
        )
    values = {name: _text(data[name], name, limit) for name, limit in _STRING_FIELDS.items() if name in data}
    paw = data.get("paw")
    if paw is not None:
        paw = _text(paw, "paw", 255)
    privilege = data.get("privilege", "User")
    if privilege not in ("User", "Elevated"):
        raise _bad(f"must be 'User' or 'Elevated', got {privilege!r}"[:200], "privilege")
    executors = _list_of_text(data.get("executors") or [], "executors")
    pids = {n: None if data.get(n) in (None, "") else _integer(data[n], n) for n in ("pid", "ppid")}
    for name, number in pids.items():
        if number is not None and number < 0:
            raise _bad(f"must not be negative, got {number}", name)
    extras: dict[str, Any] = {}
    for name, kind in (
        ("proxy_receivers", dict),
        ("proxy_chain", list),
        ("available_contacts", list),
        ("host_ip_addrs", list),
        ("deadman_enabled", bool),
        ("trusted", bool),
    ):
        if data.get(name) is not None:  # Go marshals a nil map or slice as null (Sandcat without P2P)
            if not isinstance(data[name], kind):
                raise _bad(f"must be a {kind.__name__}, got {type(data[name]).__name__}", name)
            if len(json.dumps(data[name])) > _MAX_TEXT:
                raise _bad(f"is larger than {_MAX_TEXT} bytes", name)
            if (bad := invalid_unicode(data[name], name)) is not None:
                raise _bad("is not valid Unicode (a lone surrogate escape)", bad[:200])
            extras[name] = data[name]
    for name in ("origin_link_id", "pending_contact", "upstream_dest"):
        if name in values:
            extras[name] = values[name]
    timing = {n: _integer(data[n], n) for n in ("sleep_min", "sleep_max", "watchdog") if n in data}
    if timing:
        check_timing(
            timing.get("sleep_min", 0),
            timing.get("sleep_max", timing.get("sleep_min", 0)),
            timing.get("watchdog", 0),
        )
    results = None
    if "results" in data:
        raw_results = data["results"]
        if not isinstance(raw_results, list):
            raise _bad(f"must be a list, got {type(raw_results).__name__}", "results")
        if len(raw_results) > _MAX_RESULTS:
            raise _bad(f"has more than {_MAX_RESULTS} results", "results")
        results = [_result(r, f"results[{i}]") for i, r in enumerate(raw_results)]
    profile = Agent(
        paw=clean_paw(paw),
        host=values.get("host", ""),
        platform=values.get("platform", "").lower(),
        executors=tuple(executors),
        privilege=Privilege(privilege),
        group=values.get("group") or "red",
        username=values.get("username", ""),
        architecture=values.get("architecture", ""),
        pid=pids["pid"],
        ppid=pids["ppid"],
        server=values.get("server", ""),
        location=values.get("location", ""),
        exe_name=values.get("exe_name", ""),
        contact=values.get("contact") or "http",
    )
    named = bool(paw) and profile.paw == paw
    return Beacon(profile, extras, timing, results, frozenset(data), named)


def encode_instruction(instruction: Instruction) -> str:
    return json.dumps(
        {
            "id": instruction.id,
            "sleep": instruction.sleep,
            "command": base64.b64encode(instruction.command.encode("utf-8")).decode("ascii"),
            "executor": instruction.executor,
            "timeout": instruction.timeout,
            "payloads": list(instruction.payloads),
            "uploads": list(instruction.uploads),
            "deadman": instruction.deadman,
            "delete_payload": instruction.delete_payload,
        }
    )


def encode_reply(
    paw: str,
    sleep: int,
    watchdog: int,
    instructions: list[Instruction],
    directives: Mapping[str, Any] | None = None,
) -> bytes:
    """Base64 of ``{paw, sleep, watchdog, instructions}``; ``instructions``: a JSON string of JSON strings.
    ``directives`` adds Caldera's ``new_contact`` (a string) and ``executor_change`` (an object)."""
    if not instructions and not directives and paw.isascii():
        # The idle reply, most beacons get it: a cleaned ASCII paw ([A-Za-z0-9_.-]) needs no JSON escaping.
        idle = f'{{"paw": "{paw}", "sleep": {int(sleep)}, "watchdog": {int(watchdog)}, "instructions": "[]"}}'
        return base64.b64encode(idle.encode("ascii"))
    reply = {
        "paw": paw,
        "sleep": sleep,
        "watchdog": watchdog,
        "instructions": json.dumps([encode_instruction(i) for i in instructions]),
        **(directives or {}),
    }
    return base64.b64encode(json.dumps(reply).encode("utf-8"))


RunSync = Callable[..., Awaitable[Any]]


_CACHED_BODY = 4096  # a Sandcat profile is ~600 bytes


class CalderaContact:
    """``POST /beacon`` over the core. Work that may block (a database write) goes to ``run_sync``; an idle
    beacon of a known agent is answered on the event loop from memory.

    Sandcat sends the same bytes on every regular beacon. Decoding and checking them costs more than
    everything else a beacon does (~100 µs), so the contact remembers, per agent, the last body that
    decoded to its unchanged profile: the same bytes again need no decoding. One body per agent, at most
    4 KiB each, replaced when it changes: memory stays bounded by the number of agents.
    """

    def __init__(self, core: Callable[[], BeaconCore], run_sync: RunSync) -> None:
        self._core = core
        self._run_sync = run_sync
        self._paw_of_body: dict[bytes, str] = {}
        self._body_of_paw: dict[str, bytes] = {}

    def _remember(self, paw: str, body: bytes) -> None:
        old = self._body_of_paw.get(paw)
        if old == body:
            return
        if old is not None:
            self._paw_of_body.pop(old, None)
        self._body_of_paw[paw] = body
        self._paw_of_body[body] = paw

    async def handle(self, body: bytes, enrolled: bool = False) -> bytes:
        """The reply body for a beacon; raises :class:`C2Error` (a 4xx) for a bad one. ``enrolled``: the
        request carried the enrolment token (checked by the caller)."""
        core = self._core()
        paw = self._paw_of_body.get(body)
        if (
            paw is not None
            and paw in core.agents
            and not core.is_native(paw)
            and core.enrolled(paw) is enrolled  # otherwise register() refuses it, or enrols it
        ):
            core.seen(paw)  # these exact bytes were decoded and checked before, to this agent's profile
            results = None
        else:
            beacon = decode_beacon(body)
            paw = beacon.profile.paw
            if core.unchanged(beacon.profile, beacon.present) and core.enrolled(paw) is enrolled:
                core.seen(paw)
            else:
                await self._run_sync(
                    core.register, beacon.profile, beacon.extras, beacon.timing, beacon.present, enrolled
                )
            results = beacon.results
            if results is None and beacon.named and len(body) <= _CACHED_BODY:
                self._remember(paw, body)
        instructions: list[Instruction] = []
        if results is not None:
            outcomes = await self._run_sync(core.submit, paw, results)
            rejected = [o for o in outcomes if o.state is ResultState.REJECTED]
            if rejected:
                raise Refused(
                    f"result rejected: {rejected[0].reason}",
                    Source(agent=paw, link=rejected[0].link_id),
                    status=409,
                )
        elif core.may_have_work(paw):
            instructions = await self._run_sync(core.beacon, paw)
        if core.kill_pending(paw):  # the reply carries the kill: its delivery is stored, off the event loop
            sleep, watchdog = await self._run_sync(core.timing, paw)
        else:
            sleep, watchdog = core.timing(paw)
        directives = await self._run_sync(core.directives, paw) if core.has_directives(paw) else None
        return encode_reply(paw, sleep, watchdog, instructions, directives)
