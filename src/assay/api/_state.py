"""Server state: configuration, storage, content, the operation service and the beacon core, opened once.

``open_state`` does everything a server start must: open the database and apply migrations, load the content
library, settle the credentials (generated on first start, stored hashed, never a default), and wire the
beacon core to the operation service and the agent contacts.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assay.c2 import (
    AgentDefaults,
    AgentSettings,
    AuditEntry,
    BeaconCore,
    Instruction,
    KeyRing,
    PayloadStore,
    Principal,
    Role,
    Waiters,
    new_secret,
    slow_hash,
)
from assay.content import LoadResult, content_payload_dirs, load_builtin
from assay.emulation import Agent, Link, OperationService, Result
from assay.storage import C2Records, Store, private_dir, sqlite_url

API_KEY = "api_key"  # the admin key's credential name; other keys are "key:<role>:<name>"
KEY_PREFIX = "key:"
LEGACY_KEY_PREFIX = API_KEY + ":"  # "api_key:<name>": keys made before roles existed (admin, as they were)
ENROL_TOKEN = "enrol_token"
CONTACT_LOG = 1000  # beacons remembered for GET /api/v2/contacts (Caldera's log grew without bound)


@dataclass
class ServerConfig:
    data_dir: Path = Path(".assay")
    db_url: str | None = None  # default: SQLite file in data_dir
    api_key: str | None = None
    enrol_token: str | None = None
    content_paths: list[Path] = field(default_factory=list)
    caldera_compat: bool = False  # serve Caldera's /beacon and file transfer
    caldera_unenrolled: str = "untrusted"  # what a Caldera agent without the enrolment token gets (c2._core)
    payload_dirs: list[Path] = field(default_factory=list)  # searched after <data_dir>/payloads
    agent_defaults: AgentDefaults = field(default_factory=AgentDefaults)
    seen_flush_interval: float = 5.0  # seconds between batched last-seen writes

    @property
    def database_url(self) -> str:
        return self.db_url or sqlite_url(self.data_dir)


class C2Ledger:
    """The beacon core's :class:`~assay.c2.Ledger` over the store and the C2 tables."""

    def __init__(self, store: Store, records: C2Records) -> None:
        self.store = store
        self.records = records

    def save_agent(self, agent: Agent, key_digest: str | None = None) -> None:
        self.store.save_agent(agent, key_digest)

    def register_agent(
        self,
        agent: Agent,
        key_digest: str | None,
        settings: AgentSettings | None,
        tasks: Iterable[tuple[str, Instruction]],
        now: float,
    ) -> None:
        self.records.register_agent(agent, key_digest, settings, tasks, now)

    def agents(self) -> list[Agent]:
        return self.store.agents()

    def agent_key_digest(self, paw: str) -> str | None:
        return self.store.agent_key_digest(paw)

    def link(self, link_id: str) -> Link | None:
        return self.store.link(link_id)

    def save_links(self, links: Iterable[Link]) -> None:
        self.store.save_links(links)

    def save_result(self, result: Result, paw: str, received_at: float, *, accepted: bool) -> None:
        self.store.save_result(result, paw, received_at, accepted=accepted)

    def save_settings(self, paw: str, settings: AgentSettings, now: float) -> None:
        self.records.save_settings(paw, settings, now)

    def settings(self) -> dict[str, AgentSettings]:
        return self.records.settings()

    def touch(self, last_seen: Mapping[str, float]) -> None:
        self.records.touch(last_seen)

    def audit(self, entries: Iterable[AuditEntry]) -> None:
        self.records.audit(entries)

    def open_tasks(self) -> list[tuple[str, Instruction, bool]]:
        return self.records.open_tasks()

    def deliver_tasks(self, task_ids: Iterable[str], now: float) -> None:
        self.records.deliver_tasks(task_ids, now)

    def finish_task(self, result: Result, paw: str, received_at: float) -> None:
        self.records.finish_task(result, paw, received_at)

    def task_owner(self, task_id: str) -> tuple[str, bool] | None:
        return self.records.task_owner(task_id)

    def delete_agent(self, paw: str) -> bool:
        return self.records.delete_agent(paw)

    def save_agent_defaults(self, defaults: AgentDefaults, now: float) -> None:
        self.records.save_agent_defaults(defaults, now)

    def agent_defaults(self) -> AgentDefaults | None:
        return self.records.agent_defaults()


