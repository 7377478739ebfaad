"""Alembic migrations of the Assay schema (applied by ``Database.migrate``)."""
