"""The SQLAlchemy declarative base shared by every table Perseus stores (scheduler and BSO)."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Base class of all Perseus tables; Alembic autogenerates migrations from its metadata."""
