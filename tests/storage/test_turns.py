"""A turn's two database steps, the database thread of SQLite files, and the write check of /readyz."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import threading
import time

import pytest
from sqlalchemy import insert, select, text

from bot.dialogue.events import BotUttered, ExpertUttered, SessionStarted, SlotSet, UserUttered
from bot.storage import Store, migrate
from bot.storage import store as store_module
from bot.storage.store import DuplicateMessage
from bot.storage.tables import ConnectorState, Conversation, EventRow


def turn(text: str) -> list:
    return [UserUttered(text=text, intent="greet"), BotUttered(text="Bonjour !", response="utter_greet")]


async def test_first_turn_creates_the_conversation(store):
    start = await store.open_turn("web", "session-1", message_id="m1")
    assert not start.duplicate
    assert start.conversation.last_seq == 0
    assert start.events == []
    seqs = await store.record_turn(start.conversation.id, turn("bonjour"), processed=("web", "m1"))
    assert seqs == [1, 2]
    again = await store.open_turn("web", "session-1")
    assert again.conversation.id == start.conversation.id
    assert again.conversation.last_seq == 2
    assert [item.seq for item in again.events] == [1, 2]


async def test_handled_message_id_is_a_duplicate(store):
    start = await store.open_turn("web", "session-1", message_id="m1")
    await store.record_turn(start.conversation.id, turn("bonjour"), processed=("web", "m1"))
    assert (await store.open_turn("web", "session-1", message_id="m1")).duplicate
    # The same id on another channel is another message.
    assert not (await store.open_turn("telegram", "session-1", message_id="m1")).duplicate


async def test_duplicate_at_record_time_stores_nothing(store):
    start = await store.open_turn("web", "session-1", message_id="m1")
    await store.record_turn(start.conversation.id, turn("bonjour"), processed=("web", "m1"))
    with pytest.raises(DuplicateMessage):
        await store.record_turn(start.conversation.id, turn("bonjour"), processed=("web", "m1"))
    assert [item.seq for item in await store.events(start.conversation.id)] == [1, 2]
    assert (await store.open_turn("web", "session-1")).conversation.last_seq == 2


async def test_known_events_are_not_read_again(store):
    start = await store.open_turn("web", "session-1")
    conversation_id = start.conversation.id
    await store.record_turn(conversation_id, turn("bonjour"))
    await store.append_events(conversation_id, [ExpertUttered(text="Je regarde.", label="Expert")])

    after = await store.open_turn("web", "session-1", known=(conversation_id, 2))
    assert not after.from_session_start
    assert [item.seq for item in after.events] == [3]

    up_to_date = await store.open_turn("web", "session-1", known=(conversation_id, 3))
    assert up_to_date.events == []

    # Another conversation's numbers, or numbers ahead of the store, mean a full read.
    for known in (("another-conversation", 2), (conversation_id, 9)):
        full = await store.open_turn("web", "session-1", known=known)
        assert full.from_session_start
        assert [item.seq for item in full.events] == [1, 2, 3]


async def test_full_read_starts_at_the_session(store):
    start = await store.open_turn("web", "session-1")
    await store.record_turn(start.conversation.id, turn("ancien") + [SessionStarted(), SlotSet("profile", "parent")])
    again = await store.open_turn("web", "session-1")
    assert [item.event.kind for item in again.events] == ["session_started", "slot"]


async def test_catch_up_owes_bot_and_expert_messages(store):
    start = await store.open_turn("rest", "client-1", catch_up=True)
    conversation_id = start.conversation.id
    await store.record_turn(conversation_id, turn("bonjour"), delivered=True)
    await store.append_events(conversation_id, [ExpertUttered(text="Voici la réponse.", label="Expert"), SlotSet("profile", "parent")])

    owing = await store.open_turn("rest", "client-1", known=(conversation_id, 2), catch_up=True)
    assert [(item.seq, item.event.kind) for item in owing.owed] == [(3, "expert")]
    await store.record_turn(conversation_id, turn("merci"), delivered=True)

    settled = await store.open_turn("rest", "client-1", known=(conversation_id, 6), catch_up=True)
    assert settled.owed == []
    # Without catch_up nothing is owed, whatever was delivered.
    await store.append_events(conversation_id, [ExpertUttered(text="Autre chose ?", label="Expert")])
    assert (await store.open_turn("rest", "client-1", catch_up=False)).owed == []


async def test_turn_changes_conversation_columns(store):
    start = await store.open_turn("web", "session-1")
    await store.record_turn(start.conversation.id, [SlotSet("profile", "parent")], values={"profile": "parent"})
    found = await store.conversation("web", "session-1", create=False)
    assert found.profile == "parent"
    assert found.last_seq == 1


async def test_concurrent_turns_of_two_conversations(store):
    first = (await store.open_turn("web", "a")).conversation.id
    second = (await store.open_turn("web", "b")).conversation.id
    await asyncio.gather(*(store.record_turn(conversation, turn(str(index))) for index in range(10) for conversation in (first, second)))
    for conversation in (first, second):
        assert [item.seq for item in await store.events(conversation)] == list(range(1, 21))


# ----- SQLite files: the database thread -----


@pytest.fixture
async def sqlite_store(tmp_path):
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'entraide.db'}")
    await store.start()
    yield store
    await store.stop()


def _write_done(connection, key: str) -> None:
    connection.execute(insert(ConnectorState.__table__).values(key=key, value="done", updated_at=_now()))


def _now():
    from bot.storage.store import utcnow

    return utcnow()


@contextlib.contextmanager
def write_lock(path):
    """Hold the database's write lock from another connection, as another process would."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield other
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()


