"""Persistence: SQLAlchemy 2 async store and its Alembic migrations."""

from bot.storage.store import Store, StoredEvent, aware, utcnow

__all__ = ["Store", "StoredEvent", "aware", "utcnow"]
