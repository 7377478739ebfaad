"""Tables of the emulation domain beside operations and links: facts, relationships, and content created
through the API (abilities, adversaries, fact sources), registered on the same metadata as ``_schema``.

Fact and relationship rows are keyed by a digest of what makes them unique (operation, trait, value...), so
writing one again is an idempotent merge, and values of any length stay indexable on PostgreSQL.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import Double, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from assay.storage._schema import Base, JsonType


def row_key(*parts: object) -> str:
    return hashlib.sha256("\x1f".join("" if p is None else str(p) for p in parts).encode()).hexdigest()[:40]


class FactRow(Base):
    __tablename__ = "facts"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # NULL: a fact a user stored outside any operation (Caldera's global knowledge)
    operation_id: Mapped[str | None] = mapped_column(
        ForeignKey("operations.id", ondelete="CASCADE"), index=True, nullable=True
    )
    trait: Mapped[str] = mapped_column(String(255), index=True)
    value: Mapped[str] = mapped_column(Text)
    score: Mapped[int] = mapped_column(Integer)
    origin_type: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(128))
    links: Mapped[list[str]] = mapped_column(JsonType)
    collected_by: Mapped[list[str]] = mapped_column(JsonType)
    technique_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[float] = mapped_column(Double)


class RelationshipRow(Base):
    __tablename__ = "relationships"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    operation_id: Mapped[str | None] = mapped_column(
        ForeignKey("operations.id", ondelete="CASCADE"), index=True, nullable=True
    )
    source_trait: Mapped[str] = mapped_column(String(255))
    source_value: Mapped[str] = mapped_column(Text)
    edge: Mapped[str | None] = mapped_column(String(255), nullable=True)
    target_trait: Mapped[str | None] = mapped_column(String(255), nullable=True)
    target_value: Mapped[str | None] = mapped_column(Text, nullable=True)
    score: Mapped[int] = mapped_column(Integer)
    origin: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[float] = mapped_column(Double)


class ContentRow(Base):
    """An ability, adversary or fact source created through the REST API, as the JSON it was given."""

    __tablename__ = "content"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # ability | adversary | source
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JsonType)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
