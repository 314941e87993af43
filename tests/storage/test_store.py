"""The store on SQLite always, and on PostgreSQL when ENTRAIDE_TEST_DATABASE_URL is set."""

from __future__ import annotations

import asyncio

import pytest

from bot.data.domain import Button
from bot.dialogue.events import ActiveLoop, BotUttered, SessionStarted, SlotSet, UserUttered
from bot.errors import StorageError
from bot.handoff.requests import NewRequest, RequestBook, Status
from bot.storage import Store
from bot.storage import migrate


async def test_migrations_reach_head(store):
    assert await migrate.current_revision(store.engine) == "0002"


async def test_conversation_created_once(store):
    first = await store.conversation("web", "session-1")
    second = await store.conversation("web", "session-1")
    assert first.id == second.id


async def test_conversation_missing_without_create(store):
    assert await store.conversation("web", "nobody", create=False) is None


async def test_events_round_trip_in_order(store):
    conversation = await store.conversation("web", "s")
    events = [
        UserUttered(text="bonjour", intent="greet", confidence=0.9, entities=[{"entity": "profile", "value": "parent"}]),
        BotUttered(text="Bonjour !", buttons=[Button("Oui", "/affirm")], response="utter_greet"),
        SlotSet("profile", "parent"),
        ActiveLoop("handoff_form"),
    ]
    seqs = await store.append_events(conversation.id, events)
    loaded = await store.events(conversation.id)
    assert seqs == [1, 2, 3, 4]
    assert [item.seq for item in loaded] == [1, 2, 3, 4]
    assert loaded[1].event.buttons == [Button("Oui", "/affirm")]
    assert loaded[0].event.entities == [{"entity": "profile", "value": "parent"}]
    assert loaded[0].event.timestamp.tzinfo is not None


async def test_session_events_start_at_session_start(store):
    conversation = await store.conversation("web", "s")
    await store.append_events(conversation.id, [UserUttered(text="ancien"), SessionStarted(), SlotSet("profile", "parent"), UserUttered(text="nouveau")])
    session = await store.session_events(conversation.id)
    assert isinstance(session[0].event, SessionStarted)
    assert [item.seq for item in session] == [2, 3, 4]


async def test_concurrent_appends_keep_unique_seqs(store):
    conversation = await store.conversation("web", "s")
    other = await store.conversation("web", "t")
    for index in range(10):
        await asyncio.gather(store.append_events(conversation.id, [UserUttered(text=str(index))]), store.append_events(other.id, [UserUttered(text=str(index))]))
    texts = [item.event.text for item in await store.events(conversation.id)]
    assert texts == [str(index) for index in range(10)]


async def test_processed_message_deduplicates(store):
    assert await store.mark_processed("telegram", "42") is True
    assert await store.mark_processed("telegram", "42") is False
    assert await store.mark_processed("matrix", "42") is True


async def test_connector_state_updates(store):
    assert await store.get_state("matrix:since") is None
    await store.set_state("matrix:since", "s1")
    await store.set_state("matrix:since", "s2")
    assert await store.get_state("matrix:since") == "s2"


async def test_request_references_increase(store):
    conversation = await store.conversation("web", "s")
    book = RequestBook(store, "ENT")
    new = NewRequest(conversation.id, "web", 1, "triage", "technique", "mot de passe", "parent", "0751234A")
    first = await book.create(new)
    second = await book.create(new)
    year = first.created_at.year
    assert first.reference == f"ENT-{year}-00001"
    assert second.reference == f"ENT-{year}-00002"


async def test_concurrent_requests_get_distinct_references(store):
    conversations = [await store.conversation("web", f"s{index}") for index in range(20)]
    book = RequestBook(store, "ENT")

    created = await asyncio.gather(
        *(book.create(NewRequest(item.id, "web", 1, "triage", "technique", "mot de passe", None, None)) for item in conversations)
    )

    year = created[0].created_at.year
    assert sorted(request.reference for request in created) == [f"ENT-{year}-{number:05d}" for number in range(1, 21)]


async def test_two_workers_get_distinct_references(store, database_url):
    # A second Store on the same database is what another worker process holds.
    other = Store(database_url)
    await other.start()
    try:
        conversations = [await store.conversation("web", f"w{index}") for index in range(16)]
        books = [RequestBook(store, "ENT"), RequestBook(other, "ENT")]

        created = await asyncio.gather(
            *(
                books[index % 2].create(NewRequest(item.id, "web", 1, "triage", "technique", "", None, None))
                for index, item in enumerate(conversations)
            )
        )
    finally:
        await other.stop()

    references = [request.reference for request in created]
    assert len(set(references)) == 16
    year = created[0].created_at.year
    assert sorted(references) == [f"ENT-{year}-{number:05d}" for number in range(1, 17)]


async def test_request_transitions_are_audited(store):
    conversation = await store.conversation("web", "s")
    book = RequestBook(store)
    request = await book.create(NewRequest(conversation.id, "web", 1, "triage", "technique", "", None, None))
    request = await book.transition(request, Status.CLAIMED, actor="@expert:localhost")
    request = await book.transition(request, Status.RESOLVED, actor="@expert:localhost", note="réglé")
    history = await book.transitions(request)
    assert [item.to_status for item in history] == ["new", "claimed", "resolved"]
    assert request.claimed_at is not None
    assert request.resolved_at is not None
    assert history[-1].actor == "@expert:localhost"


async def test_request_illegal_transition_raises(store):
    conversation = await store.conversation("web", "s")
    book = RequestBook(store)
    request = await book.create(NewRequest(conversation.id, "web", 1, None, "triage", "", None, None))
    request = await book.transition(request, Status.CLOSED, actor="test")
    with pytest.raises(Exception, match="cannot go from closed"):
        await book.transition(request, Status.CLAIMED, actor="test")


async def test_request_marks_conversation_handoff(store):
    conversation = await store.conversation("web", "s")
    await RequestBook(store).create(NewRequest(conversation.id, "web", 1, None, "triage", "", None, None))
    refreshed = await store.conversation_by_id(conversation.id)
    assert refreshed.status == "handoff"


async def test_unreachable_database_raises_storage_error():
    store = Store("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    with pytest.raises(StorageError, match="cannot open the database"):
        await store.start()


async def test_store_used_before_start_raises():
    with pytest.raises(RuntimeError, match="call 'await store.start\\(\\)' first"):
        Store("sqlite+aiosqlite://").session()
