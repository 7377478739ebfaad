"""Server state: configuration, storage, content, the operation service and the beacon core, opened once.

``open_state`` does everything a server start must: open the database and apply migrations, load the content
library, settle the credentials (generated on first start, stored hashed), and wire the beacon core to the
operation service and the agent contact's waiters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from assay.c2 import BeaconCore, Waiters, digest, new_secret
from assay.content import LoadResult, load_builtin
from assay.emulation import OperationService
from assay.storage import Store, sqlite_url

API_KEY = "api_key"
ENROL_TOKEN = "enrol_token"


@dataclass
class ServerConfig:
    data_dir: Path = Path(".assay")
    db_url: str | None = None  # default: SQLite file in data_dir
    api_key: str | None = None
    enrol_token: str | None = None
    content_paths: list[Path] = field(default_factory=list)

    @property
    def database_url(self) -> str:
        return self.db_url or sqlite_url(self.data_dir)


@dataclass
class ServerState:
    store: Store
    content: LoadResult
    core: BeaconCore
    waiters: Waiters
    api_digest: str
    enrol_digest: str
    generated: dict[str, str]  # secrets made on this start, to print once


def settle_credential(store: Store, name: str, given: str | None) -> tuple[str, str | None]:
    """The digest to check against, and the secret if it was generated now (to show once)."""
    if given:
        store.set_credential(name, digest(given))
        return digest(given), None
    stored = store.credential(name)
    if stored:
        return stored, None
    secret = new_secret()
    store.set_credential(name, digest(secret))
    return digest(secret), secret


def open_state(config: ServerConfig) -> ServerState:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store.open(config.database_url)
    content = load_builtin(config.content_paths)
    waiters = Waiters()
    operations = OperationService(store, content.library, on_ready=waiters.notify)
    core = BeaconCore(store, operations)
    generated: dict[str, str] = {}
    api_digest, secret = settle_credential(store, API_KEY, config.api_key)
    if secret:
        generated[API_KEY] = secret
    enrol_digest, secret = settle_credential(store, ENROL_TOKEN, config.enrol_token)
    if secret:
        generated[ENROL_TOKEN] = secret
    state = ServerState(store, content, core, waiters, api_digest, enrol_digest, generated)
    # Content created through the API, and operations that were live when the server stopped or died.
    from assay.api._operations import resume

    resume(state)
    return state