@dataclass
class ServerState:
    store: Store
    content: LoadResult
    core: BeaconCore
    waiters: Waiters
    keys: KeyRing
    records: C2Records
    payloads: PayloadStore
    config: ServerConfig
    generated: dict[str, str]  # secrets made on this start, to print once
    contacts: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=CONTACT_LOG))
    started_at: float = field(default_factory=time.time)


def principal_for(name: str) -> Principal | None:
    """The principal a stored credential name stands for (``None``: not a secret the server checks)."""
    if name == ENROL_TOKEN:
        return Principal("enrol", ENROL_TOKEN)
    if name == API_KEY:
        return Principal("api", "admin", Role.ADMIN)
    if name.startswith(LEGACY_KEY_PREFIX):
        return Principal("api", name[len(LEGACY_KEY_PREFIX) :], Role.ADMIN)
    if name.startswith(KEY_PREFIX):
        role, _, key_name = name[len(KEY_PREFIX) :].partition(":")
        if role in {r.value for r in Role} and key_name:
            return Principal("api", key_name, Role(role))
    return None


def credential_name(principal: Principal) -> str:
    if principal.kind == "enrol":
        return ENROL_TOKEN
    if principal.name == "admin":
        return API_KEY
    return f"{KEY_PREFIX}{principal.role.value}:{principal.name}"


def stored_principals(records: C2Records) -> dict[Principal, str]:
    """Every stored secret the server checks, by principal (re-read on every slow key check)."""
    found: dict[Principal, str] = {}
    for name, stored in records.credentials().items():
        principal = principal_for(name)
        if principal is not None:
            found[principal] = stored
    return found


def settle_credential(store: Store, name: str, given: str | None) -> tuple[str, str | None]:
    """The hash to check against, and the secret if it was generated now (to show once)."""
    if given:
        stored = slow_hash(given)
        store.set_credential(name, stored)
        return stored, None
    found = store.credential(name)
    if found:
        return found, None
    secret = new_secret()
    stored = slow_hash(secret)
    store.set_credential(name, stored)
    return stored, secret


def open_state(config: ServerConfig) -> ServerState:
    private_dir(config.data_dir)
    store = Store.open(config.database_url)
    records = C2Records(store.db)
    content = load_builtin(config.content_paths)
    waiters = Waiters()
    cores: list[BeaconCore] = []  # the service needs the core's notify, the core needs the service
    operations = OperationService(store, content.library, on_ready=lambda paw: cores[0].notify(paw))
    core = BeaconCore(
        C2Ledger(store, records),
        operations,
        defaults=config.agent_defaults,
        on_ready=waiters.notify,
        unenrolled=config.caldera_unenrolled,
    )
    cores.append(core)
    generated: dict[str, str] = {}
    for name, given in ((API_KEY, config.api_key), (ENROL_TOKEN, config.enrol_token)):
        _, secret = settle_credential(store, name, given)
        if secret:
            generated[name] = secret
    keys = KeyRing(lambda: stored_principals(records))
    keys.reload()
    roots = [config.data_dir / "payloads", *config.payload_dirs]
    roots += [p / "payloads" for p in config.content_paths if (p / "payloads").is_dir()]
    roots += [
        d for d in content_payload_dirs(config.content_paths) if d not in roots
    ]  # stockpile's data/payloads
    payloads = PayloadStore(roots, config.data_dir / "uploads")
    state = ServerState(store, content, core, waiters, keys, records, payloads, config, generated)
    # Content created through the API, and operations that were live when the server stopped or died.
    from assay.api._operations import resume

    resume(state)
    return state
