"""The store: conversations, their events, requests, connector state and de-duplication.

One ``Store`` per process. SQLite (the default, in WAL mode) or PostgreSQL through asyncpg, chosen by
the URL; the schema comes from the Alembic migrations.

The frequent operations (a turn's two steps, events, connector state, de-duplication) are plain
functions over a synchronous connection, run by ``Store.run`` in one transaction. On a SQLite file
they run on the event loop's thread, on a connection that never waits for a lock, because such a
transaction takes less time than a hop to another thread and back. When another connection holds
the write lock, the transaction is tried again after short pauses on the loop. If the lock stays,
it is handed whole to one dedicated thread, whose connection waits for the lock. Elsewhere (PostgreSQL, in-memory SQLite) the functions run on
the async engine through ``run_sync``. Less frequent work (requests, migrations) uses ORM sessions
from ``Store.session``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Sequence, TypeVar

import orjson
from sqlalchemy import Connection, Engine, create_engine, delete, event, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from bot.dialogue.events import Event
from bot.errors import StorageError
from bot.storage import migrate, turns
from bot.storage.tables import ConnectorState, Conversation, EventRow, ProcessedMessage
from bot.storage.turns import ConversationInfo, DuplicateMessage, StoredEvent, TurnStart, aware

logger = logging.getLogger(__name__)
T = TypeVar("T")
BUSY_TIMEOUT_MS = 30_000
READINESS_WAIT_MS = 2_000
# When the event loop's connection meets a lock, the transaction is tried again after each of these
# pauses, in seconds, before it goes to the database thread. The holder is most often a write of
# this process's ORM sessions, which needs the event loop to finish, so the loop must not block.
INLINE_RETRY_DELAYS = (0.001, 0.002, 0.004, 0.008, 0.016)
# SQLite's result codes for a lock held by another connection (SQLITE_BUSY, SQLITE_LOCKED), in the
# low byte of the extended code.
_SQLITE_LOCK_CODES = {5, 6}
# The connection of the event loop's thread does not checkpoint the WAL itself, because a
# checkpoint writes to the database file and syncs it. After this many write transactions, the
# database thread runs a passive checkpoint.
CHECKPOINT_EVERY = 500
_state = ConnectorState.__table__
_processed = ProcessedMessage.__table__
_conversations = Conversation.__table__
_events = EventRow.__table__


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def json_dumps(value: Any) -> str:
    """Serialize a JSON column's value, through orjson, which encodes event payloads several times faster than ``json``."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode("utf-8")
    except TypeError:
        # orjson rejects integers beyond 64 bits, which the json module writes.
        return json.dumps(value)