async def test_transaction_runs_on_the_loop_thread(sqlite_store):
    threads = []

    def record_thread(connection):
        threads.append(threading.current_thread())
        _write_done(connection, "inline")

    await sqlite_store.run(record_thread)

    assert threads == [threading.current_thread()]
    assert await sqlite_store.get_state("inline") == "done"


async def test_locked_write_waits_on_the_database_thread(sqlite_store, tmp_path):
    start = await sqlite_store.open_turn("web", "waiting")
    with write_lock(tmp_path / "entraide.db"):
        pending = asyncio.ensure_future(sqlite_store.record_turn(start.conversation.id, turn("bonjour")))
        started = time.monotonic()
        await asyncio.sleep(0.3)
        # The event loop stays free, because no connection of the loop waits in SQLite's busy
        # handler. Reads go on, because WAL readers take no lock.
        assert time.monotonic() - started < 5
        assert not pending.done()
        assert (await sqlite_store.open_turn("web", "waiting")).conversation.last_seq == 0
    assert await pending == [1, 2]
    assert [item.seq for item in await sqlite_store.events(start.conversation.id)] == [1, 2]


async def test_turn_waits_for_an_orm_write(sqlite_store):
    from sqlalchemy import update

    start = await sqlite_store.open_turn("web", "behind-orm")
    await sqlite_store.set_state("orm", "before")
    async with sqlite_store.session() as session:
        # The ORM holds the write lock across awaits, and only the event loop can let it commit.
        await session.execute(update(ConnectorState).where(ConnectorState.key == "orm").values(value="after"))
        pending = asyncio.ensure_future(sqlite_store.record_turn(start.conversation.id, turn("bonjour")))
        await asyncio.sleep(0.005)
        assert not pending.done()
        await session.commit()
    assert await asyncio.wait_for(pending, 10) == [1, 2]
    assert await sqlite_store.get_state("orm") == "after"


