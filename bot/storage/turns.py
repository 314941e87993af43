"""The two database steps of a turn, each run as one transaction by ``Store.run``.

``open_turn`` reads what the turn needs: whether the message was already handled, the conversation
(created on first contact) and the events the caller does not hold yet. ``record_turn`` writes what
the turn produced: the de-duplication mark, the events and the conversation's new counters. The
functions take a synchronous SQLAlchemy ``Connection`` and use Core statements only, so that a turn
costs two transactions and no ORM bookkeeping. On a SQLite file (the pysqlite driver), the
statements that every turn runs go straight to the DB-API cursor (see ``_Direct``).
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator, Sequence

from sqlalchemy import Connection, Dialect, bindparam, func, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from bot.dialogue.events import Event, event_from_record
from bot.errors import StorageError
from bot.storage.tables import Conversation, EventRow, ProcessedMessage

SESSION_BOUNDARIES = ("session_started", "restart")
# Event types a user sees but did not write: what a channel without push still owes them.
OWED_TYPES = ("bot", "expert")

_conversations = Conversation.__table__
_events = EventRow.__table__
_processed = ProcessedMessage.__table__


# Statements built once: building and hashing a statement costs more than running it on SQLite.
_SEEN = select(_processed.c.channel).where(_processed.c.channel == bindparam("channel"), _processed.c.message_id == bindparam("message_id"))
_INSERT_PROCESSED = insert(_processed)
_INSERT_CONVERSATION = insert(_conversations)
_INSERT_EVENTS = insert(_events)
_EVENT_COLUMNS = (_events.c.seq, _events.c.type, _events.c.data, _events.c.timestamp)
_EVENTS_SINCE = (
    select(*_EVENT_COLUMNS)
    .where(_events.c.conversation_id == bindparam("conversation_id"), _events.c.seq > bindparam("since"))
    .order_by(_events.c.seq)
)
_EVENTS_SINCE_OF_TYPES = _EVENTS_SINCE.where(_events.c.type.in_(bindparam("types", expanding=True)))
_SESSION_START = select(func.coalesce(func.max(_events.c.seq), 0)).where(
    _events.c.conversation_id == bindparam("conversation_id"), _events.c.type.in_(SESSION_BOUNDARIES)
)
_INFO_COLUMNS = (
    _conversations.c.id,
    _conversations.c.channel,
    _conversations.c.sender_id,
    _conversations.c.status,
    _conversations.c.last_seq,
    _conversations.c.delivered_seq,
    _conversations.c.request_id,
    _conversations.c.profile,
    _conversations.c.school,
)
_FIND = select(*_INFO_COLUMNS).where(_conversations.c.channel == bindparam("channel"), _conversations.c.sender_id == bindparam("sender_id"))
_ADVANCE: dict[tuple[tuple[str, ...], bool], Any] = {}
_EVENT_KEYS = ["conversation_id", "seq", "type", "timestamp", "data"]
_PROCESSED_KEYS = ["channel", "message_id", "conversation_id", "processed_at"]
_CONVERSATION_KEYS = ["id", "channel", "sender_id", "created_at", "last_active_at", "status", "last_seq", "delivered_seq"]


class _Direct:
    """A Core statement compiled once for pysqlite and run on the DB-API cursor of the connection.

    For the small statements of a turn, SQLAlchemy's work at each execution (cache lookup,
    parameter and result set-up) costs more than SQLite's. The columns' own bind processors still
    convert the values, so the rows are the same as through Core, and driver errors are wrapped
    in SQLAlchemy's exceptions as Core would.
    """

    def __init__(self, statement, dialect: Dialect, keys: list[str] | None = None) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=keys)
        self.sql = compiled.string
        self.binds = [
            (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)) for name in compiled.positiontup
        ]

    def parameters(self, values: dict[str, Any]) -> tuple:
        return tuple(values[name] if process is None else process(values[name]) for name, process in self.binds)

    def rows(self, connection: Connection, values: dict[str, Any]) -> list[tuple]:
        """Run the statement once and return all its rows."""
        with self._cursor(connection) as cursor:
            cursor.execute(self.sql, self.parameters(values))
            return cursor.fetchall()

    def run_many(self, connection: Connection, values: list[dict[str, Any]]) -> None:
        """Run the statement once per item of ``values``."""
        with self._cursor(connection) as cursor:
            cursor.executemany(self.sql, [self.parameters(item) for item in values])

    @contextmanager
    def _cursor(self, connection: Connection) -> Iterator[Any]:
        """Yield a DB-API cursor of ``connection``, raising driver errors as SQLAlchemy's exceptions."""
        cursor = connection.connection.dbapi_connection.cursor()
        error = connection.dialect.loaded_dbapi.Error
        try:
            yield cursor
        except error as exc:
            raise DBAPIError.instance(self.sql, None, exc, error, dialect=connection.dialect) from exc
        finally:
            cursor.close()


