"""The store fixture shared by the storage tests: SQLite always, PostgreSQL when ENTRAIDE_TEST_DATABASE_URL is set."""

from __future__ import annotations

import pytest

from bot.storage import Store


@pytest.fixture
async def store(database_url):
    store = Store(database_url)
    await store.start()
    yield store
    if not database_url.startswith("sqlite"):
        # The PostgreSQL database lives for the whole session: empty it for the next test.
        from sqlalchemy import text

        async with store.engine.begin() as connection:
            await connection.execute(
                text("TRUNCATE conversations, events, requests, request_transitions, relayed_events, connector_state, processed_messages")
            )
    await store.stop()