async def test_cancelled_caller_does_not_stop_the_transaction(sqlite_store, tmp_path):
    with write_lock(tmp_path / "entraide.db"):
        task = asyncio.ensure_future(sqlite_store.set_state("cancelled-caller", "done"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # The write waited for the lock on the database thread, then committed.
    for _ in range(50):
        if await sqlite_store.get_state("cancelled-caller") == "done":
            break
        await asyncio.sleep(0.05)
    assert await sqlite_store.get_state("cancelled-caller") == "done"
    await sqlite_store.set_state("after", "ok")
    await sqlite_store.check_write()


async def test_direct_rows_equal_core_rows(sqlite_store, tmp_path):
    from bot.storage import turns as turns_module

    events = [UserUttered(text="élève", intent="greet", entities=[{"entity": "profile", "value": "eleve"}]), SlotSet("profile", "eleve")]
    direct = (await sqlite_store.open_turn("web", "direct")).conversation.id
    await sqlite_store.record_turn(direct, events, processed=("web", "m-1"), values={"profile": "eleve"})
    core = (await sqlite_store.open_turn("web", "core")).conversation.id

    def through_core(connection):
        rows = [
            {"conversation_id": core, "seq": seq, "type": item.kind, "timestamp": item.timestamp, "data": item.payload()}
            for seq, item in enumerate(events, start=1)
        ]
        connection.execute(turns_module._INSERT_EVENTS, rows)

    await sqlite_store.run(through_core)
    raw = sqlite3.connect(tmp_path / "entraide.db")
    try:
        stored = raw.execute("SELECT conversation_id, seq, type, timestamp, data FROM events ORDER BY conversation_id, seq").fetchall()
        created = raw.execute("SELECT created_at FROM conversations ORDER BY id").fetchall()
        processed = raw.execute("SELECT processed_at FROM processed_messages").fetchall()
    finally:
        raw.close()
    by_conversation = {conversation: [row[1:] for row in stored if row[0] == conversation] for conversation in (direct, core)}
    assert by_conversation[direct] == by_conversation[core]
    assert len(by_conversation[direct]) == 2
    # SQLAlchemy's format for SQLite datetimes, so Core and the ORM read them back.
    for (value,) in created + processed:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", value), value
    assert [item.event for item in await sqlite_store.events(direct)] == events


async def test_wal_checkpointed_on_the_database_thread(sqlite_store, tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "CHECKPOINT_EVERY", 10)
    wal = tmp_path / "entraide.db-wal"
    largest = 0
    for index in range(300):
        await sqlite_store.set_state(f"key-{index}", "x" * 500)
        largest = max(largest, wal.stat().st_size)
        # Give the thread's checkpoint a moment, as the idle moments of a server do.
        await asyncio.sleep(0.002)
    # Without checkpoints, the WAL would take every one of the 300 transactions' pages.
    assert largest < 300 * 4096
    assert await sqlite_store.get_state("key-299") == "x" * 500


async def test_write_check_fails_while_locked(sqlite_store, tmp_path):
    await sqlite_store.check_write()
    other = sqlite3.connect(tmp_path / "entraide.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(Exception, match="locked"):
            await sqlite_store.check_write()
        # It waits for the short readiness delay, not for the 30 s of a turn.
        assert time.monotonic() - started < 10
        # Reads still work, which is why a read alone cannot tell readiness.
        await sqlite_store.ping()
    finally:
        other.execute("ROLLBACK")
        other.close()
    await sqlite_store.check_write()


async def test_stop_waits_for_a_transaction_in_progress(sqlite_store, tmp_path):
    with write_lock(tmp_path / "entraide.db") as other:
        pending = asyncio.ensure_future(sqlite_store.set_state("before-stop", "done"))
        await asyncio.sleep(0.1)
        asyncio.get_running_loop().call_later(0.3, other.execute, "ROLLBACK")
        await sqlite_store.stop()
    await pending
    reopened = Store(f"sqlite+aiosqlite:///{tmp_path / 'entraide.db'}")
    await reopened.start()
    try:
        assert await reopened.get_state("before-stop") == "done"
    finally:
        await reopened.stop()
    # The fixture stops the store again, which does nothing the second time.


async def test_migration_moves_rest_delivery_marks(tmp_path):
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    await store.start(migrate_schema=False)
    try:
        await migrate.upgrade(store.engine, "0001")
        now = _now()
        async with store.engine.begin() as connection:
            # Plain SQL: the mapped table already has the column that this revision lacks.
            for conversation_id, channel, last_seq in (("c-rest", "rest", 9), ("c-web", "web", 7)):
                await connection.execute(
                    text(
                        "INSERT INTO conversations (id, channel, sender_id, created_at, last_active_at, status, last_seq)"
                        " VALUES (:id, :channel, :id, :now, :now, 'active', :last_seq)"
                    ),
                    {"id": conversation_id, "channel": channel, "now": now, "last_seq": last_seq},
                )
            await connection.execute(insert(ConnectorState.__table__).values(key="rest:delivered:c-rest", value="4", updated_at=now))
            await connection.execute(insert(ConnectorState.__table__).values(key="web:session:x", value="", updated_at=now))
        await migrate.upgrade(store.engine)
        async with store.engine.connect() as connection:
            delivered = dict((await connection.execute(select(Conversation.id, Conversation.delivered_seq))).all())
            keys = (await connection.execute(select(ConnectorState.key))).scalars().all()
        assert delivered == {"c-rest": 4, "c-web": 7}
        assert keys == ["web:session:x"]
    finally:
        await store.stop()


async def test_in_memory_sqlite_runs_on_the_async_engine():
    store = Store("sqlite+aiosqlite://")
    await store.start()
    try:
        start = await store.open_turn("web", "memory")
        assert await store.record_turn(start.conversation.id, turn("bonjour")) == [1, 2]
        async with store.engine.connect() as connection:
            assert (await connection.execute(select(EventRow.seq).order_by(EventRow.seq))).scalars().all() == [1, 2]
            await connection.execute(text("SELECT 1"))
    finally:
        await store.stop()


def test_json_columns_round_trip():
    from bot.storage.store import json_dumps, json_loads

    value = {"text": "élève", "confidence": 0.25, 1: "key", "huge": 2**70, "list": (1, 2)}

    assert json_loads(json_dumps(value)) == {"text": "élève", "confidence": 0.25, "1": "key", "huge": 2**70, "list": [1, 2]}
    # Rows written by the json module before may hold NaN, which strict JSON parsers reject.
    assert json_loads('{"confidence": NaN}')["confidence"] != json_loads('{"confidence": NaN}')["confidence"]