# Compiled statements by (statement name, dialect), filled on first use.
_DIRECT: dict[tuple[Any, int], _Direct] = {}


def _direct(connection: Connection, name: Any, statement, keys: list[str] | None = None) -> _Direct | None:
    """Return ``statement`` compiled for direct execution, or None where Core runs it (other drivers)."""
    dialect = connection.dialect
    if dialect.driver != "pysqlite":
        return None
    key = (name, id(dialect))
    direct = _DIRECT.get(key)
    if direct is None:
        direct = _DIRECT[key] = _Direct(statement, dialect, keys)
    return direct


def _execute(connection: Connection, name: Any, statement, values: dict[str, Any], keys: list[str] | None = None) -> list[tuple]:
    """Run one statement and return its rows, directly on pysqlite and through Core elsewhere."""
    direct = _direct(connection, name, statement, keys)
    if direct is not None:
        return direct.rows(connection, values)
    result = connection.execute(statement, values)
    return list(result) if result.returns_rows else []


def _advance_statement(columns: tuple[str, ...], delivered: bool):
    """Return the UPDATE that moves ``last_seq`` forward by ``:count`` and sets ``columns``, built once per shape."""
    key = (columns, delivered)
    statement = _ADVANCE.get(key)
    if statement is None:
        moved = _conversations.c.last_seq + bindparam("count")
        values: dict[str, Any] = {name: bindparam(f"new_{name}") for name in columns}
        values.update(last_seq=moved, last_active_at=bindparam("now"))
        if delivered:
            values["delivered_seq"] = moved
        statement = (
            update(_conversations)
            .where(_conversations.c.id == bindparam("conversation_id"))
            .values(**values)
            .returning(_conversations.c.last_seq)
        )
        _ADVANCE[key] = statement
    return statement


class DuplicateMessage(Exception):
    """The channel message id was recorded by another turn first."""


@dataclass
class ConversationInfo:
    """The columns of a conversation that a turn uses."""

    id: str
    channel: str
    sender_id: str
    status: str
    last_seq: int
    delivered_seq: int
    request_id: int | None
    profile: str | None
    school: str | None


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    event: Event


@dataclass
class TurnStart:
    """The result of ``open_turn``, with ``conversation`` None for a duplicate message."""

    conversation: ConversationInfo | None
    # Events after the seq the caller already holds, or the whole current session when it held none.
    events: list[StoredEvent] = field(default_factory=list)
    # With ``catch_up``: bot and expert messages after ``delivered_seq``.
    owed: list[StoredEvent] = field(default_factory=list)
    # True when ``events`` starts at the session's beginning, not after the seq the caller holds.
    from_session_start: bool = True

    @property
    def duplicate(self) -> bool:
        return self.conversation is None


def open_turn(
    connection: Connection,
    channel: str,
    sender_id: str,
    message_id: str | None,
    known: tuple[str, int] | None,
    catch_up: bool,
    now: datetime,
) -> TurnStart:
    """Return the turn's conversation and the events the caller lacks.

    ``known`` is the conversation id and the last sequence number that the caller already holds.
    """
    if message_id is not None:
        if _execute(connection, "seen", _SEEN, {"channel": channel, "message_id": message_id}):
            return TurnStart(conversation=None)
    conversation = find_conversation(connection, channel, sender_id)
    if conversation is None:
        conversation = _create_conversation(connection, channel, sender_id, now)
    start = TurnStart(conversation=conversation)
    if conversation.last_seq == 0:
        return start
    if known is not None and known[0] == conversation.id and 0 < known[1] <= conversation.last_seq:
        start.from_session_start = False
        if known[1] < conversation.last_seq:
            start.events = read_events(connection, conversation.id, since=known[1])
    else:
        start.events = session_events(connection, conversation.id)
    if catch_up and conversation.delivered_seq < conversation.last_seq:
        start.owed = read_events(connection, conversation.id, since=conversation.delivered_seq, types=OWED_TYPES)
    return start


