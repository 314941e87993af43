"""The store: conversations, their events, requests, connector state and de-duplication.

One ``Store`` per process. SQLite (the default, in WAL mode) or PostgreSQL through asyncpg, chosen by
the URL; the schema comes from the Alembic migrations.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

from sqlalchemy import delete, event, func, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from bot.dialogue.events import Event, event_from_record
from bot.errors import StorageError
from bot.storage import migrate
from bot.storage.tables import ConnectorState, Conversation, EventRow, ProcessedMessage

logger = logging.getLogger(__name__)
SESSION_BOUNDARIES = ("session_started", "restart")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def aware(value: datetime | None) -> datetime | None:
    """Return ``value`` with UTC attached; SQLite gives back naive datetimes."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    event: Event


class Store:
    """Async access to the database; call ``start`` before use and ``stop`` at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("Store is not started; call 'await store.start()' first")
        return self._engine

    def session(self) -> AsyncSession:
        if self._sessions is None:
            raise RuntimeError("Store is not started; call 'await store.start()' first")
        return self._sessions()

    async def start(self, migrate_schema: bool = True) -> None:
        """Connect, and apply the migrations when ``migrate_schema`` is true."""
        if self._engine is not None:
            raise RuntimeError("Store is already started")
        is_sqlite = self.url.startswith("sqlite")
        options: dict[str, Any] = {}
        if is_sqlite:
            options["connect_args"] = {"timeout": 30}
        else:
            options.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        try:
            self._engine = create_async_engine(self.url, **options)
        except (SQLAlchemyError, ValueError, ImportError) as exc:
            raise StorageError(f"invalid database URL {self._redacted()}: {exc}") from None
        if is_sqlite:
            event.listen(self._engine.sync_engine, "connect", _sqlite_pragmas)
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)
        try:
            if migrate_schema:
                await migrate.upgrade(self._engine)
            await self.ping()
        except (OSError, SQLAlchemyError) as exc:
            await self.stop()
            raise StorageError(f"cannot open the database {self._redacted()}: {exc}") from None
        logger.info("store opened (%s)", self._redacted())

    async def stop(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            logger.info("store closed")
        self._engine = None
        self._sessions = None

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    def _redacted(self) -> str:
        # Never log a password that the URL may carry.
        head, sep, tail = self.url.partition("@")
        if not sep:
            return self.url
        scheme, _, _ = head.partition("://")
        return f"{scheme}://***@{tail}"

    # ----- de-duplication -----

    async def mark_processed(self, channel: str, message_id: str, conversation_id: str | None = None) -> bool:
        """Record a channel message id; return False when it was already recorded."""
        async with self.session() as session:
            session.add(ProcessedMessage(channel=channel, message_id=message_id, conversation_id=conversation_id, processed_at=utcnow()))
            try:
                await session.commit()
            except IntegrityError:
                return False
        return True

    async def forget_processed(self, channel: str, message_id: str) -> None:
        """Remove a de-duplication record, so the same message id can be handled again."""
        async with self.session() as session:
            async with session.begin():
                await session.execute(
                    delete(ProcessedMessage).where(ProcessedMessage.channel == channel, ProcessedMessage.message_id == message_id)
                )

    # ----- conversations -----

    async def conversation(self, channel: str, sender_id: str, create: bool = True) -> Conversation | None:
        """Return the conversation of (channel, sender_id), creating it when ``create`` is true."""
        async with self.session() as session:
            found = await session.scalar(select(Conversation).where(Conversation.channel == channel, Conversation.sender_id == sender_id))
            if found is not None or not create:
                return found
            now = utcnow()
            row = Conversation(
                id=str(uuid.uuid4()), channel=channel, sender_id=sender_id, created_at=now, last_active_at=now, status="active", last_seq=0
            )
            session.add(row)
            try:
                await session.commit()
                return row
            except IntegrityError:
                await session.rollback()
        # Another worker created it at the same moment.
        return await self.conversation(channel, sender_id, create=False)

    async def conversation_by_id(self, conversation_id: str) -> Conversation | None:
        async with self.session() as session:
            return await session.get(Conversation, conversation_id)

    async def update_conversation(self, conversation_id: str, **values: Any) -> None:
        async with self.session() as session:
            await session.execute(update(Conversation).where(Conversation.id == conversation_id).values(**values))
            await session.commit()

    async def conversations(self, limit: int = 100) -> Sequence[Conversation]:
        async with self.session() as session:
            return (await session.scalars(select(Conversation).order_by(Conversation.last_active_at.desc()).limit(limit))).all()

    # ----- events -----

    async def append_events(self, conversation_id: str, events: Iterable[Event]) -> list[int]:
        """Persist events after the conversation's last one and return their sequence numbers."""
        events = list(events)
        if not events:
            return []
        async with self.session() as session:
            async with session.begin():
                last = await session.scalar(
                    select(func.coalesce(func.max(EventRow.seq), 0)).where(EventRow.conversation_id == conversation_id)
                )
                seqs = []
                for offset, item in enumerate(events, start=1):
                    seq = int(last) + offset
                    session.add(EventRow(conversation_id=conversation_id, seq=seq, type=item.kind, timestamp=item.timestamp, data=item.payload()))
                    seqs.append(seq)
                await session.execute(
                    update(Conversation)
                    .where(Conversation.id == conversation_id)
                    .values(last_seq=seqs[-1], last_active_at=utcnow())
                )
        return seqs

    async def session_events(self, conversation_id: str) -> list[StoredEvent]:
        """Return the events since the conversation's last session start or restart."""
        async with self.session() as session:
            start = await session.scalar(
                select(func.coalesce(func.max(EventRow.seq), 0)).where(
                    EventRow.conversation_id == conversation_id, EventRow.type.in_(SESSION_BOUNDARIES)
                )
            )
            return await self._events(session, conversation_id, since=max(int(start) - 1, 0))

    async def events(self, conversation_id: str, since: int = 0, types: Sequence[str] | None = None, limit: int | None = None) -> list[StoredEvent]:
        """Return events with a sequence number above ``since``, oldest first."""
        async with self.session() as session:
            return await self._events(session, conversation_id, since, types, limit)

    async def _events(self, session: AsyncSession, conversation_id: str, since: int, types: Sequence[str] | None = None, limit: int | None = None) -> list[StoredEvent]:
        query = select(EventRow).where(EventRow.conversation_id == conversation_id, EventRow.seq > since)
        if types:
            query = query.where(EventRow.type.in_(types))
        query = query.order_by(EventRow.seq)
        if limit:
            query = query.limit(limit)
        rows = (await session.scalars(query)).all()
        found = []
        for row in rows:
            try:
                found.append(StoredEvent(row.seq, event_from_record(row.type, row.data, aware(row.timestamp))))
            except (KeyError, TypeError) as exc:
                raise StorageError(f"event {row.seq} of conversation {conversation_id} has unknown type or fields ({exc})") from None
        return found

    async def latest_events(self, conversation_id: str, types: Sequence[str], limit: int) -> list[StoredEvent]:
        """Return the ``limit`` newest events of the given types, oldest first."""
        async with self.session() as session:
            query = (
                select(EventRow)
                .where(EventRow.conversation_id == conversation_id, EventRow.type.in_(types))
                .order_by(EventRow.seq.desc())
                .limit(limit)
            )
            rows = list(reversed((await session.scalars(query)).all()))
        return [StoredEvent(row.seq, event_from_record(row.type, row.data, aware(row.timestamp))) for row in rows]

    # ----- connector state -----

    async def get_state(self, key: str) -> str | None:
        async with self.session() as session:
            row = await session.get(ConnectorState, key)
            return row.value if row else None

    async def set_state(self, key: str, value: str) -> None:
        async with self.session() as session:
            async with session.begin():
                row = await session.get(ConnectorState, key)
                if row is None:
                    session.add(ConnectorState(key=key, value=value, updated_at=utcnow()))
                else:
                    row.value = value
                    row.updated_at = utcnow()


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
    except Exception:  # noqa: BLE001 - an in-memory database has no WAL; the defaults are fine there
        logger.debug("SQLite pragmas not applied", exc_info=True)
    finally:
        cursor.close()


__all__ = ["Store", "StoredEvent", "utcnow", "aware", "OperationalError"]