def json_loads(text: str | bytes) -> Any:
    """Parse a JSON column's value, accepting the NaN and Infinity that the json module may have written."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


class Store:
    """Async access to the database; call ``start`` before use and ``stop`` at the end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        # SQLite files only: the synchronous engine, the connection of the event loop's thread, the
        # one thread that takes transactions that must wait for a lock, and the pending checkpoint.
        self._sync_engine: Engine | None = None
        self._inline: Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._writes = 0
        self._checkpoint: Future | None = None

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
        options: dict[str, Any] = {"json_serializer": json_dumps, "json_deserializer": json_loads}
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
            if is_sqlite and self._engine.url.database not in (None, "", ":memory:"):
                self._open_thread()
            await self.ping()
        except (OSError, SQLAlchemyError) as exc:
            await self.stop()
            raise StorageError(f"cannot open the database {self._redacted()}: {exc}") from None
        logger.info("store opened (%s)", self._redacted())

    def _open_thread(self) -> None:
        url = make_url(self.url).set(drivername="sqlite+pysqlite")
        # Two connections: one held by the event loop's thread, and one that the pool lends to the
        # database thread for each transaction.
        self._sync_engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=2,
            max_overflow=0,
            json_serializer=json_dumps,
            json_deserializer=json_loads,
        )
        event.listen(self._sync_engine, "connect", _sqlite_pragmas)
        self._inline = self._sync_engine.connect()
        # Fail at once instead of blocking the event loop while another connection writes.
        self._inline.exec_driver_sql("PRAGMA busy_timeout=0")
        self._inline.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
        self._inline.commit()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="entraide-sqlite")

    async def stop(self) -> None:
        if self._thread is not None:
            thread, self._thread = self._thread, None
            # Let a transaction already handed to the thread finish before the connection closes.
            await asyncio.get_running_loop().run_in_executor(None, thread.shutdown, True)
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        if self._sync_engine is not None:
            self._sync_engine.dispose()
            self._sync_engine = None
        if self._engine is not None:
            await self._engine.dispose()
            logger.info("store closed")
        self._engine = None
        self._sessions = None

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(connection, *args)`` in one transaction and return its result.

        The transaction commits when the function returns and rolls back when it raises. On a
        SQLite file, ``function`` may run several times, because an attempt that meets another
        connection's lock rolls back and starts again, on the event loop's thread or on the
        database thread. It must therefore act only through the connection. A transaction on the loop's thread cannot be
        interrupted, and one handed to the database thread finishes even if the awaiting task is
        cancelled, so a client that goes away cannot leave the database locked.
        """
        if self._thread is None:
            async with self.engine.begin() as connection:
                return await connection.run_sync(function, *args)
        if self._inline is not None:
            for delay in (*INLINE_RETRY_DELAYS, None):
                try:
                    return self._run_inline(function, args)
                except _Locked:
                    if delay is None:
                        break
                    await asyncio.sleep(delay)
            logger.debug("database still locked by another connection, so %s runs on the database thread", function.__name__)
        return await self._in_thread(self._run_in_thread, function, args)

    def _run_inline(self, function: Callable[..., T], args: tuple) -> T:
        connection = self._inline
        try:
            with connection.begin():
                result = function(connection, *args)
                # pysqlite opens a transaction at the first write only, so this is False after reads alone.
                wrote = connection.connection.dbapi_connection.in_transaction
        except OperationalError as exc:
            if _is_lock_error(exc):
                raise _Locked from exc
            raise
        if wrote:
            self._writes += 1
            if self._writes >= CHECKPOINT_EVERY and self._checkpoint is None:
                self._writes = 0
                self._checkpoint = self._thread.submit(self._run_in_thread, _checkpoint, ())
                self._checkpoint.add_done_callback(self._checkpoint_done)
        return result

    def _checkpoint_done(self, future: Future) -> None:
        self._checkpoint = None
        if not future.cancelled() and future.exception() is not None:
            logger.warning("WAL checkpoint failed: %r", future.exception())

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        future = self._thread.submit(function, *args)
        return await asyncio.shield(asyncio.wrap_future(future))

    def _run_in_thread(self, function: Callable[..., T], args: tuple) -> T:
        with self._sync_engine.begin() as connection:
            return function(connection, *args)

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        if self._thread is not None:
            await self.run(_select_one)

    async def check_write(self) -> None:
        """Write and roll back in one transaction, and raise when the database rejects writes."""
        try:
            if self._thread is not None:
                # On the thread whose connection waits for a lock, because waiting is the check.
                await self._in_thread(self._run_in_thread, _write_probe, ())
            else:
                await self.run(_write_probe)
        except _ProbeDone:
            pass

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
        try:
            await self.run(_mark_processed, channel, message_id, conversation_id, utcnow())
        except IntegrityError:
            return False
        return True

    async def forget_processed(self, channel: str, message_id: str) -> None:
        """Remove a de-duplication record, so the same message id can be handled again."""
        await self.run(_forget_processed, channel, message_id)

    # ----- turns -----

    async def open_turn(
        self,
        channel: str,
        sender_id: str,
        message_id: str | None = None,
        known: tuple[str, int] | None = None,
        catch_up: bool = False,
    ) -> TurnStart:
        """Read what a turn needs (see ``bot.storage.turns.open_turn``), creating the conversation on first contact."""
        try:
            return await self.run(turns.open_turn, channel, sender_id, message_id, known, catch_up, utcnow())
        except IntegrityError:
            # Another worker created the conversation at the same moment, so it exists now.
            return await self.run(turns.open_turn, channel, sender_id, message_id, known, catch_up, utcnow())

    async def record_turn(
        self,
        conversation_id: str,
        events: Sequence[Event],
        processed: tuple[str, str] | None = None,
        values: dict[str, Any] | None = None,
        delivered: bool = False,
    ) -> list[int]:
        """Store a turn's events and conversation changes in one transaction, and return the sequence numbers."""
        return await self.run(turns.record_turn, conversation_id, list(events), processed, values or {}, delivered, utcnow())

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
        await self.run(_update_conversation, conversation_id, values)

    async def conversations(self, limit: int = 100) -> Sequence[Conversation]:
        async with self.session() as session:
            return (await session.scalars(select(Conversation).order_by(Conversation.last_active_at.desc()).limit(limit))).all()

    # ----- events -----

    async def append_events(self, conversation_id: str, events: Iterable[Event]) -> list[int]:
        """Persist events after the conversation's last one and return their sequence numbers."""
        events = list(events)
        if not events:
            return []
        return await self.record_turn(conversation_id, events)

    async def session_events(self, conversation_id: str) -> list[StoredEvent]:
        """Return the events since the conversation's last session start or restart."""
        return await self.run(turns.session_events, conversation_id)

    async def events(self, conversation_id: str, since: int = 0, types: Sequence[str] | None = None, limit: int | None = None) -> list[StoredEvent]:
        """Return events with a sequence number above ``since``, oldest first."""
        return await self.run(turns.read_events, conversation_id, since, types, limit)

    async def latest_events(self, conversation_id: str, types: Sequence[str], limit: int) -> list[StoredEvent]:
        """Return the ``limit`` newest events of the given types, oldest first."""
        return await self.run(_latest_events, conversation_id, tuple(types), limit)

    # ----- connector state -----

    async def get_state(self, key: str) -> str | None:
        return await self.run(_get_state, key)

    async def set_state(self, key: str, value: str) -> None:
        await self.run(_set_state, key, value, utcnow())


