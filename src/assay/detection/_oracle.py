"""The independent implementation Assay's engine is checked and measured against: pySigma's SQLite backend.

This is "the pySigma→SQLite method" of tools such as Zircolite: each rule becomes a SQL ``WHERE`` clause
(through the same ``assay`` processing pipeline, so both sides read the same fields), events are loaded
into an in-memory SQLite table whose text columns compare case-insensitively (``COLLATE NOCASE``, as
Zircolite declares them), and every rule is one query over the table.

``pysigma-backend-sqlite`` is a development dependency; it is imported only when this module is used.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule

from assay.detection._codegen import fulltext
from assay.detection._pipeline import assay_pipeline
from assay.events import Event

FULLTEXT_COLUMN = "assay_fulltext"


def _regexp(pattern: str, value: Any) -> bool:
    if value is None:
        return False
    return re.search(pattern, str(value)) is not None


def row_of(event: Event) -> dict[str, Any]:
    """An event as a table row: list elements become ``name[i]`` columns, booleans 'true'/'false'."""
    row: dict[str, Any] = {}
    for name, value in event.fields.items():
        if isinstance(value, list):
            for i, item in enumerate(value):
                row[f"{name}[{i}]"] = item
        elif isinstance(value, bool):
            row[name] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            row[name] = value
    text = fulltext(event.fields)
    if text is not None:
        row[FULLTEXT_COLUMN] = text
    return row


@dataclass
class SqliteMethod:
    """Rules converted by pySigma's SQLite backend; :meth:`run` evaluates them over a batch of events."""

    queries: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def convert(cls, documents: Iterable[tuple[str, dict[str, Any]]]) -> SqliteMethod:
        """``documents``: (rule id, the rule's YAML as parsed). Rules the backend refuses go to ``errors``."""
        # The backend package is untyped; it is used through this one narrow seam.
        from sigma.backends.sqlite.sqlite import sqliteBackend

        out = cls()
        backend: Any = sqliteBackend(  # type: ignore[no-untyped-call]
            processing_pipeline=assay_pipeline(), fulltext_field=FULLTEXT_COLUMN
        )
        for rule_id, data in documents:
            try:
                rule = SigmaRule.from_dict(data)
                queries = backend.convert_rule(rule)
            except SigmaError as exc:
                out.errors[rule_id] = str(exc)
                continue
            out.queries[rule_id] = [
                q.replace("SELECT * FROM logs WHERE", "SELECT rowid FROM logs WHERE", 1) for q in queries
            ]
        return out

    def connect(self, events: Sequence[Event]) -> sqlite3.Connection:
        conn = sqlite3.connect(":memory:")
        conn.create_function("regexp", 2, _regexp, deterministic=True)
        rows = [row_of(e) for e in events]
        columns = sorted({c for r in rows for c in r})
        for query in (q for qs in self.queries.values() for q in qs):
            # fields a rule reads that no event carries still need a (NULL) column (the backend quotes
            # identifiers with backticks)
            for name in re.findall(r'`((?:[^`]|``)+)`|"([^"]+)"', query):
                name = (name[0] or name[1]).replace("``", "`")
                if name not in columns:
                    columns.append(name)
        # TEXT COLLATE NOCASE, as Zircolite declares its columns: numbers are stored and compared as text.
        quoted = ", ".join(f'"{c}" TEXT COLLATE NOCASE' for c in columns)
        conn.execute(f"CREATE TABLE logs ({quoted})")
        placeholders = ", ".join("?" for _ in columns)
        names = ", ".join(f'"{c}"' for c in columns)
        conn.executemany(
            f"INSERT INTO logs ({names}) VALUES ({placeholders})",
            [tuple(r.get(c) for c in columns) for r in rows],
        )
        return conn

    def run(self, events: Sequence[Event]) -> dict[str, set[int]]:
        """For each rule, the indices (0-based, in ``events``) of the events it matches."""
        conn = self.connect(events)
        try:
            out: dict[str, set[int]] = {}
            for rule_id, queries in self.queries.items():
                hits: set[int] = set()
                for q in queries:
                    hits.update(row[0] - 1 for row in conn.execute(q))
                out[rule_id] = hits
            return out
        finally:
            conn.close()


def run_streaming(method: SqliteMethod, events: Sequence[Event], columns: Sequence[str]) -> dict[str, int]:
    """The SQLite method as a live sensor would need it: each event is inserted and every rule's query
    runs before the next event arrives (alert latency of one event), then the row is deleted."""
    conn = sqlite3.connect(":memory:")
    conn.create_function("regexp", 2, _regexp, deterministic=True)
    cols = list(columns)
    quoted = [f'"{c}"' for c in cols]
    conn.execute(f"CREATE TABLE logs ({', '.join(q + ' TEXT COLLATE NOCASE' for q in quoted)})")
    insert = f"INSERT INTO logs ({', '.join(quoted)}) VALUES ({', '.join('?' for _ in cols)})"
    queries = [(rid, q) for rid, qs in method.queries.items() for q in qs]
    counts: dict[str, int] = {}
    try:
        for event in events:
            row = row_of(event)
            conn.execute(insert, tuple(row.get(c) for c in cols))
            for rid, q in queries:
                if conn.execute(q).fetchone() is not None:
                    counts[rid] = counts.get(rid, 0) + 1
            conn.execute("DELETE FROM logs")
    finally:
        conn.close()
    return counts


def columns_for(method: SqliteMethod, events: Sequence[Event]) -> list[str]:
    """Every column the events and the queries need."""
    conn = method.connect(events[:1])
    try:
        return [d[1] for d in conn.execute("PRAGMA table_info(logs)")]
    finally:
        conn.close()