def record_turn(
    connection: Connection,
    conversation_id: str,
    events: Sequence[Event],
    processed: tuple[str, str] | None,
    values: dict[str, Any],
    delivered: bool,
    now: datetime,
) -> list[int]:
    """Store the turn and return the events' sequence numbers.

    The conversation's ``last_seq`` moves forward in the same statement that reads it, so two
    writers can never hand out the same numbers. Raises DuplicateMessage when ``processed`` is
    already recorded, and the transaction then stores nothing.
    """
    if processed is not None:
        channel, message_id = processed
        try:
            # No savepoint: the caller's transaction rolls back as a whole on this error.
            mark = {"channel": channel, "message_id": message_id, "conversation_id": conversation_id, "processed_at": now}
            _execute(connection, "insert_processed", _INSERT_PROCESSED, mark, _PROCESSED_KEYS)
        except IntegrityError:
            raise DuplicateMessage(f"{channel} message {message_id}") from None
    count = len(events)
    columns = tuple(sorted(values))
    parameters = {f"new_{name}": values[name] for name in columns}
    parameters.update(conversation_id=conversation_id, count=count, now=now)
    returned = _execute(connection, ("advance", columns, delivered), _advance_statement(columns, delivered), parameters)
    if not returned:
        raise StorageError(f"conversation {conversation_id} not found")
    last = returned[0][0]
    seqs = list(range(last - count + 1, last + 1))
    if events:
        rows = [
            {"conversation_id": conversation_id, "seq": seq, "type": item.kind, "timestamp": item.timestamp, "data": item.payload()}
            for seq, item in zip(seqs, events)
        ]
        direct = _direct(connection, "insert_events", _INSERT_EVENTS, _EVENT_KEYS)
        if direct is not None:
            direct.run_many(connection, rows)
        else:
            connection.execute(_INSERT_EVENTS, rows)
    return seqs


def find_conversation(connection: Connection, channel: str, sender_id: str) -> ConversationInfo | None:
    rows = _execute(connection, "find", _FIND, {"channel": channel, "sender_id": sender_id})
    return ConversationInfo(*rows[0]) if rows else None


def _create_conversation(connection: Connection, channel: str, sender_id: str, now: datetime) -> ConversationInfo:
    info = ConversationInfo(
        id=str(uuid.uuid4()), channel=channel, sender_id=sender_id, status="active", last_seq=0, delivered_seq=0,
        request_id=None, profile=None, school=None,
    )
    values = {
        "id": info.id, "channel": channel, "sender_id": sender_id, "created_at": now, "last_active_at": now,
        "status": "active", "last_seq": 0, "delivered_seq": 0,
    }
    _execute(connection, "insert_conversation", _INSERT_CONVERSATION, values, _CONVERSATION_KEYS)
    return info


def session_events(connection: Connection, conversation_id: str) -> list[StoredEvent]:
    """Return the events from the conversation's last session start or restart on."""
    start = connection.execute(_SESSION_START, {"conversation_id": conversation_id}).scalar_one()
    return read_events(connection, conversation_id, since=max(int(start) - 1, 0))


def read_events(
    connection: Connection, conversation_id: str, since: int, types: Sequence[str] | None = None, limit: int | None = None
) -> list[StoredEvent]:
    """Return events with a sequence number above ``since``, oldest first."""
    parameters: dict[str, Any] = {"conversation_id": conversation_id, "since": since}
    query = _EVENTS_SINCE
    if types:
        query = _EVENTS_SINCE_OF_TYPES
        parameters["types"] = list(types)
    if limit:
        query = query.limit(limit)
    return [to_stored(conversation_id, *row) for row in connection.execute(query, parameters)]


def aware(value: datetime | None) -> datetime | None:
    """Return ``value`` with UTC attached, because SQLite returns naive datetimes and every stored time is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def to_stored(conversation_id: str, seq: int, kind: str, data: dict[str, Any], timestamp: datetime) -> StoredEvent:
    try:
        return StoredEvent(seq, event_from_record(kind, data, aware(timestamp)))
    except (KeyError, TypeError) as exc:
        raise StorageError(f"event {seq} of conversation {conversation_id} has unknown type or fields ({exc})") from None