def _select_one(connection: Connection) -> None:
    connection.execute(text("SELECT 1"))


class _Locked(Exception):
    """Another connection holds a lock that the transaction on the event loop's thread needed."""


def _is_lock_error(exc: OperationalError) -> bool:
    code = getattr(exc.orig, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _SQLITE_LOCK_CODES
    return "locked" in str(exc.orig)


def _checkpoint(connection: Connection) -> None:
    connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")


class _ProbeDone(Exception):
    """Raised at the end of the write probe, so that its transaction rolls back."""


def _write_probe(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Readiness must respond quickly, so wait at most 2 s for the write lock, not the usual 30 s.
        connection.exec_driver_sql(f"PRAGMA busy_timeout={READINESS_WAIT_MS}")
    try:
        # An UPDATE that matches no row still needs the write lock, and leaves nothing behind.
        connection.execute(update(_state).where(_state.c.key == "\x00readiness").values(value=""))
    finally:
        if sqlite:
            connection.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    raise _ProbeDone


def _mark_processed(connection: Connection, channel: str, message_id: str, conversation_id: str | None, now: datetime) -> None:
    connection.execute(insert(_processed).values(channel=channel, message_id=message_id, conversation_id=conversation_id, processed_at=now))


def _forget_processed(connection: Connection, channel: str, message_id: str) -> None:
    connection.execute(delete(_processed).where(_processed.c.channel == channel, _processed.c.message_id == message_id))


def _latest_events(connection: Connection, conversation_id: str, types: tuple[str, ...], limit: int) -> list[StoredEvent]:
    query = (
        select(_events.c.seq, _events.c.type, _events.c.data, _events.c.timestamp)
        .where(_events.c.conversation_id == conversation_id, _events.c.type.in_(types))
        .order_by(_events.c.seq.desc())
        .limit(limit)
    )
    rows = list(connection.execute(query))
    return [turns.to_stored(conversation_id, *row) for row in reversed(rows)]


def _update_conversation(connection: Connection, conversation_id: str, values: dict[str, Any]) -> None:
    connection.execute(update(_conversations).where(_conversations.c.id == conversation_id).values(**values))


def _get_state(connection: Connection, key: str) -> str | None:
    return connection.execute(select(_state.c.value).where(_state.c.key == key)).scalar_one_or_none()


def _set_state(connection: Connection, key: str, value: str, now: datetime) -> None:
    changed = connection.execute(update(_state).where(_state.c.key == key).values(value=value, updated_at=now)).rowcount
    if not changed:
        connection.execute(insert(_state).values(key=key, value=value, updated_at=now))


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    except Exception:  # noqa: BLE001 - an in-memory database has no WAL; the defaults are fine there
        logger.debug("SQLite pragmas not applied", exc_info=True)
    finally:
        cursor.close()


__all__ = ["Store", "StoredEvent", "ConversationInfo", "DuplicateMessage", "TurnStart", "utcnow", "aware", "OperationalError"]
