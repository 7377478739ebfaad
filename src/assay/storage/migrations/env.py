"""Alembic environment. Assay runs migrations itself (``Database.migrate``) on a connection it passes in."""

from __future__ import annotations

from alembic import context

from assay.errors import StorageError
from assay.storage._schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise StorageError("run migrations through assay.storage.Database.migrate(), which passes a connection")

# Batch mode lets later migrations alter SQLite tables (which has no ALTER COLUMN) the same way as PostgreSQL.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
