"""Engines, sessions and migrations. SQLite by default (a file in the data dir), PostgreSQL by URL."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from assay.errors import StorageError, StorageFull
from assay.storage._private import private_dir, private_file

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def normalize_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3 (the driver Assay installs); a path is SQLite."""
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if "://" not in url:
        return f"sqlite:///{Path(url).resolve()}"
    return url


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'assay.db').resolve()}"


def _private_sqlite(path: Path) -> None:
    """The database file exists, 0600, before SQLite opens it (SQLite would create it 0644), and so do the
    -wal and -shm files left by an earlier run; new ones get the database file's mode from SQLite."""
    try:
        private_dir(path.parent)
        private_file(path)
        for suffix in ("-wal", "-shm", "-journal"):
            private_file(path.with_name(path.name + suffix), create=False)
    except OSError as exc:
        raise StorageError(f"cannot create the database file {path}: {exc.strerror or exc}") from exc


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    # WAL lets readers (validation, tests) run beside the server's writes; busy_timeout waits for a lock
    # instead of failing at once; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


# SQLite says "database or disk is full" (SQLITE_FULL); PostgreSQL raises SQLSTATE 53100 (disk_full) with
# "No space left on device", or 53xxx for other exhausted resources.
_FULL = ("database or disk is full", "no space left on device", "disk full")


def storage_error(what: str, exc: SQLAlchemyError) -> StorageError:
    """The error a failed database call becomes; a full disk says so plainly (the API answers 507)."""
    text = str(exc).lower()
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if sqlstate == "53100" or any(marker in text for marker in _FULL):
        return StorageFull(
            f"{what} failed: the database's disk is full; nothing of this write was stored, earlier data is "
            "intact and reads still work (free space, then retry)"
        )
    return StorageError(f"{what} failed: {exc.__class__.__name__}: {exc}")


class Database:
    """One engine and its session factory. :meth:`migrate` brings the schema to the newest revision."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        try:
            parsed = make_url(self.url)
        except (ArgumentError, ValueError) as exc:
            raise StorageError(f"not a database URL: {url!r}") from exc
        kwargs: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                _private_sqlite(Path(parsed.database))
            kwargs["connect_args"] = {"check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        try:
            self.engine: Engine = create_engine(self.url, **kwargs)
        except (ArgumentError, ImportError) as exc:
            raise StorageError(
                f"cannot use database {parsed.render_as_string(hide_password=True)}: {exc}"
            ) from exc
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def _alembic(self) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        return cfg

    def migrate(self) -> str:
        """Apply every pending migration; returns the revision the database is at."""
        cfg = self._alembic()
        try:
            with self.engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                return MigrationContext.configure(conn).get_current_revision() or ""
        except SQLAlchemyError as exc:
            where = make_url(self.url).render_as_string(hide_password=True)
            raise StorageError(f"cannot migrate {where}: {exc.__class__.__name__}: {exc}") from exc

    def head(self) -> str:
        return ScriptDirectory.from_config(self._alembic()).get_current_head() or ""

    def session(self) -> Session:
        return self.sessions()

    @contextmanager
    def transaction(self, what: str = "write") -> Iterator[Session]:
        """A session in one transaction, committed when the block ends and rolled back on any error; a
        database error (the commit's included) becomes a StorageError naming ``what``."""
        try:
            with self.session() as session, session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise storage_error(what, exc) from exc

    def write(self, rows: Iterable[Any], *, merge: bool, what: str = "write") -> None:
        """Store rows in one transaction: all of them or, on a database error, none (a StorageError)."""
        with self.transaction(what) as session:
            for row in rows:
                if merge:
                    session.merge(row)
                else:
                    session.add(row)

    def dispose(self) -> None:
        self.engine.dispose()
